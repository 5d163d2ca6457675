//! AuthToken checks for sign-up and sign-in (PROTOCOL.md §6.2): `pubky-common` decodes the token and
//! checks its version, ±3-minute window and signature; the replay check is ours and lives in the
//! metadata database, so that instances sharing PostgreSQL refuse each other's replays.

use homestead_backends::Store;
use homestead_backends::metadata::now_micros;
use pubky_common::auth::AuthToken;

use crate::http_error::HttpError;

/// How long a token id is remembered after its timestamp: twice the validity window.
const REMEMBER_MICROS: i64 = 360 * 1_000_000;

/// Where the big-endian microsecond timestamp sits in a token.
const TIMESTAMP: std::ops::Range<usize> = 75..83;

/// Checks the token in `body` (version, time window, signature) without recording it.
pub fn verify(body: &[u8]) -> Result<AuthToken, HttpError> {
    // pubky-common subtracts the current time from the timestamp as `i64` and overflows (a panic in
    // debug builds) for timestamps past `i64::MAX`; such a token is from the far future anyway.
    if let Some(bytes) = body.get(TIMESTAMP) {
        let timestamp = u64::from_be_bytes(bytes.try_into().expect("eight bytes"));
        if body[74] == 0 && i64::try_from(timestamp).is_err() {
            return Err(HttpError::bad_request(
                "AuthToken has a timestamp that is more than 3 minutes in the future",
            ));
        }
    }
    AuthToken::verify(body).map_err(|err| HttpError::bad_request(err.to_string()))
}

/// Verifies the token in `body` and records it as used. Every refusal is a 400 with the protocol's
/// message; a replay (of a token accepted by any instance, at sign-up or sign-in) is refused.
pub async fn verify_once(store: &Store, body: &[u8]) -> Result<AuthToken, HttpError> {
    let token = verify(body)?;
    let timestamp = token.timestamp().as_u64();
    let mut id = Vec::with_capacity(40);
    id.extend_from_slice(&timestamp.to_be_bytes());
    id.extend_from_slice(token.public_key().as_bytes());
    let expires_at = i64::try_from(timestamp)
        .unwrap_or(i64::MAX)
        .saturating_add(REMEMBER_MICROS);
    if store
        .accounts()
        .use_auth_token(&id, expires_at, now_micros())
        .await?
    {
        Ok(token)
    } else {
        Err(HttpError::bad_request("AuthToken already used"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_past_i64_are_refused_not_overflowed() {
        let mut token = vec![0u8; 120];
        token[75] = 0x80;
        let err = verify(&token).unwrap_err();
        assert_eq!(
            err.message,
            "AuthToken has a timestamp that is more than 3 minutes in the future"
        );
        token[75] = 0;
        assert!(verify(&token).is_err());
    }
}
