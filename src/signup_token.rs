//! Signup tokens (PROTOCOL.md §6.6, §12.1): in open mode every sign-up is admitted; in token-required mode
//! the `signup_token` query parameter must be present, well-formed, known and unused. The sign-up handler
//! judges the token first (a failed lookup answers 503 at once) but applies the verdict after its own
//! checks, because the protocol ranks a bad AuthToken (400) and an existing user (409) above token
//! errors. Redeeming the token stays the handler's job, atomically with creating the user, so that a
//! token is single-use even under a race.

use homestead_backends::{Store, StoreError};
use http::StatusCode;

use crate::http_error::HttpError;

/// What a signup token looks up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// No such token.
    Unknown,
    /// Minted and not yet redeemed.
    Unused,
    /// Already redeemed.
    Used,
}

/// Looks signup tokens up: the Store, or a stand-in in tests.
pub trait SignupTokens {
    /// The status of a well-formed token.
    fn status(&self, token: &str) -> impl Future<Output = Result<TokenStatus, StoreError>> + Send;
}

impl SignupTokens for Store {
    async fn status(&self, token: &str) -> Result<TokenStatus, StoreError> {
        Ok(match self.accounts().signup_token(token).await? {
            None => TokenStatus::Unknown,
            Some(record) if record.used_by.is_some() => TokenStatus::Used,
            Some(_) => TokenStatus::Unused,
        })
    }
}

/// The verdict on a sign-up's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Open mode: no token needed (any given is ignored).
    Open,
    /// Token-required mode with a valid unused token, to be redeemed with the sign-up.
    Admit(String),
    /// Token-required mode and the token does not do: 400 or 401 with the protocol's message.
    Refuse(HttpError),
}

impl Verdict {
    /// The token to redeem with the sign-up (None in open mode), or the refusal.
    pub fn admitted(self) -> Result<Option<String>, HttpError> {
        match self {
            Self::Open => Ok(None),
            Self::Admit(token) => Ok(Some(token)),
            Self::Refuse(refusal) => Err(refusal),
        }
    }
}

/// Whether `token` has the form of a signup token (§12.1): 14 characters that, hyphens removed, are all
/// Crockford base32 digits (either case, no `U`). Where the hyphens sit is not checked.
pub fn is_well_formed(token: &str) -> bool {
    token.len() == 14
        && token
            .bytes()
            .filter(|b| *b != b'-')
            .all(|b| b.is_ascii_alphanumeric() && !b.eq_ignore_ascii_case(&b'u'))
}

/// 400 for a `signup_token` that is not of the §12.1 form.
fn malformed() -> HttpError {
    HttpError::bad_request("Invalid signup token format: Invalid signup code id")
}

/// Refuses a `signup_token` in `query` that is present but malformed, whatever the signup mode (grant
/// sign-up checks the form even when sign-up is open, PROTOCOL-0.17.md §9.1 step 3).
pub fn check_format(query: Option<&str>) -> Result<(), HttpError> {
    match token_param(query) {
        Some(token) if !is_well_formed(&token) => Err(malformed()),
        _ => Ok(()),
    }
}

/// The last `signup_token` query parameter, percent-decoded.
fn token_param(query: Option<&str>) -> Option<String> {
    homestead_middleware::query::Query::parse(query)
        .last("signup_token")
        .map(str::to_string)
}

/// Judges the token of a `POST /signup` with query `query`: `tokens` is None in open mode. A failed
/// lookup is a 503 error; a token that does not do is a [`Verdict::Refuse`].
pub async fn judge<T: SignupTokens>(
    tokens: Option<&T>,
    query: Option<&str>,
) -> Result<Verdict, HttpError> {
    let Some(tokens) = tokens else {
        return Ok(Verdict::Open);
    };
    let refuse = |status, message| Ok(Verdict::Refuse(HttpError::new(status, message)));
    let Some(token) = token_param(query) else {
        return refuse(StatusCode::BAD_REQUEST, "Token required");
    };
    if !is_well_formed(&token) {
        return Ok(Verdict::Refuse(malformed()));
    }
    let status = tokens.status(&token).await.map_err(|err| {
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Signup token store unavailable: {err}"),
        )
    })?;
    match status {
        TokenStatus::Unknown => refuse(StatusCode::UNAUTHORIZED, "Invalid token"),
        TokenStatus::Used => refuse(StatusCode::UNAUTHORIZED, "Token already used"),
        TokenStatus::Unused => Ok(Verdict::Admit(token)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Knows one unused and one used token, or fails every lookup.
    struct Tokens(bool);

    impl SignupTokens for Tokens {
        async fn status(&self, token: &str) -> Result<TokenStatus, StoreError> {
            if !self.0 {
                // Any error will do: its text follows the fixed reason.
                return Err(StoreError::NoSuchUser {
                    path: "down".into(),
                });
            }
            Ok(match token {
                "AAAA-BBBB-CCCC" => TokenStatus::Unused,
                "DDDD-EEEE-FFFF" => TokenStatus::Used,
                _ => TokenStatus::Unknown,
            })
        }
    }

    async fn verdict(tokens: Option<&Tokens>, query: Option<&str>) -> Result<Verdict, HttpError> {
        judge(tokens, query).await
    }

    #[test]
    fn token_format_follows_the_spec() {
        for good in [
            "AAAA-BBBB-CCCC",
            "aaaa-bbbb-cccc",
            "7QF2-9KZM-1B3T",
            "AAAAAA-BBBBBBC",
            "IIII-LLLL-OOOO",
        ] {
            assert!(is_well_formed(good), "{good}");
        }
        for bad in [
            "invalid",
            "AAAA-BBBB-CCC",
            "AAAA-BBBB-CCCCC",
            "UAAA-BBBB-CCCC",
            "AAAA_BBBB_CCCC",
            "AAAA-BBBB-CCÇ",
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn open_mode_admits_everyone() {
        assert_eq!(verdict(None, None).await, Ok(Verdict::Open));
        assert_eq!(
            verdict(None, Some("signup_token=junk")).await,
            Ok(Verdict::Open)
        );
    }

    #[tokio::test]
    async fn token_mode_judges_the_token() {
        let tokens = Tokens(true);
        assert_eq!(
            verdict(Some(&tokens), Some("signup_token=AAAA-BBBB-CCCC")).await,
            Ok(Verdict::Admit("AAAA-BBBB-CCCC".into()))
        );
        let cases = [
            (None, 400, "Token required"),
            (
                Some("signup_token=invalid"),
                400,
                "Invalid signup token format: Invalid signup code id",
            ),
            (Some("signup_token=AAAA-BBBB-CCCD"), 401, "Invalid token"),
            (
                Some("signup_token=DDDD-EEEE-FFFF"),
                401,
                "Token already used",
            ),
            // Percent-decoded; the last of repeated parameters wins.
            (
                Some("signup_token=x&signup_token=DDDD%2DEEEE-FFFF"),
                401,
                "Token already used",
            ),
        ];
        for (query, status, message) in cases {
            let refusal = verdict(Some(&tokens), query)
                .await
                .unwrap()
                .admitted()
                .unwrap_err();
            assert_eq!(
                (refusal.status.as_u16(), refusal.message.as_str()),
                (status, message),
                "{query:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_lookup_answers_503() {
        let err = verdict(Some(&Tokens(false)), Some("signup_token=AAAA-BBBB-CCCC"))
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            err.message,
            "Signup token store unavailable: down: no such user"
        );
    }
}
