//! Homestead's Tower layers. Each module holds one concern as a `Layer` + `Service` pair that depends on
//! small traits, never on a database, and is unit-tested through `tower::ServiceExt::oneshot`.

pub mod bandwidth;
pub mod drain;
pub mod peer;
mod plain_text;
pub mod query;
pub mod quota;
pub mod rate_limit;
pub mod session;
pub mod signup;
pub mod tenant;

pub use bandwidth::{
    BandwidthLayer, BandwidthPolicy, BandwidthService, Rate, Throttled, UserRates,
};
pub use drain::{DrainLayer, DrainService};
pub use peer::{Peer, PeerLayer, PeerService, Transport, TrustedProxies};
pub use quota::{QuotaLayer, QuotaLedger, QuotaService};
pub use rate_limit::{RateLimitLayer, RateLimitService};
pub use session::{Session, SessionLayer, SessionLookup, SessionService, SessionState};
pub use signup::{SignupGate, SignupLayer, SignupService, SignupTokens, TokenStatus};
pub use tenant::{Tenant, TenantLayer, TenantService};
