//! `[drive] icann_client_identity` and `[drive] pubky_client_identity`: how a client listener learns the
//! client's address, in the newest reference's form: `{ mode = "direct" }` (the TCP peer) or
//! `{ mode = "proxy_protocol", trusted_proxies = ["10.0.0.0/8"] }` (a TCP load balancer in front names the
//! client in a PROXY protocol preface).

use serde::{Deserialize, Serialize};

use crate::values::IpRange;

/// How a client listener learns the client's address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Table", into = "Table")]
pub enum ClientIdentity {
    /// The TCP peer is the client.
    #[default]
    Direct,
    /// Every connection comes from a load balancer in `trusted_proxies` and starts with a PROXY protocol
    /// (v1 or v2) preface naming the client; other connections are refused.
    ProxyProtocol {
        /// Addresses or CIDR ranges the load balancers connect from; never empty.
        trusted_proxies: Vec<IpRange>,
    },
}

/// The inline table as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trusted_proxies: Option<Vec<IpRange>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Direct,
    ProxyProtocol,
}

impl TryFrom<Table> for ClientIdentity {
    type Error = &'static str;

    fn try_from(table: Table) -> Result<Self, Self::Error> {
        match (table.mode, table.trusted_proxies) {
            (Mode::Direct, None) => Ok(Self::Direct),
            (Mode::Direct, Some(_)) => {
                Err("`trusted_proxies` is only used with mode = \"proxy_protocol\"")
            }
            (Mode::ProxyProtocol, Some(ranges)) if !ranges.is_empty() => Ok(Self::ProxyProtocol {
                trusted_proxies: ranges,
            }),
            (Mode::ProxyProtocol, _) => Err(
                "mode = \"proxy_protocol\" needs a non-empty `trusted_proxies` list of the load \
                 balancers' addresses or CIDR ranges, e.g. [\"10.0.0.0/8\"]",
            ),
        }
    }
}

impl From<ClientIdentity> for Table {
    fn from(identity: ClientIdentity) -> Self {
        match identity {
            ClientIdentity::Direct => Self {
                mode: Mode::Direct,
                trusted_proxies: None,
            },
            ClientIdentity::ProxyProtocol { trusted_proxies } => Self {
                mode: Mode::ProxyProtocol,
                trusted_proxies: Some(trusted_proxies),
            },
        }
    }
}
