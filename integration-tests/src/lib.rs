//! Test harness for Homestead's black-box tests: a local Mainline DHT testnet that servers and SDK
//! clients share, and a [`TestServer`] builder that starts the `homestead` binary on a chosen pair of
//! metadata and blob backends, each with a fresh PostgreSQL database or S3 bucket of its own.
//!
//! ```no_run
//! # async fn story() {
//! use homestead_integration_tests::{Blobs, Metadata, TestNet};
//!
//! let net = TestNet::new();
//! let server = net.server().metadata(Metadata::Postgres).blobs(Blobs::S3).start().await;
//! let client = net.sdk_client();
//! let url = format!("https://{}/", server.public_key().z32());
//! # }
//! ```
//!
//! Environment (set by `scripts/test`): `TEST_HOMESTEAD_BIN` (the binary), `TEST_PG_ADMIN_URL` (a
//! PostgreSQL connection allowed to create databases), `TEST_S3_ENDPOINT` (an S3-compatible server);
//! `TEST_GARAGE_BIN` (a Garage binary) for the tests on a Garage cluster ([`GarageCluster`]);
//! `TEST_ALLOW_NO_TMPFS=1` lets the full-disk tests skip where a tmpfs cannot be mounted ([`SmallDisk`]).

mod accounts;
mod bodies;
mod browser;
mod garage;
pub mod machine;
mod nginx;
mod outages;
mod reference;
mod relays;
mod resources;
mod server;
mod small_disk;
mod support;
mod testnet;

pub use accounts::{Account, refusal};
pub use bodies::pseudo_random_bytes;
pub use browser::Browser;
pub use garage::{GARAGE_REGION, GarageCluster, garage_binary};
pub use nginx::{deploy_balancer, nginx_user_line, start_balancer, start_nginx};
pub use outages::{CuttableProxy, PrivatePostgres, socket_of};
pub use reference::{Reference, ReferenceOptions, reference_binary};
pub use relays::Relays;
pub use resources::{TestBucket, TestDatabase, free_port};
pub use server::{
    ADMIN_PASSWORD, Blobs, Metadata, PreparedServer, TestServer, TestServerBuilder, binary,
};
pub use small_disk::SmallDisk;
pub use support::eventually;
pub use testnet::TestNet;

/// A memory field of `/proc/<pid>/status` (`"VmRSS:"`, `"VmHWM:"`) in KiB; 0 when it cannot be read.
pub fn memory_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
}
