//! Homestead's Tower layers. Each module holds one concern as a `Layer` + `Service` pair that depends on
//! small traits, never on a database, and is unit-tested through `tower::ServiceExt::oneshot`.

pub mod peer;

pub use peer::{Peer, PeerLayer, PeerService, Transport};
