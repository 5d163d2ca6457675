//! Debian's nginx, run in the foreground by a test (scripts/test installs it), and the ports it listens on.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::resources::free_port;

/// The `user` directive nginx needs when the tests run as root (its workers would drop to `nobody`
/// otherwise and could not read the test's files); empty for anyone else.
pub fn nginx_user_line() -> &'static str {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        "user root;"
    } else {
        ""
    }
}

/// Writes `config` to `<dir>/nginx.conf` and starts `TEST_NGINX_BIN` (or `nginx`) on it in the
/// foreground, with `dir` as its prefix; the process is killed when the child is dropped.
pub fn start_nginx(dir: &Path, config: &str) -> Child {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).expect("write nginx.conf");
    let nginx = std::env::var("TEST_NGINX_BIN").unwrap_or_else(|_| "nginx".into());
    Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start nginx (scripts/test installs it)")
}

/// The operators' nginx site, `deploy/nginx-homestead.conf`.
const DEPLOY_SITE: &str = include_str!("../../deploy/nginx-homestead.conf");

/// The part of `text` from the line starting with `start` to the first line after it that is `end`.
fn block<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} in the deploy site"));
    let len = text[from..]
        .find(end)
        .unwrap_or_else(|| panic!("the end of {start:?} in the deploy site"));
    &text[from..from + len + end.len()]
}

/// A whole nginx.conf for a test in `dir`: the deploy site's upstream block (one `server` line per
/// address of `instances`, each with the deploy file's parameters) and its `location /` (retries,
/// timeouts, streaming), served as plain HTTP on 127.0.0.1:`port`. The tests thus run the settings
/// operators are told to run; only the addresses and TLS differ.
pub fn deploy_balancer(dir: &Path, port: u16, instances: &[SocketAddr]) -> String {
    let upstream = block(DEPLOY_SITE, "upstream homestead_icann {", "\n}\n");
    let server_line = upstream
        .lines()
        .find(|line| line.trim_start().starts_with("server 127.0.0.1:6286 "))
        .expect("a server line in the deploy upstream");
    let servers: Vec<String> = instances
        .iter()
        .map(|addr| server_line.replace("127.0.0.1:6286", &addr.to_string()))
        .collect();
    let upstream = upstream.replace(server_line, &servers.join("\n"));
    let location = block(DEPLOY_SITE, "    location / {", "\n    }\n");
    let d = dir.display();
    let user = nginx_user_line();
    format!(
        "{user}\nworker_processes 1;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\nevents {{}}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {upstream}\nserver {{\n    listen 127.0.0.1:{port};\n{location}}}\n}}\n"
    )
}

/// Starts nginx in `dir` as the load balancer of [`deploy_balancer`] (the deploy site's upstream and
/// location settings) on a free loopback port in front of the ICANN listeners `backends`, and waits
/// until it accepts connections. Returns the process and `http://127.0.0.1:<port>`. It runs as one
/// process (`master_process off`), so that killing it leaves no worker behind.
pub async fn start_balancer(dir: &Path, backends: &[SocketAddr]) -> (Child, String) {
    let port = free_port();
    let config = deploy_balancer(dir, port, backends).replacen(
        "worker_processes 1;",
        "master_process off;",
        1,
    );
    let child = start_nginx(dir, &config);
    let url = format!("http://127.0.0.1:{port}");
    crate::eventually(
        "nginx accepts connections",
        std::time::Duration::from_secs(10),
        || tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await;
    (child, url)
}
