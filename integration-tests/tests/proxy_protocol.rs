//! Behind a TCP load balancer that speaks the PROXY protocol, the way operators deploy one: Debian's nginx
//! with a `stream {}` block and `proxy_protocol on;` in front of both listeners, the PubkyTLS one passed
//! through as raw TCP (the SDK finds it through the record's advertised port). Both listeners are in
//! `proxy_protocol` mode trusting nginx's address only (127.0.0.2). The rate limiter counts the client
//! nginx names, on either listener; a v2 preface (binary, `PROXY` and `LOCAL`) works too; a forged
//! preface from anyone else, a trusted peer without a preface and a stalling one are all closed unanswered.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use homestead_integration_tests::{
    TestNet, TestServer, eventually, free_port, nginx_user_line, start_nginx,
};
use pubky::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Child;

/// Where nginx connects from, and the only address Homestead trusts.
const BALANCER: &str = "127.0.0.2";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// nginx in the foreground, a stream proxy with the PROXY protocol from each front port to its listener.
struct Nginx {
    child: Child,
}

impl Nginx {
    async fn start(dir: &Path, routes: [(SocketAddr, SocketAddr); 2]) -> Self {
        let nginx = std::env::var("TEST_NGINX_BIN").unwrap_or_else(|_| "nginx".into());
        let built = std::process::Command::new(&nginx)
            .arg("-V")
            .output()
            .expect("run nginx -V (scripts/test installs nginx)");
        let built = String::from_utf8_lossy(&built.stderr).into_owned();
        // Debian builds the stream module as a dynamic one (package libnginx-mod-stream).
        let load_stream = if built.contains("--with-stream=dynamic") {
            let modules = built
                .split_whitespace()
                .find_map(|flag| flag.strip_prefix("--modules-path="))
                .unwrap_or("/usr/lib/nginx/modules");
            let module = format!("{modules}/ngx_stream_module.so");
            assert!(
                Path::new(&module).exists(),
                "{module} is missing: install libnginx-mod-stream"
            );
            format!("load_module {module};")
        } else {
            String::new()
        };
        let servers: String = routes
            .iter()
            .map(|(front, listener)| {
                format!(
                    "  server {{\n    listen {front};\n    proxy_pass {listener};\n    \
                     proxy_protocol on;\n    proxy_bind {BALANCER};\n  }}\n"
                )
            })
            .collect();
        let d = dir.display();
        let user = nginx_user_line();
        let config = format!(
            "{load_stream}\n{user}\nworker_processes 1;\nerror_log {d}/error.log info;\n\
             pid {d}/nginx.pid;\nevents {{}}\nstream {{\n{servers}}}\n"
        );
        let child = start_nginx(dir, &config);
        for (front, _) in routes {
            let mut up = false;
            for _ in 0..100 {
                if TcpStream::connect(front).await.is_ok() {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            assert!(up, "nginx listens on {front}\n{config}\n{log}");
        }
        Self { child }
    }

    /// Fast shutdown: the master stops its workers and exits.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// A TCP connection from `from` (a loopback address) to `to`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Writes `bytes` and reads until the server closes; panics unless it closes within `within`.
async fn exchange(mut stream: TcpStream, bytes: &[u8], within: Duration) -> String {
    // The server may close before the whole write arrives: a failed write is an answer too.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status of `GET /events/` sent on `stream` after `preface`.
async fn feed_after(stream: TcpStream, preface: &[u8]) -> u16 {
    let request = [
        preface,
        b"GET /events/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    ]
    .concat();
    let answer = exchange(stream, &request, Duration::from_secs(10)).await;
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}

/// A v2 `PROXY` preface for TCP over IPv4 from `source`, or a `LOCAL` one without addresses.
fn v2(source: Option<SocketAddrV4>) -> Vec<u8> {
    let mut preface = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    match source {
        Some(source) => {
            preface.extend_from_slice(&[0x21, 0x11, 0, 12]);
            preface.extend_from_slice(&source.ip().octets());
            preface.extend_from_slice(&[127, 0, 0, 1]);
            preface.extend_from_slice(&source.port().to_be_bytes());
            preface.extend_from_slice(&443u16.to_be_bytes());
        }
        None => preface.extend_from_slice(&[0x20, 0x00, 0, 0]),
    }
    preface
}

/// Connections from `from` to `listener` that send `bytes` are closed unanswered, and the log names the
/// peer with `reason`.
async fn refused(
    server: &TestServer,
    from: &str,
    listener: SocketAddr,
    bytes: &[u8],
    reason: &str,
) {
    let stream = connect_from(from, listener).await;
    let peer = stream.local_addr().unwrap();
    let answer = exchange(stream, bytes, Duration::from_secs(10)).await;
    assert_eq!(answer, "", "{peer} to {listener}: closed without an answer");
    let line = format!("peer={peer}");
    eventually("the refusal is logged", Duration::from_secs(5), || {
        let log = server.log();
        let logged = log.lines().any(|l| {
            l.contains("PROXY protocol: connection refused")
                && l.contains(&line)
                && l.contains(reason)
        });
        async move { if logged { Ok(()) } else { Err(log) } }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_addresses_from_the_proxy_protocol_through_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let net = TestNet::new();
    let icann_front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tls_front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let trusted = format!("{{ mode = \"proxy_protocol\", trusted_proxies = [\"{BALANCER}/32\"] }}");
    let server = net
        .server()
        .drive_config(&format!(
            "icann_client_identity = {trusted}\npubky_client_identity = {trusted}\nheader_read_timeout_secs = 2\n\
             trusted_proxies = [\"127.0.0.0/8\"]"
        ))
        .pkdns_config(&format!("public_pubky_tls_port = {}", tls_front.port()))
        .config(
            "[[drive.rate_limits]]\npath = \"/events/\"\nmethod = \"GET\"\nquota = \"2r/h\"\nkey = \"ip\"\n\n\
             [logging]\nmodule_levels = [\"homestead::listeners=debug\"]",
        )
        .start()
        .await;
    let icann = server.icann_addr();
    let pubky_tls = server.pubky_tls_addr();
    let nginx = Nginx::start(dir.path(), [(icann_front, icann), (tls_front, pubky_tls)]).await;

    // ICANN through nginx: each client has its own budget though every connection comes from nginx.
    let feed = |from: &str| {
        let client = reqwest::Client::builder()
            .local_address(ip(from))
            .build()
            .unwrap();
        async move {
            let response = client
                .get(format!("http://{icann_front}/events/"))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    };
    assert_eq!(feed("127.0.0.3").await, 200);
    assert_eq!(feed("127.0.0.3").await, 200);
    assert_eq!(feed("127.0.0.3").await, 429);
    assert_eq!(
        feed("127.0.0.4").await,
        200,
        "another client, another budget"
    );
    // The preface names the client: an X-Forwarded-For of the client's own making is not believed, even
    // from an address `drive.trusted_proxies` lists.
    let spoofing = reqwest::Client::builder()
        .local_address(ip("127.0.0.3"))
        .build()
        .unwrap();
    let spoofed = spoofing
        .get(format!("http://{icann_front}/events/"))
        .header("x-forwarded-for", "127.0.0.77")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status().as_u16(), 429, "still 127.0.0.3's budget");

    // PubkyTLS through nginx, TLS passed through untouched: the SDK finds the front port in the record
    // and connects from 127.0.0.1, which is then the client on both listeners.
    net.wait_until_resolvable(&server).await;
    let sdk = net.sdk_client();
    let url = format!("https://{}/events/", server.public_key().z32());
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = sdk.request(Method::GET, &url).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(
        feed("127.0.0.1").await,
        429,
        "one budget across both listeners"
    );

    // A v2 preface from the balancer: PROXY names 127.0.0.9, LOCAL (a health check) speaks for the
    // balancer itself, whose own budget nothing above has touched.
    let named = v2(Some("127.0.0.9:4000".parse().unwrap()));
    let direct = || connect_from(BALANCER, icann);
    assert_eq!(feed_after(direct().await, &named).await, 200);
    assert_eq!(feed_after(direct().await, &named).await, 200);
    assert_eq!(feed_after(direct().await, &named).await, 429);
    assert_eq!(feed_after(direct().await, &v2(None)).await, 200);
    // A v1 line straight from the balancer works the same.
    let line = b"PROXY TCP4 127.0.0.10 127.0.0.1 4000 80\r\n";
    assert_eq!(feed_after(direct().await, line).await, 200);

    // Anyone but the balancer is closed unanswered, forged preface or not, on both listeners.
    let forged = b"PROXY TCP4 127.0.0.11 127.0.0.1 4000 80\r\n";
    let request = b"GET /events/ HTTP/1.1\r\nhost: x\r\n\r\n";
    let client_hello = [
        &b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03"[..],
        &[7; 53],
    ]
    .concat();
    let untrusted = "peer is not in trusted_proxies";
    let forged_request = [&forged[..], request].concat();
    refused(&server, "127.0.0.1", icann, &forged_request, untrusted).await;
    let forged_v2 = [v2(Some("127.0.0.11:1".parse().unwrap())), request.to_vec()].concat();
    refused(&server, "127.0.0.5", icann, &forged_v2, untrusted).await;
    let forged_hello = [&forged[..], &client_hello].concat();
    refused(&server, "127.0.0.1", pubky_tls, &forged_hello, untrusted).await;
    refused(&server, "127.0.0.1", icann, request, untrusted).await;
    // The balancer itself without a preface, or with a broken one, is closed too.
    let missing = "no PROXY protocol preface";
    refused(&server, BALANCER, icann, request, missing).await;
    refused(&server, BALANCER, pubky_tls, &client_hello, missing).await;
    let broken = [&b"PROXY TCP4 127.0.0.11 127.0.0.1 4000\r\n"[..], request].concat();
    refused(&server, BALANCER, icann, &broken, "malformed PROXY v1 line").await;
    // One that stalls is closed after the header read timeout (2 s here).
    let started = Instant::now();
    let timeout = "no whole PROXY preface within the header read timeout";
    refused(&server, BALANCER, pubky_tls, b"PROXY TCP4 ", timeout).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");

    // Through nginx everything still works after all that.
    assert_eq!(feed("127.0.0.6").await, 200);

    nginx.stop().await;
    let (status, log) = server.stop_with_log().await;
    assert!(status.success(), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}
