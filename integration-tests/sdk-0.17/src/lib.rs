//! Black-box tests of Homestead driven by the newest official Pubky SDK (pubky 0.17.1): grant sign-up and
//! sign-in, keyless applications approved through an HTTP relay, grant management, and the deprecated
//! cookie calls, on the local DHT testnet of [`TestNet`].
//!
//! The server side of the harness (the [`TestServer`] builder, its PostgreSQL databases and S3 buckets,
//! the reference homeserver as a process, [`eventually`] and [`on_main_backend_pairs!`]) is the 0.9.3
//! suite's own source, included from `../src`;
//! only the SDK glue ([`TestNet`]) is written for 0.17.1.
//!
//! Environment (set by `scripts/test`): `TEST_HOMESTEAD_BIN` (the binary), `TEST_PG_ADMIN_URL` (a
//! PostgreSQL connection allowed to create databases), `TEST_S3_ENDPOINT` (an S3-compatible server).

mod calls;
#[path = "../../src/reference.rs"]
mod reference;
#[path = "../../src/resources.rs"]
mod resources;
#[path = "../../src/server.rs"]
mod server;
#[path = "../../src/support.rs"]
mod support;
mod testnet;

pub use calls::{
    bearer_call, client_id, keyless_app, put_created, refresh_status, server_error, sign_out,
};
pub use reference::{Reference, ReferenceOptions, reference_binary};
pub use resources::{TestBucket, TestDatabase, free_port};
pub use server::{
    ADMIN_PASSWORD, Blobs, Metadata, PreparedServer, TestServer, TestServerBuilder, binary,
};
pub use support::eventually;
pub use testnet::{Relay, TestNet};
