//! AuthToken checks for sign-up and sign-in (PROTOCOL.md §6.2): `pubky-common` decodes the token and
//! checks its version, ±3-minute window and signature; the replay check is ours and lives in the
//! metadata database, so that instances sharing PostgreSQL refuse each other's replays.

use homestead_backends::Store;
use pubky_common::auth::AuthToken;

use crate::http_error::HttpError;

/// How long a token id is remembered after its timestamp: twice the validity window.
const REMEMBER_MICROS: i64 = 360 * 1_000_000;

/// Verifies the token in `body` and records it as used. Every refusal is a 400 with the protocol's
/// message; a replay (of a token accepted by any instance, at sign-up or sign-in) is refused.
pub async fn verify_once(store: &Store, body: &[u8]) -> Result<AuthToken, HttpError> {
    let token = AuthToken::verify(body).map_err(|err| HttpError::bad_request(err.to_string()))?;
    let timestamp = token.timestamp().as_u64();
    let mut id = Vec::with_capacity(40);
    id.extend_from_slice(&timestamp.to_be_bytes());
    id.extend_from_slice(token.public_key().as_bytes());
    let expires_at = i64::try_from(timestamp)
        .unwrap_or(i64::MAX)
        .saturating_add(REMEMBER_MICROS);
    if store.use_auth_token(&id, expires_at).await? {
        Ok(token)
    } else {
        Err(HttpError::bad_request("AuthToken already used"))
    }
}
