//! Homestead's Tower layers. Each module holds one concern as a `Layer` + `Service` pair that depends on
//! small traits, never on a database, and is unit-tested through `tower::ServiceExt::oneshot`.

pub mod auth;
pub mod bandwidth;
pub mod body_size;
pub mod drain;
pub mod gate;
pub mod hook;
pub mod peer;
mod plain_text;
pub mod query;
pub mod rate_limit;
pub mod tenant;

pub use auth::{
    Account, AuthLayer, AuthService, Authentication, Credential, CredentialLookup, GrantSession,
    Principal, Session, bearer_token,
};
pub use bandwidth::{
    BandwidthLayer, BandwidthPolicy, BandwidthService, Rate, Throttled, UserRates,
};
pub use body_size::{BodySizeLayer, BodySizeService};
pub use drain::{DrainLayer, DrainService};
pub use gate::{Gate, GateService};
pub use hook::{Hook, HookFuture, HookLayer, HookService};
pub use peer::{Peer, PeerLayer, PeerService, Transport, TrustedProxies};
pub use plain_text::plain_text;
pub use rate_limit::{RateLimitLayer, RateLimitService, SharedBuckets, SpendFuture};
pub use tenant::{Tenant, TenantLayer, TenantService};
