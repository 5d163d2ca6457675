//! PKARR upkeep and transports on a local DHT: what PubkyTLS presents, what non-TLS clients cost, the
//! SDK's turn to the ICANN endpoint when PubkyTLS is unreachable, and users' records brought back from the
//! stored packets after the DHT forgot them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use homestead_integration_tests::{Account, TestNet, TestServer, eventually};
use pubky::Keypair;
use pubky::pkarr::dns::rdata::{RData, SVCParam};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts any raw public key (checking its handshake signature) and remembers it.
#[derive(Debug)]
struct RememberKey {
    presented: Mutex<Option<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for RememberKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        assert!(intermediates.is_empty(), "a raw key comes alone");
        *self.presented.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "raw public keys need TLS 1.3".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// A raw TLS client: the key the server presents is the server's public key, as an Ed25519 SPKI, and
/// HTTP works over the session. Plain-HTTP and garbage clients on the same port are dropped quietly.
async fn pubky_tls_presents_the_server_key(server: &TestServer) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(RememberKey {
        presented: Mutex::new(None),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.pubky_tls_addr()).await.unwrap();
    let name = ServerName::try_from(server.public_key().z32()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("PubkyTLS handshake");
    let spki = verifier
        .presented
        .lock()
        .unwrap()
        .clone()
        .expect("a key was presented");
    let mut expected = hex_bytes("302a300506032b6570032100");
    expected.extend_from_slice(server.public_key().as_bytes());
    assert_eq!(spki, expected);
    tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("Pubky Homeserver"), "{answer}");

    for junk in [&b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..], &[0u8; 64][..]] {
        let mut plain = TcpStream::connect(server.pubky_tls_addr()).await.unwrap();
        plain.write_all(junk).await.unwrap();
        let mut reply = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut reply)).await;
        assert!(read.is_ok(), "closed at once");
        assert!(
            !String::from_utf8_lossy(&reply).contains("HTTP/1.1"),
            "no HTTP answer over plain TCP"
        );
    }
    let log = server.log();
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "handshake failures are debug only:\n{log}"
    );
    let root = reqwest::get(format!("{}/", server.icann_url()))
        .await
        .unwrap();
    assert_eq!(root.status(), 200);
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The admin `/info` once its last republisher run satisfies `done`.
async fn admin_info_until(
    server: &TestServer,
    what: &str,
    deadline: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(what, deadline, || async {
        let (_, info) = server.admin(reqwest::Method::GET, "/info").await;
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        if done(&info["user_keys_republisher"]) {
            Ok(info)
        } else {
            Err(info.to_string())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn transports() {
    let net = TestNet::new();
    let server = net.server().start().await;
    pubky_tls_presents_the_server_key(&server).await;
    assert!(server.stop().await.success());
}

/// With the advertised PubkyTLS port closed, the SDK turns to the advertised ICANN endpoint. The record
/// names `localhost` without a `port` parameter, so the native SDK goes to `https://localhost:443`; that
/// needs a publicly trusted certificate this machine cannot have, so the test listens there itself and
/// shows the SDK's TLS ClientHello for `localhost` arriving. A browser-style client then uses the plain-HTTP
/// port the record carries for `localhost` (SvcParam 65280) and reaches the server.
#[tokio::test(flavor = "multi_thread")]
async fn sdk_falls_back_to_the_icann_endpoint() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let https = TcpListener::bind("127.0.0.1:443")
        .await
        .expect("bind 127.0.0.1:443 (the tests run as root on this machine kind)");
    let net = TestNet::new();
    let server = net
        .server()
        .pkdns_config(&format!(
            "public_pubky_tls_port = {closed}\nicann_domain = \"localhost\""
        ))
        .start()
        .await;
    let packet = net.wait_until_resolvable(&server).await;

    // A user of this server, signed up over the ICANN listener, whose record points at the server.
    let account = Account::signup(&server).await;
    let signer = net.pubky().signer(account.keypair);
    signer
        .pkdns()
        .publish_homeserver_force(Some(&server.public_key()))
        .await
        .unwrap();
    let user = signer.public_key().z32();

    let pubky = net.pubky();
    let request = tokio::spawn(async move {
        pubky
            .public_storage()
            .get(format!("pubky{user}/pub/x"))
            .await
            .map(|_| ())
    });
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(30), https.accept())
        .await
        .expect("the SDK connects to the ICANN endpoint")
        .unwrap();
    let mut hello = vec![0u8; 2048];
    let n = stream.read(&mut hello).await.unwrap();
    assert_eq!(&hello[..2], &[0x16, 0x03], "a TLS handshake record");
    assert!(
        hello[..n].windows(9).any(|w| w == b"localhost"),
        "SNI localhost"
    );
    drop(stream);
    assert!(
        request.await.unwrap().is_err(),
        "no trusted certificate at localhost:443"
    );

    // The browser path: http://localhost:<port from the record> with the user in pubky-host.
    let port = packet
        .all_resource_records()
        .find_map(|rr| match &rr.rdata {
            RData::HTTPS(https) if https.0.target.to_string().starts_with("localhost") => {
                https.0.iter_params().find_map(|param| match param {
                    SVCParam::Unknown(65280, bytes) => {
                        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
                    }
                    _ => None,
                })
            }
            _ => None,
        })
        .expect("the localhost endpoint carries its HTTP port");
    assert_eq!(
        port,
        server
            .icann_url()
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap()
    );
    let root = reqwest::Client::new()
        .get(format!("http://localhost:{port}/"))
        .header("pubky-host", server.public_key().z32())
        .send()
        .await
        .unwrap();
    assert_eq!(root.text().await.unwrap(), "Pubky Homeserver");
    assert!(server.stop().await.success());
}

/// A user's record that the DHT lost comes back from the packet the server stored: the server runs on
/// one DHT, learns the user's record there, then restarts on a fresh DHT that never saw it.
#[tokio::test(flavor = "multi_thread")]
async fn lost_user_records_are_restored() {
    let first = TestNet::new();
    let server = first
        .server()
        .pkdns_config("user_keys_republisher_delay_secs = 8")
        .config("[metrics]\nenabled = true\nlisten_socket = \"127.0.0.1:0\"")
        .start()
        .await;
    first.wait_until_resolvable(&server).await;
    let user = first.pubky().signer(Keypair::random());
    user.signup(&server.public_key(), None).await.unwrap();
    // A user who moved to another homeserver is not this server's to keep alive.
    let moved = first.pubky().signer(Keypair::random());
    moved.signup(&server.public_key(), None).await.unwrap();
    let elsewhere = Keypair::random().public_key();
    moved
        .pkdns()
        .publish_homeserver_force(Some(&elsewhere))
        .await
        .unwrap();
    let run = admin_info_until(
        &server,
        "a republisher run that stored the user's packet",
        Duration::from_secs(60),
        |run| run["republished"] == 1 && run["elsewhere"] == 1,
    )
    .await;
    assert_eq!(run["num_users"], 2);

    let second = TestNet::new();
    let fresh = second.pubky();
    assert!(
        fresh.get_homeserver_of(&user.public_key()).await.is_none(),
        "the fresh DHT knows nothing"
    );
    let server = server.restart_with_bootstrap(second.bootstrap()).await;
    eventually(
        "the user's record restored on the fresh DHT",
        Duration::from_secs(60),
        || {
            let fresh = &fresh;
            let user = user.public_key();
            async move { fresh.get_homeserver_of(&user).await.ok_or("not yet") }
        },
    )
    .await;
    assert_eq!(
        fresh.get_homeserver_of(&user.public_key()).await,
        Some(server.public_key())
    );
    // The record is out before the run that restored it has finished and reported.
    let info = admin_info_until(
        &server,
        "the republisher run that restored the record reported",
        Duration::from_secs(30),
        |run| run["restored"] == 1,
    )
    .await;
    assert!(
        info["pkarr_publish"]["published"].as_u64().unwrap() >= 1,
        "{info}"
    );
    let metrics = server.metrics().await;
    let scope = "otel_scope_name=\"pubky_homeserver\"";
    for line in [
        format!("pkarr_user_record_republishes_total{{outcome=\"restored\",{scope}}} 1"),
        format!("pkarr_user_record_republishes_total{{outcome=\"elsewhere\",{scope}}} 1"),
        format!("pkarr_server_record_publishes_total{{result=\"ok\",{scope}}}"),
    ] {
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(server.stop().await.success());
}
