//! Debian's nginx, run in the foreground by a test (scripts/test installs it), and the ports it listens on.

use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

/// A loopback port free at the time of the call (for a process that binds it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

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
