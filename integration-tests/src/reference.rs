//! [`Reference`]: the reference homeserver (`pubky-homeserver` 0.9.3) as a process of a bench, on
//! PostgreSQL metadata and filesystem blobs like Homestead's postgres-fs, open sign-up and no rate limits.

use std::time::{Duration, Instant};

use crate::{TestDatabase, TestNet, free_port};

/// A running reference homeserver on its own data directory and database, killed when dropped.
pub struct Reference {
    url: String,
    child: tokio::process::Child,
    _database: TestDatabase,
    _data_dir: tempfile::TempDir,
}

impl Reference {
    /// Starts `binary` on a fresh database and data directory, its DHT `net`; with `open_files`, under
    /// that open-file limit (soft and hard, through `prlimit`). Waits until its ICANN listener answers.
    pub async fn start(binary: &str, net: &TestNet, open_files: Option<u64>) -> Self {
        let database = TestDatabase::create();
        let data_dir = tempfile::Builder::new()
            .prefix("reference-homeserver-")
            .tempdir()
            .unwrap();
        let icann = free_port();
        let bootstrap: Vec<String> = net.bootstrap().iter().map(|b| format!("{b:?}")).collect();
        let config = format!(
            "[general]\ndatabase_url = {:?}\nsignup_mode = \"open\"\n\n\
             [drive]\npubky_listen_socket = \"127.0.0.1:{}\"\nicann_listen_socket = \"127.0.0.1:{icann}\"\n\n\
             [admin]\nenabled = false\n\n[metrics]\nenabled = false\n\n\
             [storage]\ntype = \"file_system\"\n\n\
             [pkdns]\npublic_ip = \"127.0.0.1\"\ndht_bootstrap_nodes = [{}]\n",
            database.url(),
            free_port(),
            bootstrap.join(", ")
        );
        std::fs::write(data_dir.path().join("config.toml"), config).unwrap();
        let mut command = match open_files {
            Some(limit) => {
                let mut prlimit = tokio::process::Command::new("prlimit");
                prlimit.arg(format!("--nofile={limit}:{limit}")).arg(binary);
                prlimit
            }
            None => tokio::process::Command::new(binary),
        };
        let child = command
            .arg("--data-dir")
            .arg(data_dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(data_dir.path().join("server.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {binary}: {err}"));
        let url = format!("http://127.0.0.1:{icann}");
        let started = Instant::now();
        while reqwest::get(&url).await.is_err() {
            let log = std::fs::read_to_string(data_dir.path().join("server.log"));
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the reference did not start: {log:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Self {
            url,
            child,
            _database: database,
            _data_dir: data_dir,
        }
    }

    /// `http://127.0.0.1:<port>` of its ICANN listener.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its process id (0 once it has exited).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}
