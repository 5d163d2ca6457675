//! Behind a real nginx with TLS, configured by `deploy/nginx-homestead.conf`: a browser-like client that
//! trusts nginx's self-signed certificate and names users with `pubky-host` signs up, writes, reads,
//! lists and follows a live event stream (events arrive unbuffered), gets `Secure` cookies, and the rate
//! limiter counts the real client address, which only the trusted proxy can report.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use homestead_integration_tests::{TestNet, free_port, nginx_user_line, start_nginx};
use pubky::{AuthToken, Capabilities, Capability, Keypair};
use tokio::process::Child;

const DOMAIN: &str = "homeserver.example.com";

/// nginx in the foreground with the deploy site, its TLS port on 127.0.0.1 in front of `icann`.
struct Nginx {
    child: Child,
    tls: SocketAddr,
}

impl Nginx {
    async fn start(dir: &Path, icann: SocketAddr) -> Self {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let openssl = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            ])
            .arg(format!("/CN={DOMAIN}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{DOMAIN}"))
            // A leaf, not a CA: TLS clients refuse a CA certificate as the server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(
            openssl.status.success(),
            "{}",
            String::from_utf8_lossy(&openssl.stderr)
        );

        let site = include_str!("../../deploy/nginx-homestead.conf");
        let tls_port = free_port();
        let site = site
            .replace("server 127.0.0.1:6286 ", &format!("server {icann} "))
            .replace(
                "    listen 80;\n",
                &format!("    listen 127.0.0.1:{};\n", free_port()),
            )
            .replace("    listen [::]:80;\n", "")
            .replace(
                "    listen 443 ssl http2;\n",
                &format!("    listen 127.0.0.1:{tls_port} ssl http2;\n"),
            )
            .replace("    listen [::]:443 ssl http2;\n", "")
            .replace(
                "/etc/letsencrypt/live/homeserver.example.com/fullchain.pem",
                cert.to_str().unwrap(),
            )
            .replace(
                "/etc/letsencrypt/live/homeserver.example.com/privkey.pem",
                key.to_str().unwrap(),
            );
        let d = dir.display();
        let user = nginx_user_line();
        let config = format!(
            "{user}\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{site}\n}}\n"
        );
        let child = start_nginx(dir, &config);
        let tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(tls).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, tls }
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

/// A browser-like client from `from` (a loopback address) that trusts the test certificate.
fn browser(nginx: &Nginx, dir: &Path, from: IpAddr) -> reqwest::Client {
    let pem = std::fs::read(dir.join("cert.pem")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve(DOMAIN, nginx.tls)
        .local_address(from)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn through_nginx_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let net = TestNet::new();
    let server = net
        .server()
        .drive_config("trusted_proxies = [\"127.0.0.1\"]")
        .config("[[drive.rate_limits]]\npath = \"/events/\"\nmethod = \"GET\"\nquota = \"2r/h\"\nkey = \"ip\"")
        .start()
        .await;
    let icann = server.icann_addr();
    let nginx = Nginx::start(dir.path(), icann).await;
    let base = format!("https://{DOMAIN}:{}", nginx.tls.port());
    let client = browser(&nginx, dir.path(), "127.0.0.2".parse().unwrap());

    // Sign-up with an AuthToken signed here; the cookie is Secure behind TLS (Host is the domain).
    let keypair = Keypair::random();
    let user = keypair.public_key().z32();
    let token = AuthToken::sign(
        &keypair,
        Capabilities::builder().cap(Capability::root()).finish(),
    );
    let signup = client
        .post(format!("{base}/signup"))
        .body(token.serialize())
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 200);
    let set_cookie = signup.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("; HttpOnly; SameSite=None; Secure; Path=/;"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    // A live stream first, then a write: the event must arrive through nginx without buffering.
    let stream = client
        .get(format!("{base}/events-stream?user={user}&live=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut stream = stream.bytes_stream();
    let put = client
        .put(format!("{base}/pub/app/hello.txt"))
        .header("pubky-host", &user)
        .header("cookie", &cookie)
        .body("hello through nginx")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the event arrives at once, unbuffered")
        .unwrap()
        .unwrap();
    let frame = String::from_utf8_lossy(&chunk).into_owned();
    assert!(
        frame.contains(&format!("data: pubky://{user}/pub/app/hello.txt")),
        "{frame}"
    );

    let get = client
        .get(format!("{base}/pub/app/hello.txt"))
        .header("pubky-host", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(get.text().await.unwrap(), "hello through nginx");
    let list = client
        .get(format!("{base}/pub/app/"))
        .header("pubky-host", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(
        list.text().await.unwrap(),
        format!("pubky://{user}/pub/app/hello.txt")
    );

    // The limiter keys on the client's address as nginx reports it: 127.0.0.2 gets its 2 requests,
    // a forged X-Forwarded-For does not make it someone else, and 127.0.0.3 has its own budget.
    let feed = |client: reqwest::Client, forged: Option<&'static str>| {
        let url = format!("{base}/events/");
        async move {
            let mut request = client.get(url);
            if let Some(forged) = forged {
                request = request.header("x-forwarded-for", forged);
            }
            request.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(feed(client.clone(), None).await, 200);
    assert_eq!(feed(client.clone(), None).await, 200);
    assert_eq!(feed(client.clone(), None).await, 429);
    assert_eq!(
        feed(client.clone(), Some("9.9.9.9")).await,
        429,
        "a forged address does not help"
    );
    let neighbour = browser(&nginx, dir.path(), "127.0.0.3".parse().unwrap());
    assert_eq!(
        feed(neighbour, None).await,
        200,
        "another client, another budget"
    );
    // Straight to Homestead (not through the trusted proxy), forwarded headers are ignored: the peer
    // 127.0.0.4 is the key whatever it claims.
    let direct = reqwest::Client::builder()
        .local_address("127.0.0.4".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let direct_feed = |forged: &'static str| {
        let request = direct
            .get(format!("{}/events/", server.icann_url()))
            .header("x-forwarded-for", forged);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(direct_feed("1.1.1.1").await, 200);
    assert_eq!(direct_feed("1.1.1.2").await, 200);
    assert_eq!(direct_feed("1.1.1.3").await, 429);

    drop(stream);
    nginx.stop().await;
    assert!(server.stop().await.success());
}
