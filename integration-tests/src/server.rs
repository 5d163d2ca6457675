//! [`TestServer`]: the `homestead` binary as a child process, configured through its `config.toml` the
//! way an operator would, on loopback ports chosen by the OS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use pubky::PublicKey;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::resources::{TestBucket, TestDatabase};

/// Where a test server keeps metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    /// The embedded default: SQLite in the data directory.
    Sqlite,
    /// A fresh PostgreSQL database, dropped afterwards.
    Postgres,
}

/// Where a test server keeps file contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blobs {
    /// Files under the data directory.
    Fs,
    /// Process memory.
    Memory,
    /// A fresh bucket on the S3-compatible test server.
    S3,
}

/// Regular files below `dir`.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => count_files(&entry.path()),
            Ok(kind) if kind.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// The `dht_bootstrap_nodes` line of a config naming `bootstrap`.
fn bootstrap_line(bootstrap: &[String]) -> String {
    let quoted: Vec<String> = bootstrap.iter().map(|b| format!("{b:?}")).collect();
    format!("dht_bootstrap_nodes = [{}]", quoted.join(", "))
}

/// The database and bucket behind a server, shared by the instances of one deployment.
type Backing = (Option<Arc<TestDatabase>>, Option<Arc<TestBucket>>);

/// Configures and starts a [`TestServer`].
pub struct TestServerBuilder {
    bootstrap: Vec<String>,
    metadata: Metadata,
    blobs: Blobs,
    signup_mode: &'static str,
    default_quota_mb: Option<u64>,
    shared: Option<Backing>,
    pkdns_config: String,
    drive_config: String,
    storage_config: String,
    extra_config: String,
    database_url: Option<String>,
    s3_endpoint: Option<String>,
    bucket: Option<Arc<TestBucket>>,
    launch: Launch,
    icann_port: u16,
}

impl TestServerBuilder {
    pub(crate) fn new(bootstrap: Vec<String>) -> Self {
        Self {
            bootstrap,
            metadata: Metadata::Sqlite,
            blobs: Blobs::Fs,
            signup_mode: "open",
            default_quota_mb: None,
            shared: None,
            pkdns_config: String::new(),
            drive_config: String::new(),
            storage_config: String::new(),
            extra_config: String::new(),
            database_url: None,
            s3_endpoint: None,
            bucket: None,
            launch: Launch::default(),
            icann_port: 0,
        }
    }

    /// Binds the ICANN listener to this loopback port (default: one the OS picks), so that a restarted
    /// server is found where its load balancer expects it.
    pub fn icann_port(mut self, port: u16) -> Self {
        self.icann_port = port;
        self
    }

    /// Enables the metrics listener on a free loopback port (read it with [`TestServer::metrics`]).
    pub fn with_metrics(self) -> Self {
        self.config("[metrics]\nenabled = true\nlisten_socket = \"127.0.0.1:0\"")
    }

    /// Runs the server with this open-file limit, soft and hard (through `prlimit`).
    pub fn open_files(mut self, limit: u64) -> Self {
        self.launch.open_files = Some(limit);
        self
    }

    /// Runs this `homestead` binary instead of [`binary`] (say, an earlier build to compare with).
    pub fn binary(mut self, path: PathBuf) -> Self {
        self.launch.binary = Some(path);
        self
    }

    /// Chooses the metadata backend (default SQLite).
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Chooses the blob backend (default filesystem).
    pub fn blobs(mut self, blobs: Blobs) -> Self {
        self.blobs = blobs;
        self
    }

    /// Keeps metadata in the database at `url` (one the test manages) instead of a fresh one.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_string());
        self
    }

    /// Reaches the S3 test server through `url` (a proxy in front of it) instead of directly.
    pub fn s3_endpoint(mut self, url: &str) -> Self {
        self.s3_endpoint = Some(url.to_string());
        self
    }

    /// Keeps blobs in `bucket` (made by the test, e.g. on a Garage cluster) instead of a fresh one on
    /// the S3 test server.
    pub fn bucket(mut self, bucket: Arc<TestBucket>) -> Self {
        self.blobs = Blobs::S3;
        self.bucket = Some(bucket);
        self
    }

    /// Requires signup tokens (`token_required`) instead of open sign-up.
    pub fn token_required(mut self) -> Self {
        self.signup_mode = "token_required";
        self
    }

    /// Uses the database and bucket of `other` (same backends), as a second instance of one deployment.
    pub fn sharing(mut self, other: &TestServer) -> Self {
        self.metadata = other.metadata;
        self.blobs = other.blobs;
        self.shared = Some((other.database.clone(), other.bucket.clone()));
        self
    }

    /// Sets `storage.default_quota_mb`.
    pub fn default_quota_mb(mut self, mb: u64) -> Self {
        self.default_quota_mb = Some(mb);
        self
    }

    /// Adds `key = value` lines to the `[storage]` section.
    pub fn storage_config(mut self, lines: &str) -> Self {
        self.storage_config.push_str(lines);
        self.storage_config.push('\n');
        self
    }

    /// Adds `key = value` lines to the `[drive]` section.
    pub fn drive_config(mut self, lines: &str) -> Self {
        self.drive_config.push_str(lines);
        self.drive_config.push('\n');
        self
    }

    /// Adds `key = value` lines to the `[pkdns]` section.
    pub fn pkdns_config(mut self, lines: &str) -> Self {
        self.pkdns_config.push_str(lines);
        self.pkdns_config.push('\n');
        self
    }

    /// Appends TOML to the generated `config.toml` (sections not written by the builder).
    pub fn config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
        self
    }

    /// Writes the config, spawns the binary and waits until it reports that it is ready.
    pub async fn start(self) -> TestServer {
        self.prepare().await.start().await
    }

    /// Writes the config, runs `step` on the data directory (say, a command that fills the storage the
    /// config names), then starts the server like [`Self::start`].
    pub async fn start_after(self, step: impl FnOnce(&Path)) -> TestServer {
        let prepared = self.prepare().await;
        step(prepared.data_dir());
        prepared.start().await
    }

    /// Writes the config and creates the database and bucket, without starting the server, so that an
    /// operator command (e.g. `restore`) can fill them first.
    pub async fn prepare(self) -> PreparedServer {
        let data_dir = tempfile::Builder::new()
            .prefix("homestead-test-")
            .tempdir()
            .expect("create a data directory");
        let (database, bucket) = match self.shared.clone() {
            Some(shared) => shared,
            None => {
                let database =
                    (self.metadata == Metadata::Postgres).then(|| Arc::new(TestDatabase::create()));
                let bucket = match (self.blobs, self.bucket.clone()) {
                    (Blobs::S3, Some(bucket)) => Some(bucket),
                    (Blobs::S3, None) => Some(Arc::new(TestBucket::create().await)),
                    _ => None,
                };
                (database, bucket)
            }
        };
        let config = self.config_toml(database.as_deref(), bucket.as_deref());
        std::fs::write(data_dir.path().join("config.toml"), config).expect("write config.toml");
        PreparedServer {
            data_dir,
            backends: (self.metadata, self.blobs),
            database,
            bucket,
            launch: self.launch.clone(),
        }
    }

    fn config_toml(&self, database: Option<&TestDatabase>, bucket: Option<&TestBucket>) -> String {
        let mut general = format!("[general]\nsignup_mode = {:?}\n", self.signup_mode);
        if let Some(url) = self
            .database_url
            .clone()
            .or_else(|| database.map(TestDatabase::url))
        {
            general.push_str(&format!("database_url = {url:?}\n"));
        }
        let mut storage = match (self.blobs, bucket) {
            (Blobs::S3, Some(b)) => format!(
                "[storage]\ntype = \"s3\"\nbucket_name = {:?}\ns3_endpoint = {:?}\ns3_path_style = true\n\
                 s3_region = {:?}\ns3_access_key_id = {:?}\ns3_secret_access_key = {:?}\n",
                b.name,
                self.s3_endpoint.as_deref().unwrap_or(&b.endpoint),
                b.region,
                b.access_key_id,
                b.secret_access_key
            ),
            (Blobs::Memory, _) => "[storage]\ntype = \"in_memory\"\n".into(),
            _ => "[storage]\ntype = \"file_system\"\n".into(),
        };
        if let Some(mb) = self.default_quota_mb {
            storage.push_str(&format!("default_quota_mb = {mb}\n"));
        }
        storage.push_str(&self.storage_config);
        format!(
            "{general}\n[drive]\nicann_listen_socket = \"127.0.0.1:{}\"\npubky_listen_socket = \"127.0.0.1:0\"\n{}\n\
             [admin]\nlisten_socket = \"127.0.0.1:0\"\nadmin_password = {ADMIN_PASSWORD:?}\n\n{storage}\n\
             [pkdns]\n{}\ndht_relay_nodes = []\ndht_request_timeout_ms = 500\n{}\n{}",
            self.icann_port,
            self.drive_config,
            bootstrap_line(&self.bootstrap),
            self.pkdns_config,
            self.extra_config
        )
    }
}

/// A configured data directory with its database and bucket, the server not started yet.
pub struct PreparedServer {
    data_dir: TempDir,
    backends: (Metadata, Blobs),
    database: Option<Arc<TestDatabase>>,
    bucket: Option<Arc<TestBucket>>,
    launch: Launch,
}

impl PreparedServer {
    /// The data directory (its `config.toml` names the database and bucket).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Starts the server and waits until it is ready.
    pub async fn start(self) -> TestServer {
        TestServer::spawn(
            self.data_dir,
            self.backends,
            self.database,
            self.bucket,
            self.launch,
        )
        .await
    }
}

/// How a server's process is started: the binary and its open-file limit.
#[derive(Debug, Clone, Default)]
struct Launch {
    open_files: Option<u64>,
    binary: Option<PathBuf>,
}

/// The admin password of test servers.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// A running `homestead` process. Killed (and its database dropped) when this value is dropped.
pub struct TestServer {
    child: Child,
    public_key: String,
    icann: SocketAddr,
    pubky_tls: SocketAddr,
    admin: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    metadata: Metadata,
    blobs: Blobs,
    // Dropped after the child: the database, bucket and directory outlive the process.
    database: Option<Arc<TestDatabase>>,
    bucket: Option<Arc<TestBucket>>,
    data_dir: TempDir,
    launch: Launch,
}

/// The binary under test: `TEST_HOMESTEAD_BIN`, else the root workspace's debug build.
pub fn binary() -> PathBuf {
    std::env::var_os("TEST_HOMESTEAD_BIN").map_or_else(
        || {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
                PathBuf::from,
            );
            target.join("debug/homestead")
        },
        PathBuf::from,
    )
}

impl TestServer {
    async fn spawn(
        data_dir: TempDir,
        (metadata, blobs): (Metadata, Blobs),
        database: Option<Arc<TestDatabase>>,
        bucket: Option<Arc<TestBucket>>,
        launch: Launch,
    ) -> Self {
        let log =
            std::fs::File::create(data_dir.path().join("server.log")).expect("create the log");
        let program = launch.binary.clone().unwrap_or_else(binary);
        let mut command = match launch.open_files {
            Some(limit) => {
                let mut prlimit = Command::new("prlimit");
                prlimit
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg(&program);
                prlimit
            }
            None => Command::new(&program),
        };
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if line == "ready" {
                    return true;
                }
                banner.push(line);
            }
            false
        })
        .await;
        if read != Ok(true) {
            let _ = child.start_kill();
            let log =
                std::fs::read_to_string(data_dir.path().join("server.log")).unwrap_or_default();
            panic!("homestead did not get ready ({read:?}); stdout: {banner:?}\nlog:\n{log}");
        }
        let field = |name: &str| {
            banner.iter().find_map(|line| {
                line.trim()
                    .strip_prefix(name)
                    .map(|rest| rest.trim().to_string())
            })
        };
        let addr = |name: &str| {
            field(name).map(|value| {
                let value = value.split_whitespace().next().unwrap_or_default();
                let host_port = value.split_once("://").map_or(value, |(_, rest)| rest);
                host_port.parse::<SocketAddr>().expect("socket address")
            })
        };
        TestServer {
            public_key: field("public-key").expect("public key in the banner"),
            icann: addr("icann").expect("icann address"),
            pubky_tls: addr("pubky-tls").expect("pubky-tls address"),
            admin: addr("admin"),
            metrics: addr("metrics"),
            child,
            metadata,
            blobs,
            database,
            bucket,
            data_dir,
            launch,
        }
    }

    /// The server's public key (z32).
    pub fn public_key(&self) -> PublicKey {
        PublicKey::try_from_z32(&self.public_key).expect("valid key")
    }

    /// Which metadata database the server runs on.
    pub fn metadata(&self) -> Metadata {
        self.metadata
    }

    /// `http://127.0.0.1:<port>` of the ICANN listener.
    pub fn icann_url(&self) -> String {
        format!("http://{}", self.icann)
    }

    /// The ICANN listener.
    pub fn icann_addr(&self) -> SocketAddr {
        self.icann
    }

    /// The PubkyTLS listener.
    pub fn pubky_tls_addr(&self) -> SocketAddr {
        self.pubky_tls
    }

    /// `http://127.0.0.1:<port>` of the admin listener, when enabled.
    pub fn admin_url(&self) -> Option<String> {
        self.admin.map(|a| format!("http://{a}"))
    }

    /// `GET /metrics` on the metrics listener (enable it with `[metrics]` in [`TestServerBuilder::config`]).
    pub async fn metrics(&self) -> String {
        let addr = self.metrics.expect("metrics listener enabled");
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics body")
    }

    /// Calls an admin route with the default test password; returns the status and body.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, String) {
        let url = format!(
            "{}{path}",
            self.admin_url().expect("admin listener enabled")
        );
        let response = reqwest::Client::new()
            .request(method, url)
            .header("x-admin-password", ADMIN_PASSWORD)
            .send()
            .await
            .expect("admin request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("admin response body"))
    }

    /// Mints a signup token through the admin API.
    pub async fn signup_token(&self) -> String {
        let (status, token) = self
            .admin(reqwest::Method::GET, "/generate_signup_token")
            .await;
        assert_eq!(status, 200, "{token}");
        token
    }

    /// Ends every connection to the server's database (shared with its other instances) that listens
    /// on `channel`.
    pub fn terminate_database_listeners(&self, channel: &str) {
        self.database
            .as_ref()
            .expect("a server on PostgreSQL")
            .terminate_listeners(channel);
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The server's process id (for reading its memory use).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("server.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn stop(mut self) -> ExitStatus {
        self.terminate().await
    }

    /// [`TestServer::stop`], then the whole log (the server writes out buffered lines as it exits).
    pub async fn stop_with_log(mut self) -> (ExitStatus, String) {
        let status = self.terminate().await;
        (status, self.log())
    }

    /// Stops the process and starts it again on the same data directory, database and bucket, with
    /// `bootstrap` as its DHT (e.g. a fresh network that has forgotten every record).
    pub async fn restart_with_bootstrap(mut self, bootstrap: &[String]) -> TestServer {
        let status = self.terminate().await;
        assert!(status.success(), "{}", self.log());
        let config_path = self.data_dir.path().join("config.toml");
        let config = std::fs::read_to_string(&config_path).expect("read config.toml");
        let config: Vec<String> = config
            .lines()
            .map(|line| {
                if line.starts_with("dht_bootstrap_nodes") {
                    bootstrap_line(bootstrap)
                } else {
                    line.to_string()
                }
            })
            .collect();
        std::fs::write(&config_path, config.join("\n")).expect("write config.toml");
        let TestServer {
            metadata,
            blobs,
            database,
            bucket,
            data_dir,
            launch,
            ..
        } = self;
        TestServer::spawn(data_dir, (metadata, blobs), database, bucket, launch).await
    }

    /// A rolling restart's step: SIGTERM, a clean exit (asserted), and a start on the same data directory,
    /// config and ports; returns how long the process took to exit, and the new server.
    pub async fn stop_and_start(mut self) -> (Duration, TestServer) {
        let asked = std::time::Instant::now();
        let status = self.terminate().await;
        let exit = asked.elapsed();
        assert!(status.success(), "{}", self.log());
        (exit, self.restart().await)
    }

    /// Runs `sql` on the server's PostgreSQL database (shared with its other instances); the first
    /// column of the first row as text.
    pub fn database_value(&self, sql: &str) -> String {
        self.database
            .as_ref()
            .expect("a server on PostgreSQL")
            .value(sql)
    }

    /// Kills the process with SIGKILL: it gets no chance to finish anything.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL the server");
    }

    /// Starts a stopped or killed server again on the same data directory, database and bucket.
    pub async fn restart(self) -> TestServer {
        let TestServer {
            metadata,
            blobs,
            database,
            bucket,
            data_dir,
            launch,
            ..
        } = self;
        TestServer::spawn(data_dir, (metadata, blobs), database, bucket, launch).await
    }

    /// How many blobs the blob store holds (filesystem and S3 backends).
    pub async fn blob_count(&self) -> usize {
        match (&self.bucket, self.blobs) {
            (Some(bucket), _) => {
                let url = format!("{}/{}?list-type=2", bucket.endpoint, bucket.name);
                let listing = reqwest::get(url)
                    .await
                    .expect("list the bucket")
                    .text()
                    .await
                    .unwrap();
                assert!(
                    !listing.contains("<IsTruncated>true"),
                    "more than one page of blobs"
                );
                listing.matches("<Key>").count()
            }
            (None, Blobs::Fs) => count_files(&self.data_dir.path().join("blobs")),
            (None, blobs) => panic!("cannot count the blobs of {blobs:?}"),
        }
    }

    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().expect("running") as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exit within 30 s of SIGTERM")
            .expect("wait for the child")
    }
}
