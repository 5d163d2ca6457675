//! [`Reference`]: the reference homeserver (`pubky-homeserver` 0.9.3, or 0.17.1) as a process on its own
//! data directory and PostgreSQL database with file-system storage, like Homestead's postgres-fs: for the
//! benches (open sign-up, no admin API) and the import tests (a key of their choosing, token sign-up, the
//! admin API). The SDK 0.17.1 suite includes this file too, so it names nothing of either SDK: the key is
//! its secret's bytes and the DHT is its bootstrap list.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::resources::{TestDatabase, free_port};

/// The reference binary the environment variable `var` names (scripts/test installs it and sets it); None,
/// with a note, when it is unset outside CI (`CI=true`), where its absence fails the test instead.
pub fn reference_binary(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(bin) => Some(bin),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{var} is not set (scripts/test installs the reference and sets it)")
        }
        Err(_) => {
            eprintln!("skipped: {var} is not set; run with scripts/test");
            None
        }
    }
}

/// How a [`Reference`] is set up.
#[derive(Debug, Clone, Default)]
pub struct ReferenceOptions {
    /// The server key's secret (written to `secret`); None lets the reference make one.
    pub secret: Option<[u8; 32]>,
    /// `signup_mode = "token_required"` instead of `"open"`.
    pub token_required: bool,
    /// The admin API on a loopback port, with the harness's admin password.
    pub admin: bool,
    /// An open-file limit (soft and hard, through `prlimit`).
    pub open_files: Option<u64>,
    /// A PKARR relay for `pkdns.dht_relay_nodes`; None keeps the reference's default (public) relays.
    pub pkarr_relay: Option<String>,
}

/// A running reference homeserver, killed when dropped (its directory and database go with it).
pub struct Reference {
    child: Child,
    url: String,
    admin_url: Option<String>,
    database: TestDatabase,
    dir: tempfile::TempDir,
}

impl Reference {
    /// Starts `binary` on a fresh database and data directory, on the DHT of `bootstrap`, and waits
    /// until its ICANN listener answers.
    pub async fn start(binary: &str, bootstrap: &[String], options: ReferenceOptions) -> Self {
        let database = TestDatabase::create();
        let dir = tempfile::Builder::new()
            .prefix("reference-homeserver-")
            .tempdir()
            .unwrap();
        if let Some(secret) = options.secret {
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(dir.path().join("secret"), hex).unwrap();
        }
        let (icann, admin) = (free_port(), free_port());
        let signup = if options.token_required {
            "token_required"
        } else {
            "open"
        };
        let admin_section = if options.admin {
            format!(
                "enabled = true\nlisten_socket = \"127.0.0.1:{admin}\"\nadmin_password = {:?}",
                crate::server::ADMIN_PASSWORD
            )
        } else {
            "enabled = false".to_string()
        };
        let bootstrap: Vec<String> = bootstrap.iter().map(|b| format!("{b:?}")).collect();
        let relays = options
            .pkarr_relay
            .map(|url| format!("dht_relay_nodes = [{url:?}]\n"))
            .unwrap_or_default();
        let config = format!(
            "[general]\ndatabase_url = {:?}\nsignup_mode = \"{signup}\"\n\n\
             [drive]\npubky_listen_socket = \"127.0.0.1:{}\"\nicann_listen_socket = \"127.0.0.1:{icann}\"\n\n\
             [admin]\n{admin_section}\n\n[metrics]\nenabled = false\n\n\
             [storage]\ntype = \"file_system\"\n\n\
             [pkdns]\npublic_ip = \"127.0.0.1\"\ndht_bootstrap_nodes = [{}]\n{relays}",
            database.url(),
            free_port(),
            bootstrap.join(", ")
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let mut command = match options.open_files {
            Some(limit) => {
                let mut prlimit = Command::new("prlimit");
                prlimit.arg(format!("--nofile={limit}:{limit}")).arg(binary);
                prlimit
            }
            None => Command::new(binary),
        };
        let child = command
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {binary}: {err}"));
        let mut reference = Self {
            child,
            url: format!("http://127.0.0.1:{icann}"),
            admin_url: options.admin.then(|| format!("http://127.0.0.1:{admin}")),
            database,
            dir,
        };
        let started = Instant::now();
        while reqwest::get(&reference.url).await.is_err() {
            let exited = reference.child.try_wait().unwrap();
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(60),
                "the reference did not start: {}",
                reference.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        reference
    }

    /// `http://127.0.0.1:<port>` of its ICANN listener.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `http://127.0.0.1:<port>` of its admin API; panics unless started with one.
    pub fn admin_url(&self) -> &str {
        self.admin_url
            .as_deref()
            .expect("started with the admin API")
    }

    /// Its data directory (`secret`, `config.toml`, `data/files/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its database.
    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Ends the process as an operator does (SIGINT), keeping its directory and database.
    pub fn stop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(sent, 0, "signal the reference");
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
