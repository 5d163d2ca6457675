//! Homestead as a deployment of several instances on one PostgreSQL database and one bucket, behind nginx.
//!
//! - `smoke_of_a_running_cluster` checks a cluster that `scripts/cluster smoke` started (its URLs come in
//!   `CLUSTER_INSTANCES` and `CLUSTER_BALANCER`): one sign-up, one write through one instance read back
//!   through every other and through nginx.
//! - `instances_agree_on_the_s3_test_server` runs the consistency checks below on the S3 test server.
//! - The other tests start their own three-node Garage cluster ([`GarageCluster`], `TEST_GARAGE_BIN`):
//!   consistency across instances (writes, sessions, signup tokens, AuthToken replays) and the blob
//!   store's fault tolerance (one node down: nothing fails; two down: 503 with a reason within seconds;
//!   two frozen: 503 within the S3 client's 30 s request timeout; back by itself). `scripts/cluster test` runs them (they are ignored otherwise, and fail with a message that
//!   says so when run without Garage).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use homestead_integration_tests::{
    Account, Blobs, GarageCluster, Metadata, TestNet, TestServer, TestServerBuilder, eventually,
    refusal, start_balancer,
};
use pubky::{AuthToken, Capabilities, Capability, Keypair};

/// `GET <base>/pub/<path>` of `user`'s file: status and body.
async fn read(client: &reqwest::Client, base: &str, user: &str, path: &str) -> (u16, String) {
    let response = client
        .get(format!("{base}{path}"))
        .header("pubky-host", user)
        .send()
        .await
        .expect("GET request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("GET body"))
}

/// `method <base><path>` with `account`'s session: status and body.
async fn write(
    client: &reqwest::Client,
    method: reqwest::Method,
    base: &str,
    account: &Account,
    path: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let response = client
        .request(method, format!("{base}{path}"))
        .header("pubky-host", &account.z32)
        .header("cookie", &account.cookie)
        .body(body)
        .send()
        .await
        .expect("write request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("write body"))
}

fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run this test with `scripts/cluster smoke`"))
        .split(',')
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a running cluster: scripts/cluster smoke"]
async fn smoke_of_a_running_cluster() {
    let instances = env_list("CLUSTER_INSTANCES");
    let balancer = env_list("CLUSTER_BALANCER").remove(0);
    assert!(instances.len() >= 2, "a cluster of one: {instances:?}");
    let client = reqwest::Client::new();
    let account = Account::signup_at(&instances[0]).await;
    let body = b"written through the first instance".to_vec();
    let put = write(
        &client,
        reqwest::Method::PUT,
        &instances[0],
        &account,
        "/pub/smoke.txt",
        body.clone(),
    )
    .await;
    assert_eq!(put.0, 201, "{}", put.1);
    for base in instances.iter().skip(1).chain([&balancer]) {
        let got = read(&client, base, &account.z32, "/pub/smoke.txt").await;
        assert_eq!(
            got,
            (200, String::from_utf8(body.clone()).unwrap()),
            "{base}"
        );
    }
    // And the other way round: written through nginx, read through each instance.
    let put = write(
        &client,
        reqwest::Method::PUT,
        &balancer,
        &account,
        "/pub/through-nginx.txt",
        b"via nginx".to_vec(),
    )
    .await;
    assert_eq!(put.0, 201, "{}", put.1);
    for base in &instances {
        let got = read(&client, base, &account.z32, "/pub/through-nginx.txt").await;
        assert_eq!(got, (200, "via nginx".to_string()), "{base}");
    }
}

/// A server that requires signup tokens: another instance of `first`, or the first one, on PostgreSQL
/// and the Garage cluster's bucket (a fresh bucket on the S3 test server without one).
fn instance(
    net: &TestNet,
    garage: Option<&GarageCluster>,
    first: Option<&TestServer>,
) -> TestServerBuilder {
    let builder = net.server().token_required();
    match (first, garage) {
        (Some(first), _) => builder.sharing(first),
        (None, Some(garage)) => builder.metadata(Metadata::Postgres).bucket(garage.bucket()),
        (None, None) => builder.metadata(Metadata::Postgres).blobs(Blobs::S3),
    }
}

/// A root AuthToken of `keypair`.
fn root_token(keypair: &Keypair) -> Vec<u8> {
    AuthToken::sign(
        keypair,
        Capabilities::builder().cap(Capability::root()).finish(),
    )
    .serialize()
}

/// `POST <base>/session` with `token`: status, body and the session cookie (`name=secret`) if any.
async fn sign_in(client: &reqwest::Client, base: &str, token: Vec<u8>) -> (u16, String, String) {
    let response = client
        .post(format!("{base}/session"))
        .body(token)
        .send()
        .await
        .expect("session request");
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_string();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap(), cookie)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Garage: scripts/cluster test"]
async fn instances_agree_on_garage() {
    let garage = GarageCluster::start().await;
    instances_agree(Some(&garage)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_agree_on_the_s3_test_server() {
    instances_agree(None).await;
}

/// Four instances on one database and bucket (on `garage`, or the S3 test server), three of them
/// behind nginx: writes, deletes, sessions, signup tokens and AuthToken replays agree across them.
async fn instances_agree(garage: Option<&GarageCluster>) {
    let net = TestNet::new();
    let uncached = "entry_cache_ms = 0";
    let first = instance(&net, garage, None)
        .storage_config(uncached)
        .start()
        .await;
    let second = instance(&net, garage, Some(&first))
        .storage_config(uncached)
        .start()
        .await;
    let third = instance(&net, garage, Some(&first))
        .storage_config(uncached)
        .start()
        .await;
    // The default metadata cache (1,000 ms): writes elsewhere show within that bound.
    let cached = instance(&net, garage, Some(&first)).start().await;
    let nginx_dir = tempfile::tempdir().unwrap();
    let addrs = [first.icann_addr(), second.icann_addr(), third.icann_addr()];
    let (_nginx, balancer) = start_balancer(nginx_dir.path(), &addrs).await;
    let instances = [first.icann_url(), second.icann_url(), third.icann_url()];
    let client = reqwest::Client::new();

    // A signup token minted on the first instance signs up through the second (with the SDK), and is
    // used up on the third.
    net.wait_until_resolvable(&second).await;
    net.wait_until_resolvable(&third).await;
    let token = first.signup_token().await;
    let keypair = Keypair::random();
    net.pubky()
        .signer(keypair.clone())
        .signup(&second.public_key(), Some(&token))
        .await
        .expect("sign up on the second instance with the first one's token");
    let other = net.pubky().signer(Keypair::random());
    let err = other.signup(&third.public_key(), Some(&token)).await;
    assert_eq!(refusal(err), (401, "Token already used".to_string()));

    // An AuthToken used on one instance is a replay on every other; the session it made is good on all.
    let signed = root_token(&keypair);
    let (status, body, cookie) = sign_in(&client, &instances[0], signed.clone()).await;
    assert_eq!(status, 200, "{body}");
    for base in instances.iter().skip(1).chain([&balancer]) {
        let (status, body, _) = sign_in(&client, base, signed.clone()).await;
        assert_eq!(
            (status, body.as_str()),
            (400, "AuthToken already used"),
            "{base}"
        );
    }
    let account = Account {
        z32: keypair.public_key().z32(),
        keypair,
        cookie,
    };

    // With entry_cache_ms = 0, a write through any instance (or nginx) reads back through every other
    // at once: the same path overwritten each time, so that an earlier version was read (and could
    // have been cached) everywhere.
    let writers: Vec<&String> = instances.iter().chain([&balancer]).collect();
    for (round, base) in writers.iter().enumerate() {
        let body = format!("version {round}, written through {base}");
        let put = write(
            &client,
            reqwest::Method::PUT,
            base,
            &account,
            "/pub/agree.txt",
            body.clone().into_bytes(),
        )
        .await;
        assert_eq!(put.0, 201, "{}", put.1);
        for reader in &writers {
            let got = read(&client, reader, &account.z32, "/pub/agree.txt").await;
            assert_eq!(
                got,
                (200, body.clone()),
                "round {round}, read through {reader}"
            );
        }
    }
    let deleted = write(
        &client,
        reqwest::Method::DELETE,
        &instances[2],
        &account,
        "/pub/agree.txt",
        vec![],
    )
    .await;
    assert_eq!(deleted.0, 204, "{}", deleted.1);
    for reader in &writers {
        let got = read(&client, reader, &account.z32, "/pub/agree.txt").await;
        assert_eq!(got.0, 404, "deleted, read through {reader}");
    }

    // With the default entry_cache_ms (1,000 ms), an instance that has the old version cached shows the
    // new one within that bound (the LISTEN wake-up usually makes it milliseconds).
    let cached_url = cached.icann_url();
    for version in ["one", "two", "three"] {
        let put = write(
            &client,
            reqwest::Method::PUT,
            &instances[0],
            &account,
            "/pub/bounded.txt",
            version.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(put.0, 201, "{}", put.1);
        let written = Instant::now();
        loop {
            let got = read(&client, &cached_url, &account.z32, "/pub/bounded.txt").await;
            if got == (200, version.to_string()) {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_millis(1500),
                "the cached instance still answers {got:?} {:?} after the write of {version}",
                written.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for server in [cached, third, second, first] {
        let log = server.log();
        assert!(server.stop().await.success(), "{log}");
    }
}

/// One request of the fault load: which file, status, time to answer, body.
#[derive(Debug, Clone)]
struct Outcome {
    index: usize,
    write: bool,
    status: u16,
    took: Duration,
    body: String,
}

fn contents(index: usize) -> String {
    format!("file {index} of the Garage fault test\n")
}

/// Writes `/pub/fault/<i>` through the instances in turn and reads each acknowledged file back through
/// the next instance, until told to stop.
fn spawn_load(
    instances: Vec<String>,
    account: Account,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Outcome>>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let out = log.clone();
    let task = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut index = 0;
        while !stop.load(Ordering::Relaxed) {
            let base = &instances[index % instances.len()];
            let started = Instant::now();
            let path = format!("/pub/fault/{index}");
            let (status, body) = write(
                &client,
                reqwest::Method::PUT,
                base,
                &account,
                &path,
                contents(index).into_bytes(),
            )
            .await;
            let took = started.elapsed();
            out.lock().unwrap().push(Outcome {
                index,
                write: true,
                status,
                took,
                body,
            });
            if status == 201 {
                let reader = &instances[(index + 1) % instances.len()];
                let started = Instant::now();
                let (status, body) = read(&client, reader, &account.z32, &path).await;
                out.lock().unwrap().push(Outcome {
                    index,
                    write: false,
                    status,
                    took: started.elapsed(),
                    body,
                });
            }
            index += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (log, task)
}

/// Waits until the load has logged `count` more writes with status `status` after `after` outcomes;
/// returns the number of outcomes logged then.
async fn until_writes(log: &Mutex<Vec<Outcome>>, after: usize, status: u16, count: usize) -> usize {
    let started = Instant::now();
    loop {
        let seen = log.lock().unwrap().len();
        let matching = log.lock().unwrap()[after..]
            .iter()
            .filter(|o| o.write && o.status == status)
            .count();
        if matching >= count {
            return seen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not {count} writes with {status} within 90 s: {:?}",
            &log.lock().unwrap()[after..]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Garage: scripts/cluster test"]
async fn blob_store_outlives_one_garage_node_and_refuses_below_quorum() {
    let mut garage = GarageCluster::start().await;
    let net = TestNet::new();
    let first = net
        .server()
        .metadata(Metadata::Postgres)
        .bucket(garage.bucket())
        .storage_config("entry_cache_ms = 0")
        .start()
        .await;
    let second = net
        .server()
        .sharing(&first)
        .storage_config("entry_cache_ms = 0")
        .start()
        .await;
    let account = Account::signup(&first).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (log, load) = spawn_load(
        vec![first.icann_url(), second.icann_url()],
        account.clone(),
        stop.clone(),
    );
    let healthy = until_writes(&log, 0, 201, 10).await;

    // One node of three down (not the one the instances talk to): quorum 2 holds, nothing fails.
    garage.stop_node(2);
    let one_down = until_writes(&log, healthy, 201, 20).await;
    let phase: Vec<Outcome> = log.lock().unwrap()[healthy..one_down].to_vec();
    for outcome in &phase {
        assert_eq!(
            outcome.status,
            200 + u16::from(outcome.write),
            "one node down: {outcome:?}"
        );
    }

    // Two down: below the write quorum; writes are refused with a 503 and a reason, quickly.
    garage.stop_node(1);
    let stopped = Instant::now();
    let two_down = until_writes(&log, one_down, 503, 5).await;
    let refusal_delay = stopped.elapsed();
    garage.start_node(1);
    garage.start_node(2);
    let back = until_writes(&log, two_down, 201, 10).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let outcomes = log.lock().unwrap().clone();
    eprintln!(
        "one node down: {} requests; two down: first 5 refusals {refusal_delay:?} after the stop; back after {} more",
        one_down - healthy,
        back - two_down
    );

    // Every answer was a success or a 503 with a one-line reason, none hung.
    let mut refusals: Vec<Duration> = Vec::new();
    for outcome in &outcomes {
        let refused = outcome.status == 503
            && outcome.body.starts_with("Storage unavailable")
            && !outcome.body.contains('\n');
        assert!(
            outcome.status == 201 || outcome.status == 200 || refused,
            "{outcome:?}"
        );
        if refused && outcome.write {
            refusals.push(outcome.took);
        }
        assert!(
            outcome.took < Duration::from_secs(15),
            "a request hung: {outcome:?}"
        );
    }
    refusals.sort();
    let median = refusals[refusals.len() / 2];
    eprintln!(
        "{} writes refused below quorum: median {median:?}, max {:?}",
        refusals.len(),
        refusals.last().unwrap()
    );
    assert!(
        median < Duration::from_secs(5),
        "refusals are slow: median {median:?}"
    );

    // Nothing acknowledged was lost: every 201 reads back, through both instances.
    let client = reqwest::Client::new();
    for outcome in outcomes.iter().filter(|o| o.write && o.status == 201) {
        for base in [first.icann_url(), second.icann_url()] {
            let got = read(
                &client,
                &base,
                &account.z32,
                &format!("/pub/fault/{}", outcome.index),
            )
            .await;
            assert_eq!(
                got,
                (200, contents(outcome.index)),
                "{outcome:?} through {base}"
            );
        }
    }
    for server in [second, first] {
        let log = server.log();
        assert!(server.stop().await.success(), "{log}");
    }
}

/// `PUT` of a small file through `base`: status, body and how long the answer took.
async fn timed_put(base: &str, account: &Account, path: &str) -> (u16, String, Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let started = Instant::now();
    let (status, body) = write(
        &client,
        reqwest::Method::PUT,
        base,
        account,
        path,
        b"x".to_vec(),
    )
    .await;
    (status, body, started.elapsed())
}

/// Two nodes of three frozen (`SIGSTOP`: connections open, no answers): a write is refused with a 503
/// and its reason within the S3 client's request timeout, and the next write after the thaw succeeds.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Garage: scripts/cluster test"]
async fn writes_while_two_garage_nodes_hang() {
    let garage = GarageCluster::start().await;
    let net = TestNet::new();
    let server = net
        .server()
        .metadata(Metadata::Postgres)
        .bucket(garage.bucket())
        .start()
        .await;
    let account = Account::signup(&server).await;
    let before = timed_put(&server.icann_url(), &account, "/pub/hang/0").await;
    assert_eq!(before.0, 201, "{before:?}");
    garage.freeze_node(1, true);
    garage.freeze_node(2, true);
    let during = timed_put(&server.icann_url(), &account, "/pub/hang/1").await;
    garage.freeze_node(1, false);
    garage.freeze_node(2, false);
    eprintln!("two nodes frozen: {during:?}");
    let after = eventually(
        "a write after the thaw",
        Duration::from_secs(60),
        || async {
            let put = timed_put(&server.icann_url(), &account, "/pub/hang/2").await;
            if put.0 == 201 { Ok(put) } else { Err(put) }
        },
    )
    .await;
    eprintln!("after the thaw: {after:?}");
    // Refused with the reason, not a 500; but only when the S3 client gives up: object_store's request
    // timeout (30 s, Homestead sets none of its own), since the frozen nodes keep their connections open
    // and Garage waits for them.
    assert_eq!(
        (during.0, during.1.as_str()),
        (503, "Storage unavailable: the blob store failed"),
        "{during:?}"
    );
    assert!(during.2 < Duration::from_secs(40), "{during:?}");
}
