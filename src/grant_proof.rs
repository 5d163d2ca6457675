//! Grants and their proofs of possession (PROTOCOL-0.17.md §3, §5–§6): compact JWS signed with Ed25519.
//! A grant is signed by the user (`iss`) and names a client key (`cnf`); a proof is signed by that client
//! key for this server (`aud`) and this grant (`gid`), with a single-use nonce. The claim sets are
//! `pubky-common`'s types, so a claim the SDK cannot have written (a bad key, capability, id or client
//! id) fails as it does in the reference; signatures are checked by `jsonwebtoken`, EdDSA only.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, TokenData, Validation};
use pubky_common::auth::grant::GrantClaims;
use pubky_common::auth::pop::PopProofClaims;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::http_error::HttpError;

/// How far a proof's `iat` may be from the server's clock, either way, in seconds.
pub const POP_WINDOW_SECS: u64 = 180;

/// A signup grant may be issued at most this far in the future, in seconds.
const SIGNUP_IAT_SKEW_SECS: u64 = 180;

/// The longest life of a signup grant, in seconds.
const SIGNUP_LIFETIME_SECS: u64 = 300;

/// The `client_id` every signup grant carries.
const SIGNUP_CLIENT_ID: &str = "pubky.signup";

/// Why a grant was refused (§5.3), in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// The payload is not a claim set the SDK could have written.
    Format,
    /// The header, algorithm or signature does not verify with `iss`.
    Signature,
    /// The header's `typ` is not `pubky-grant`.
    HeaderType,
    /// `exp` is not in the future.
    Expired,
}

impl From<GrantError> for HttpError {
    fn from(err: GrantError) -> Self {
        let (status, reason) = match err {
            GrantError::Format => (StatusCode::BAD_REQUEST, "invalid grant format"),
            GrantError::Signature => (StatusCode::UNAUTHORIZED, "invalid grant signature"),
            GrantError::HeaderType => (
                StatusCode::BAD_REQUEST,
                "invalid grant header type, expected pubky-grant",
            ),
            GrantError::Expired => (StatusCode::UNAUTHORIZED, "grant has expired"),
        };
        HttpError::new(status, format!("Invalid grant: {reason}"))
    }
}

/// Why a proof of possession was refused (§6.2), in the order the checks run. All are 401s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopError {
    /// The header, signature (by the grant's `cnf`) or claims do not do.
    Signature,
    /// The header's `typ` is not `pubky-pop`.
    HeaderType,
    /// `aud` is not this server's key.
    Audience,
    /// `gid` is not the grant's `jti`.
    GrantId,
    /// `iat` is more than [`POP_WINDOW_SECS`] away from now.
    Timestamp,
}

impl From<PopError> for HttpError {
    fn from(err: PopError) -> Self {
        let reason = match err {
            PopError::Signature => "invalid PoP signature",
            PopError::HeaderType => "invalid PoP header type, expected pubky-pop",
            PopError::Audience => "PoP audience mismatch",
            PopError::GrantId => "PoP grant ID mismatch",
            PopError::Timestamp => "PoP timestamp out of range",
        };
        HttpError::new(
            StatusCode::UNAUTHORIZED,
            format!("Invalid PoP proof: {reason}"),
        )
    }
}

/// A string with the shape of a compact JWS: exactly three `.`-separated parts (§9.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactJws(String);

impl CompactJws {
    /// The compact serialization.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CompactJws {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.split('.').count() != 3 {
            return Err(serde::de::Error::custom(
                "JWS Compact Serialization must have exactly 3 dot-separated parts",
            ));
        }
        Ok(Self(text))
    }
}

/// The body of the grant routes that take a proof: `{"grant": …, "pop": …}` (other members ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct GrantProof {
    /// The grant JWS.
    pub grant: CompactJws,
    /// The proof-of-possession JWS.
    pub pop: CompactJws,
}

/// EdDSA only; no registered claim is checked by the library (the protocol's own rules are ours).
static EDDSA_ONLY: LazyLock<Validation> = LazyLock::new(|| {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation
});

/// Decodes `compact`, verifying its EdDSA signature with `key`.
fn decode_signed<T: DeserializeOwned>(
    compact: &str,
    key: &pkarr::PublicKey,
) -> Result<TokenData<T>, jsonwebtoken::errors::Error> {
    let key = DecodingKey::from_ed_der(key.as_bytes());
    jsonwebtoken::decode(compact, &key, &EDDSA_ONLY)
}

/// §5.2 steps 1–3: the claims of a grant whose signature and header verify, expired or not (proof
/// logout accepts expired grants).
pub fn verify_grant_signature(compact: &str) -> Result<GrantClaims, GrantError> {
    let unverified = GrantClaims::decode(compact).map_err(|_| GrantError::Format)?;
    let verified = decode_signed::<GrantClaims>(compact, &unverified.iss)
        .map_err(|_| GrantError::Signature)?;
    if verified.header.typ.as_deref() != Some("pubky-grant") {
        return Err(GrantError::HeaderType);
    }
    Ok(verified.claims)
}

/// §5.2: the claims of a verified grant that has not expired at `now` (Unix seconds).
pub fn verify_grant(compact: &str, now: u64) -> Result<GrantClaims, GrantError> {
    let claims = verify_grant_signature(compact)?;
    if claims.exp <= now {
        return Err(GrantError::Expired);
    }
    Ok(claims)
}

/// §6.2: the claims of a proof signed by `grant`'s client key for `server` and this grant, issued
/// within [`POP_WINDOW_SECS`] of `now`. Its nonce is still to be consumed.
pub fn verify_pop(
    compact: &str,
    grant: &GrantClaims,
    server: &pkarr::PublicKey,
    now: u64,
) -> Result<PopProofClaims, PopError> {
    let verified =
        decode_signed::<PopProofClaims>(compact, &grant.cnf).map_err(|_| PopError::Signature)?;
    if verified.header.typ.as_deref() != Some("pubky-pop") {
        return Err(PopError::HeaderType);
    }
    let claims = verified.claims;
    if claims.aud.as_inner() != server {
        return Err(PopError::Audience);
    }
    if claims.gid != grant.jti {
        return Err(PopError::GrantId);
    }
    if claims.iat.abs_diff(now) > POP_WINDOW_SECS {
        return Err(PopError::Timestamp);
    }
    Ok(claims)
}

/// Whether the grant holds a root capability (§4.2).
pub fn is_root(grant: &GrantClaims) -> bool {
    grant.caps.iter().any(|capability| capability.is_root())
}

/// §9.1 steps 5–7: what a signup grant must be beyond a valid grant.
pub fn check_signup_grant(grant: &GrantClaims, now: u64) -> Result<(), HttpError> {
    if grant.client_id.as_str() != SIGNUP_CLIENT_ID {
        return Err(HttpError::bad_request(
            "signup grants must use client_id pubky.signup",
        ));
    }
    if !is_root(grant) {
        return Err(root_required());
    }
    if grant.iat > now.saturating_add(SIGNUP_IAT_SKEW_SECS) {
        return Err(HttpError::bad_request(
            "signup grant iat is too far in the future",
        ));
    }
    if grant.exp.saturating_sub(grant.iat) > SIGNUP_LIFETIME_SECS {
        return Err(HttpError::bad_request(
            "signup grant lifetime exceeds 5 minutes",
        ));
    }
    Ok(())
}

/// 403 for a request that needs a root capability.
pub fn root_required() -> HttpError {
    HttpError::new(StatusCode::FORBIDDEN, "Root capability required")
}

/// The capabilities of a grant in display form, comma-joined, in grant order (how they are stored).
pub fn capability_list(grant: &GrantClaims) -> String {
    let shown: Vec<String> = grant.caps.iter().map(ToString::to_string).collect();
    shown.join(",")
}

/// A fresh bearer token (§8.1): 32 random bytes, base64url without padding (43 characters).
pub fn new_bearer() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use pubky_common::crypto::Keypair;

    use super::*;

    /// §24.2, G1: a session grant of the user seed 00 for client seed 01, valid until 2100.
    pub(crate) const G1: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6InB1Ymt5LWdyYW50In0.eyJpc3MiOiI4cGlueHhncXM0MW40YWlkaWRlbnc1YXBxcDF1cmZtemR6dHI4anQ0YWJya2RuNDM1ZXdvIiwiY2xpZW50X2lkIjoiZXhhbXBsZS5hcHAiLCJjYXBzIjpbIi9wdWIvZXhhbXBsZS5hcHAvOnJ3IiwiL3ByaXYvZXhhbXBsZS5hcHAvOnIiXSwiY25mIjoidGtycTh6bXdiOGEzbTlrMTVjc3UzcTE3cW1mZ3FucDlkc2ticmc5dXExcnlkcHl4cDdxeSIsImp0aSI6IkFBRUNBd1FGQmdjSUNRb0xEQTBPRHciLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0.wTDuRQsDiE20kCrahWzdg28HR0n3jZ2kppk5veu1ujvpwGXeTeIZdBhiKH7zKUHdijzMyQh_Pyn-VFWw1C2zDw";
    /// §24.3, G2: a signup grant that expired in 2023.
    const G2: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6InB1Ymt5LWdyYW50In0.eyJpc3MiOiI4cGlueHhncXM0MW40YWlkaWRlbnc1YXBxcDF1cmZtemR6dHI4anQ0YWJya2RuNDM1ZXdvIiwiY2xpZW50X2lkIjoicHVia3kuc2lnbnVwIiwiY2FwcyI6WyIvOnJ3Il0sImNuZiI6InRrcnE4em13YjhhM205azE1Y3N1M3ExN3FtZmdxbnA5ZHNrYnJnOXVxMXJ5ZHB5eHA3cXkiLCJqdGkiOiJBQUVDQXdRRkJnY0lDUW9MREEwT0R3IiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAzMDB9.MuArnQfuLiwVm49L_u5k9Zm-e-ZX_f74WsXdYVX2Fn3WWs741BpPwYf4CTZl4NZkNm9F8kzXDLe5WSvhfqrgBA";
    /// §24.3, P1: a proof for G1/G2 on the server seed 02 at 1700000000.
    const P1: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6InB1Ymt5LXBvcCJ9.eyJhdWQiOiJvcmh6cWRpZXh3bWk2aWlka3R1Y2d1ZDYzdWZhNW53dHN1emR4ZTE3NmE4aXpkNmpzcWt5IiwiZ2lkIjoiQUFFQ0F3UUZCZ2NJQ1FvTERBME9EdyIsIm5vbmNlIjoiRUJFU0V4UVZGaGNZR1JvYkhCMGVIdyIsImlhdCI6MTcwMDAwMDAwMH0.bj7vDvvTmI2Cf0wEsLP8pNh7QcRP5q-yBu9buMup9Uvuy7JkuJxwblr10dLy6CL5jcGdh-0vs0tkdPm3n1O6Cw";
    /// §24.3, G1-JWT: G1's claims under `typ: JWT`, validly signed.
    const G1_JWT: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJpc3MiOiI4cGlueHhncXM0MW40YWlkaWRlbnc1YXBxcDF1cmZtemR6dHI4anQ0YWJya2RuNDM1ZXdvIiwiY2xpZW50X2lkIjoiZXhhbXBsZS5hcHAiLCJjYXBzIjpbIi9wdWIvZXhhbXBsZS5hcHAvOnJ3IiwiL3ByaXYvZXhhbXBsZS5hcHAvOnIiXSwiY25mIjoidGtycTh6bXdiOGEzbTlrMTVjc3UzcTE3cW1mZ3FucDlkc2ticmc5dXExcnlkcHl4cDdxeSIsImp0aSI6IkFBRUNBd1FGQmdjSUNRb0xEQTBPRHciLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0.YwI2QEZTbUJ5aKY1S9Ro0y7HobPeeERg7e2WgSGVNPGVvyoukl4KgjgBBn6F03nLaYKw_FIBuLcqG-66xAeICg";

    const NOW: u64 = 1_700_000_000;

    fn seed(byte: u8) -> Keypair {
        Keypair::from_secret(&[byte; 32])
    }

    /// A JWS with `header` JSON over `claims` JSON, signed by `key`.
    fn sign(key: &Keypair, header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn claims_json(caps: &str) -> String {
        format!(
            r#"{{"iss":"{}","client_id":"example.app","caps":{caps},"cnf":"{}","jti":"AAECAwQFBgcICQoLDA0ODw","iat":{NOW},"exp":4102444800}}"#,
            seed(0).public_key().z32(),
            seed(1).public_key().z32()
        )
    }

    const GRANT_HEADER: &str = r#"{"alg":"EdDSA","typ":"pubky-grant"}"#;
    const POP_HEADER: &str = r#"{"alg":"EdDSA","typ":"pubky-pop"}"#;

    #[test]
    fn the_spec_vectors_verify_as_the_reference_does() {
        let g1 = verify_grant(G1, NOW).unwrap();
        assert_eq!(g1.iss, seed(0).public_key());
        assert_eq!(g1.cnf, seed(1).public_key());
        assert_eq!(g1.jti.as_str(), "AAECAwQFBgcICQoLDA0ODw");
        assert_eq!(
            capability_list(&g1),
            "/pub/example.app/:rw,/priv/example.app/:r"
        );
        assert!(!is_root(&g1));
        // G1 is also signed the same way as our own signer would (Ed25519 is deterministic).
        let ours = sign(
            &seed(0),
            GRANT_HEADER,
            &claims_json(r#"["/pub/example.app/:rw","/priv/example.app/:r"]"#),
        );
        assert_eq!(ours, G1);

        assert_eq!(verify_grant(G2, NOW + 301), Err(GrantError::Expired));
        assert!(verify_grant_signature(G2).is_ok(), "proof logout skips exp");
        assert_eq!(verify_grant(G1_JWT, NOW), Err(GrantError::HeaderType));
        let tampered = format!("{}x", &G1[..G1.len() - 1]);
        assert_eq!(verify_grant(&tampered, NOW), Err(GrantError::Signature));

        let hs = seed(2).public_key();
        let p1 = verify_pop(P1, &g1, &hs, NOW).unwrap();
        assert_eq!(p1.nonce.as_str(), "EBESExQVFhcYGRobHB0eHw");
        assert_eq!(
            verify_pop(P1, &g1, &seed(3).public_key(), NOW).unwrap_err(),
            PopError::Audience
        );
        assert_eq!(
            verify_pop(P1, &g1, &hs, NOW + 181).unwrap_err(),
            PopError::Timestamp
        );
        assert!(
            verify_pop(P1, &g1, &hs, NOW - 180).is_ok(),
            "bounds inclusive"
        );
    }

    #[test]
    fn grant_refusals_follow_the_step_order() {
        // A root grant's claims under `header`, signed by the key of seed `key`.
        let root = |key: u8, header: &str| sign(&seed(key), header, &claims_json(r#"["/:rw"]"#));
        let cases = [
            // Step 1: claims the SDK could not have written.
            (
                sign(&seed(0), GRANT_HEADER, &claims_json(r#"["/pub/x:"]"#)),
                GrantError::Format,
            ),
            (sign(&seed(0), GRANT_HEADER, "{}"), GrantError::Format),
            (
                sign(&seed(0), GRANT_HEADER, &claims_json(r#""/:rw""#)),
                GrantError::Format,
            ),
            ("a.b.c".to_string(), GrantError::Format),
            // Step 2: the wrong signer, a non-EdDSA algorithm, an unreadable header.
            (root(5, GRANT_HEADER), GrantError::Signature),
            (
                root(0, r#"{"alg":"HS256","typ":"pubky-grant"}"#),
                GrantError::Signature,
            ),
            (root(0, "not json"), GrantError::Signature),
            // Step 3: a missing or different typ.
            (root(0, r#"{"alg":"EdDSA"}"#), GrantError::HeaderType),
            (
                root(0, r#"{"alg":"EdDSA","typ":"Pubky-Grant"}"#),
                GrantError::HeaderType,
            ),
        ];
        for (jws, expected) in cases {
            assert_eq!(verify_grant(&jws, NOW), Err(expected), "{jws}");
        }
        // Duplicate known claims make the claim set undecodable.
        let duplicated = claims_json(r#"["/:rw"]"#).replacen('{', r#"{"jti":"a","#, 1);
        assert_eq!(
            verify_grant(&sign(&seed(0), GRANT_HEADER, &duplicated), NOW),
            Err(GrantError::Format)
        );
        // The `e` action is accepted and kept.
        let with_e = sign(&seed(0), GRANT_HEADER, &claims_json(r#"["/:erw"]"#));
        let grant = verify_grant(&with_e, NOW).unwrap();
        assert_eq!(capability_list(&grant), "/:rwe");
        assert!(is_root(&grant));
    }

    #[test]
    fn pop_refusals_follow_the_step_order() {
        let grant = verify_grant(G1, NOW).unwrap();
        let hs = seed(2).public_key();
        let pop = |key: u8, header: &str, gid: &str, iat: u64| {
            let claims = format!(
                r#"{{"aud":"{}","gid":"{gid}","nonce":"n1","iat":{iat}}}"#,
                hs.z32()
            );
            sign(&seed(key), header, &claims)
        };
        let gid = "AAECAwQFBgcICQoLDA0ODw";
        assert!(verify_pop(&pop(1, POP_HEADER, gid, NOW), &grant, &hs, NOW).is_ok());
        let cases = [
            (pop(7, POP_HEADER, gid, NOW), PopError::Signature),
            (pop(1, POP_HEADER, "a.b", NOW), PopError::Signature),
            (pop(1, GRANT_HEADER, gid, NOW), PopError::HeaderType),
            (pop(1, POP_HEADER, "other", NOW), PopError::GrantId),
            (pop(1, POP_HEADER, gid, NOW - 181), PopError::Timestamp),
            (pop(1, POP_HEADER, gid, NOW + 181), PopError::Timestamp),
        ];
        for (jws, expected) in cases {
            assert_eq!(verify_pop(&jws, &grant, &hs, NOW).unwrap_err(), expected);
        }
        assert!(verify_pop(&pop(1, POP_HEADER, gid, NOW + 175), &grant, &hs, NOW).is_ok());
    }

    #[test]
    fn signup_grants_have_their_own_rules() {
        let grant = |client: &str, caps: &str, iat: u64, exp: u64| {
            let claims = format!(
                r#"{{"iss":"{}","client_id":"{client}","caps":{caps},"cnf":"{}","jti":"j","iat":{iat},"exp":{exp}}}"#,
                seed(0).public_key().z32(),
                seed(1).public_key().z32()
            );
            verify_grant(&sign(&seed(0), GRANT_HEADER, &claims), 0).unwrap()
        };
        let message = |g: GrantClaims| {
            check_signup_grant(&g, NOW)
                .err()
                .map(|e| (e.status.as_u16(), e.message))
        };
        assert_eq!(
            message(grant("pubky.signup", r#"["/:rw"]"#, NOW, NOW + 300)),
            None
        );
        assert_eq!(
            message(grant("example.app", r#"["/:rw"]"#, NOW, NOW + 300)),
            Some((400, "signup grants must use client_id pubky.signup".into()))
        );
        assert_eq!(
            message(grant("pubky.signup", r#"["/pub/:rw"]"#, NOW, NOW + 300)),
            Some((403, "Root capability required".into()))
        );
        assert_eq!(
            message(grant("pubky.signup", r#"["/:rw"]"#, NOW, NOW + 301)),
            Some((400, "signup grant lifetime exceeds 5 minutes".into()))
        );
        assert_eq!(
            message(grant("pubky.signup", r#"["/:rw"]"#, NOW + 200, NOW + 500)),
            Some((400, "signup grant iat is too far in the future".into()))
        );
        // exp before iat passes the lifetime rule (saturating), as in the reference.
        assert_eq!(
            message(grant("pubky.signup", r#"["/:rw"]"#, NOW, NOW - 10)),
            None
        );
    }

    #[test]
    fn bearers_are_43_characters_stored_as_their_hash() {
        let token = new_bearer();
        assert_eq!(token.len(), 43);
        assert_ne!(token, new_bearer());
        assert_eq!(
            // What is stored of a bearer is its hash as a session secret's: SHA-256 of its 43 characters.
            hex::encode(crate::session_cookie::secret_hash(
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
            )),
            "ea866a757e4c38babfa8127cbe9a409d3e1f93a00ff1488ff735fcf917afffd0"
        );
    }

    #[test]
    fn bodies_need_two_three_part_strings() {
        let parse = |json: &str| serde_json::from_str::<GrantProof>(json).map(|_| ());
        assert!(parse(r#"{"grant":"a.b.c","pop":"d.e.f","extra":1}"#).is_ok());
        let err = parse(r#"{"grant":"a.b","pop":"a.b.c"}"#).unwrap_err();
        assert!(
            err.to_string().contains("exactly 3 dot-separated parts"),
            "{err}"
        );
        assert!(parse(r#"{"grant":"a.b.c"}"#).is_err());
        assert!(parse(r#"{"grant":1,"pop":"a.b.c"}"#).is_err());
    }
}
