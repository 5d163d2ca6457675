//! The signup-token gate (PROTOCOL.md §6.6, §12.1). On `POST /signup` it judges the `signup_token` query
//! parameter: in open mode every sign-up is admitted; in token-required mode the token must be present,
//! well-formed, known and unused. The verdict is stored as a [`SignupGate`] extension rather than answered
//! at once, because the protocol ranks a bad AuthToken (400) and an existing user (409) above token
//! errors: the handler checks those first and then applies the gate. Redeeming the token stays the
//! handler's job, atomically with creating the user, so that a token is single-use even under a race.
//!
//! ```
//! # use homestead_middleware::signup::{SignupLayer, SignupTokens, TokenStatus};
//! #[derive(Clone)]
//! struct NoTokens;
//!
//! impl SignupTokens for NoTokens {
//!     type Error = std::convert::Infallible;
//!     async fn status(&self, _token: &str) -> Result<TokenStatus, Self::Error> {
//!         Ok(TokenStatus::Unknown)
//!     }
//! }
//!
//! let open = SignupLayer::<NoTokens>::open();
//! let gated = SignupLayer::token_required(NoTokens);
//! ```

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::plain_text::plain_text;

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

/// Looks signup tokens up; the app implements it with the Store.
pub trait SignupTokens: Clone + Send + Sync + 'static {
    /// Why a lookup could not be done.
    type Error: Display + Send;

    /// The status of a well-formed token.
    fn status(&self, token: &str) -> impl Future<Output = Result<TokenStatus, Self::Error>> + Send;
}

/// The gate's verdict on a `POST /signup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignupGate {
    /// Open mode: no token needed (any given is ignored).
    Open,
    /// Token-required mode with a valid unused token, to be redeemed with the sign-up.
    Admit(String),
    /// Token-required mode and the token does not do.
    Refuse {
        /// 400 or 401.
        status: StatusCode,
        /// The protocol's message.
        message: &'static str,
    },
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

/// Adds the [`SignupGate`] extension to `POST /signup` requests.
#[derive(Debug, Clone)]
pub struct SignupLayer<T> {
    tokens: Option<T>,
}

impl<T> SignupLayer<T> {
    /// Anyone with a valid AuthToken may sign up.
    pub fn open() -> Self {
        Self { tokens: None }
    }

    /// Only holders of an unused token from `tokens` may sign up.
    pub fn token_required(tokens: T) -> Self {
        Self {
            tokens: Some(tokens),
        }
    }
}

impl<S, T: Clone> Layer<S> for SignupLayer<T> {
    type Service = SignupService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        SignupService {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service of [`SignupLayer`].
#[derive(Debug, Clone)]
pub struct SignupService<S, T> {
    inner: S,
    tokens: Option<T>,
}

/// The last `signup_token` query parameter, percent-decoded.
fn token_param(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .filter(|(name, _)| name == "signup_token")
        .map(|(_, value)| value.into_owned())
        .last()
}

async fn judge<T: SignupTokens>(tokens: &T, token: Option<String>) -> Result<SignupGate, T::Error> {
    let refuse = |status, message| Ok(SignupGate::Refuse { status, message });
    let Some(token) = token else {
        return refuse(StatusCode::BAD_REQUEST, "Token required");
    };
    if !is_well_formed(&token) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Invalid signup token format: Invalid signup code id",
        );
    }
    match tokens.status(&token).await? {
        TokenStatus::Unknown => refuse(StatusCode::UNAUTHORIZED, "Invalid token"),
        TokenStatus::Used => refuse(StatusCode::UNAUTHORIZED, "Token already used"),
        TokenStatus::Unused => Ok(SignupGate::Admit(token)),
    }
}

impl<S, T, ReqBody, ResBody> Service<Request<ReqBody>> for SignupService<S, T>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    T: SignupTokens,
    ReqBody: Send + 'static,
    ResBody: From<String>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tokens = self.tokens.clone();
        Box::pin(async move {
            if request.method() != Method::POST || request.uri().path() != "/signup" {
                return inner.call(request).await;
            }
            let gate = match tokens {
                None => SignupGate::Open,
                Some(tokens) => match judge(&tokens, token_param(request.uri().query())).await {
                    Ok(gate) => gate,
                    Err(err) => {
                        return Ok(plain_text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("Signup token store unavailable: {err}"),
                        ));
                    }
                },
            };
            request.extensions_mut().insert(gate);
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    #[derive(Clone)]
    struct Tokens(Result<(), &'static str>);

    impl SignupTokens for Tokens {
        type Error = &'static str;

        async fn status(&self, token: &str) -> Result<TokenStatus, Self::Error> {
            self.0?;
            Ok(match token {
                "AAAA-BBBB-CCCC" => TokenStatus::Unused,
                "DDDD-EEEE-FFFF" => TokenStatus::Used,
                _ => TokenStatus::Unknown,
            })
        }
    }

    async fn gate(layer: SignupLayer<Tokens>, method: Method, uri: &str) -> Response<String> {
        let request = Request::builder().method(method).uri(uri).body(()).unwrap();
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<()>| async move {
                let gate = req.extensions().get::<SignupGate>().cloned();
                Ok::<_, Infallible>(Response::new(format!("{gate:?}")))
            })
            .oneshot(request)
            .await
            .unwrap()
    }

    async fn verdict(layer: SignupLayer<Tokens>, uri: &str) -> String {
        gate(layer, Method::POST, uri).await.into_body()
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
        let open = || SignupLayer::<Tokens>::open();
        assert_eq!(verdict(open(), "/signup").await, "Some(Open)");
        assert_eq!(
            verdict(open(), "/signup?signup_token=junk").await,
            "Some(Open)"
        );
    }

    #[tokio::test]
    async fn token_mode_judges_the_token() {
        let gated = || SignupLayer::token_required(Tokens(Ok(())));
        assert_eq!(
            verdict(gated(), "/signup?signup_token=AAAA-BBBB-CCCC").await,
            "Some(Admit(\"AAAA-BBBB-CCCC\"))"
        );
        let cases = [
            ("/signup", "status: 400", "Token required"),
            (
                "/signup?signup_token=invalid",
                "status: 400",
                "Invalid signup token format",
            ),
            (
                "/signup?signup_token=AAAA-BBBB-CCCD",
                "status: 401",
                "Invalid token",
            ),
            (
                "/signup?signup_token=DDDD-EEEE-FFFF",
                "status: 401",
                "Token already used",
            ),
            // Percent-decoded; the last of repeated parameters wins.
            (
                "/signup?signup_token=x&signup_token=DDDD%2DEEEE-FFFF",
                "status: 401",
                "Token already used",
            ),
        ];
        for (uri, status, message) in cases {
            let body = verdict(gated(), uri).await;
            assert!(
                body.contains(status) && body.contains(message),
                "{uri}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn other_requests_pass_untouched() {
        let gated = || SignupLayer::token_required(Tokens(Ok(())));
        assert_eq!(
            gate(gated(), Method::GET, "/signup").await.into_body(),
            "None"
        );
        assert_eq!(verdict(gated(), "/session").await, "None");
    }

    #[tokio::test]
    async fn a_failed_lookup_answers_503() {
        let layer = SignupLayer::token_required(Tokens(Err("database down")));
        let response = gate(layer, Method::POST, "/signup?signup_token=AAAA-BBBB-CCCC").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.into_body(),
            "Signup token store unavailable: database down"
        );
    }
}
