//! A Garage cluster for the tests that need a real distributed S3 store: three `garage server` processes
//! of `TEST_GARAGE_BIN` on loopback, replication factor 3, laid out and given a bucket and a key through
//! Garage's own CLI. Nodes can be stopped and started again one at a time (on the same directories and
//! ports) to take the store below and back above its write quorum of 2.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use crate::resources::TestBucket;
use crate::resources::free_port;
use crate::support::eventually;

/// The region the cluster signs for (Garage's `s3_api.s3_region`).
pub const GARAGE_REGION: &str = "garage";

/// The Garage binary: `TEST_GARAGE_BIN`, or a panic that says how to get one.
pub fn garage_binary() -> PathBuf {
    std::env::var_os("TEST_GARAGE_BIN").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "TEST_GARAGE_BIN is not set: this test needs Garage; run it with `scripts/cluster test` \
             (which installs Garage once into ~/.cache/homestead/garage)"
        )
    })
}

/// One node: its config file, its S3 and admin addresses, and its process while it runs.
struct Node {
    config: PathBuf,
    s3: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

/// Three Garage nodes on loopback holding one bucket; every node is killed when this value is dropped.
pub struct GarageCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    bucket: Arc<TestBucket>,
    _dir: TempDir,
}

/// 32 random bytes as hex, for the cluster's RPC secret.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The config of node `dir` on its three ports.
fn node_config(
    dir: &Path,
    secret: &str,
    rpc: SocketAddr,
    s3: SocketAddr,
    admin: SocketAddr,
) -> String {
    let d = dir.display();
    format!(
        "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
         replication_factor = 3\nrpc_secret = \"{secret}\"\nrpc_bind_addr = \"{rpc}\"\n\
         rpc_public_addr = \"{rpc}\"\n\n[s3_api]\ns3_region = \"{GARAGE_REGION}\"\napi_bind_addr = \"{s3}\"\n\
         root_domain = \".s3.garage.localhost\"\n\n[admin]\napi_bind_addr = \"{admin}\"\n"
    )
}

impl GarageCluster {
    /// Starts three nodes, connects them, applies a layout with each in zone `dc1`, creates bucket
    /// `homestead` and a key allowed to read and write it, and waits until every node reports healthy.
    pub async fn start() -> Self {
        let binary = garage_binary();
        let dir = tempfile::Builder::new()
            .prefix("homestead-garage-")
            .tempdir()
            .expect("create the Garage directory");
        let secret = random_hex();
        let mut nodes = Vec::new();
        let mut rpcs = Vec::new();
        for i in 0..3 {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).expect("create a node directory");
            let port = |_| SocketAddr::from(([127, 0, 0, 1], free_port()));
            let (rpc, s3, admin) = (port(0), port(1), port(2));
            let config = node_dir.join("garage.toml");
            std::fs::write(&config, node_config(&node_dir, &secret, rpc, s3, admin))
                .expect("write garage.toml");
            rpcs.push(rpc);
            nodes.push(Node {
                config,
                s3,
                admin,
                log: node_dir.join("garage.log"),
                child: None,
            });
        }
        let mut cluster = Self {
            binary,
            nodes,
            bucket: Arc::new(TestBucket {
                name: String::new(),
                endpoint: String::new(),
                access_key_id: String::new(),
                secret_access_key: String::new(),
                region: GARAGE_REGION.into(),
            }),
            _dir: dir,
        };
        for i in 0..3 {
            cluster.start_node(i);
        }
        let mut ids = Vec::new();
        for i in 0..3 {
            let id = eventually("a Garage node answers", Duration::from_secs(30), || async {
                cluster.cli_on(i, &["node", "id", "-q"])
            })
            .await;
            ids.push(id.trim().split('@').next().expect("node id").to_string());
        }
        for (id, rpc) in ids.iter().zip(&rpcs).skip(1) {
            let peer = format!("{id}@{rpc}");
            eventually("Garage nodes connect", Duration::from_secs(30), || async {
                cluster.cli_on(0, &["node", "connect", &peer])
            })
            .await;
        }
        for id in &ids {
            cluster.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", id]);
        }
        cluster.cli(&["layout", "apply", "--version", "1"]);
        cluster.wait_healthy().await;
        cluster.cli(&["bucket", "create", "homestead"]);
        let key = cluster.cli(&["key", "create", "homestead-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|line| line.trim().strip_prefix(name))
                .map(|value| value.trim().to_string())
                .unwrap_or_else(|| panic!("no `{name}` in the output of `key create`:\n{key}"))
        };
        let (key_id, key_secret) = (field("Key ID:"), field("Secret key:"));
        cluster.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "homestead",
            "--key",
            "homestead-key",
        ]);
        cluster.bucket = Arc::new(TestBucket {
            name: "homestead".into(),
            endpoint: cluster.s3_endpoint(0),
            access_key_id: key_id,
            secret_access_key: key_secret,
            region: GARAGE_REGION.into(),
        });
        cluster
    }

    /// The bucket, with the endpoint of node 0, for [`crate::TestServerBuilder::bucket`].
    pub fn bucket(&self) -> Arc<TestBucket> {
        self.bucket.clone()
    }

    /// `http://<addr>` of node `i`'s S3 API.
    pub fn s3_endpoint(&self, i: usize) -> String {
        format!("http://{}", self.nodes[i].s3)
    }

    /// Stops node `i` with SIGKILL (as a crash or a pulled cable would).
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) node `i`: a node that holds its connections open and
    /// answers nothing, as an overloaded or partitioned machine would.
    pub fn freeze_node(&self, i: usize, frozen: bool) {
        let child = self.nodes[i].child.as_ref().expect("a running node");
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    }

    /// Starts node `i` (again) on its directories and ports.
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {i} runs already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open the Garage log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", self.binary.display()));
        node.child = Some(child);
    }

    /// Waits until every running node's admin API says the cluster can serve all requests.
    pub async fn wait_healthy(&self) {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!("http://{}/health", node.admin);
            eventually("Garage healthy", Duration::from_secs(60), || async {
                let status = reqwest::get(&url).await.map(|r| r.status().as_u16());
                match status {
                    Ok(200) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
        }
    }

    /// What node `i` logged so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Runs the CLI on the first running node; panics with its output on failure.
    fn cli(&self, args: &[&str]) -> String {
        let i = self
            .nodes
            .iter()
            .position(|n| n.child.is_some())
            .expect("a running node");
        self.cli_on(i, args)
            .unwrap_or_else(|err| panic!("garage {}: {err}", args.join(" ")))
    }

    /// Runs `garage -c <node i's config> <args>`: its stdout, or its stderr as the error.
    fn cli_on(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .output()
            .map_err(|err| err.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }
}
