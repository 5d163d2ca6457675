//! Sign-up, sign-in and the session routes (PROTOCOL.md §6.6–§6.9).

use std::time::SystemTime;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use homestead_backends::metadata::{NewSession, SignupOutcome, now_micros};
use homestead_config::SignupMode;
use homestead_middleware::{Authentication, Credential, Tenant};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use pubky_common::auth::AuthToken;
use pubky_common::capabilities::Capabilities;
use pubky_common::crypto::PublicKey;
use pubky_common::session::CookieSessionRecord;

use crate::auth_token::verify_once;
use crate::http_error::HttpError;
use crate::routes::AppState;
use crate::session_cookie::{cookie_site, new_secret, removal_cookie, secret_hash, set_cookie};
use crate::signup_token;

/// `POST /signup`: creates the user of the AuthToken (redeeming the signup token, in token-required
/// mode) and a first session.
pub async fn signup(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, HttpError> {
    // Judged first, so that a failed lookup answers at once; applied after the AuthToken and user
    // checks, which the protocol ranks above token errors.
    let tokens = (app.signup_mode == SignupMode::TokenRequired).then_some(&app.store);
    let verdict = signup_token::judge(tokens, uri.query()).await?;
    let token = verify_once(&app.store, &body).await?;
    create_account(&app, &token.public_key().z32(), verdict).await?;
    new_session(&app, &token, &headers, &uri).await
}

/// Creates `user`'s account, redeeming the token the verdict admits in the same transaction: 409 when
/// the user exists, else the verdict's refusal, else the token's fate under a race. Shared by both sign-up
/// routes.
pub(super) async fn create_account(
    app: &AppState,
    user: &str,
    verdict: signup_token::Verdict,
) -> Result<(), HttpError> {
    let exists = || HttpError::new(StatusCode::CONFLICT, "User already exists");
    if app.store.accounts().user(user).await?.is_some() {
        return Err(exists());
    }
    let signup_token = verdict.admitted()?;
    match app
        .store
        .accounts()
        .create_user(user, signup_token.as_deref(), now_micros())
        .await?
    {
        SignupOutcome::Created => {}
        SignupOutcome::UserExists => return Err(exists()),
        SignupOutcome::TokenUnknown => {
            return Err(HttpError::new(StatusCode::UNAUTHORIZED, "Invalid token"));
        }
        SignupOutcome::TokenUsed => {
            return Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "Token already used",
            ));
        }
    }
    tracing::info!(user, "signed up");
    app.metrics.signups.add(1, &[]);
    Ok(())
}

/// `POST /session`: a new session for the AuthToken's user (disabled users may sign in).
pub async fn signin(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, HttpError> {
    let token = verify_once(&app.store, &body).await?;
    if app
        .store
        .accounts()
        .user(&token.public_key().z32())
        .await?
        .is_none()
    {
        return Err(HttpError::not_found());
    }
    new_session(&app, &token, &headers, &uri).await
}

/// Stores a session with a fresh secret and answers with its SessionInfo (creation time in
/// microseconds) and the cookie.
async fn new_session(
    app: &AppState,
    token: &AuthToken,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, HttpError> {
    let (user, capabilities) = (token.public_key(), token.capabilities());
    let secret = new_secret();
    let z32 = user.z32();
    let stored = app
        .store
        .accounts()
        .create_session(&NewSession {
            secret_hash: &secret_hash(&secret),
            public_key: &z32,
            capabilities: &capabilities.to_string(),
            created_at: now_micros(),
        })
        .await?;
    if !stored {
        // The user was deleted between the check and the insert.
        return Err(HttpError::not_found());
    }
    let created_at = pubky_common::timestamp::Timestamp::now().as_u64();
    let info = session_info(user, capabilities.clone(), created_at);
    let cookie = set_cookie(&z32, &secret, cookie_site(headers, uri), SystemTime::now());
    Ok(session_info_response(info, Some(cookie)))
}

/// The SessionInfo bytes of §6.4: version 0, key, creation time, empty name and user agent, capabilities.
fn session_info(user: &PublicKey, capabilities: Capabilities, created_at: u64) -> Vec<u8> {
    let mut info = CookieSessionRecord::new(user, capabilities, None);
    info.set_created_at(created_at);
    info.serialize()
}

fn session_info_response(info: Vec<u8>, cookie: Option<String>) -> Response {
    let mut response = info.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::try_from(c).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /session`: the SessionInfo of the tenant's session, creation time in seconds. 404 when there is
/// no such session, or it belongs to another user than the tenant (both SDK generations read 404 as
/// "signed out"); 401 for a grant session's bearer.
pub async fn session(
    State(app): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Extension(authentication): Extension<Authentication>,
) -> Result<Response, HttpError> {
    let Some(Extension(Tenant(tenant))) = tenant else {
        return Err(HttpError::no_tenant());
    };
    if app
        .store
        .accounts()
        .user(&tenant.to_string())
        .await?
        .is_none()
    {
        return Err(HttpError::not_found());
    }
    let Authentication::Authenticated(principal) = authentication else {
        return Err(HttpError::not_found());
    };
    // A grant session is no cookie session (PROTOCOL-0.17.md §10).
    if matches!(principal.via, Credential::Bearer { .. }) {
        return Err(HttpError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    if principal.user != tenant {
        return Err(HttpError::not_found());
    }
    let created_secs = u64::try_from(principal.created_at / 1_000_000).unwrap_or(0);
    let info = session_info(
        &PublicKey::from(tenant),
        principal.capabilities,
        created_secs,
    );
    let mut response = session_info_response(info, None);
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("cookie, pubky-host"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, must-revalidate"),
    );
    Ok(response)
}

/// `DELETE /session`: ends the tenant's session named by the cookie, if any; always 200 with a cookie
/// that makes the client forget it.
pub async fn signout(
    State(app): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Extension(authentication): Extension<Authentication>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    let Some(Extension(Tenant(tenant))) = tenant else {
        return Err(HttpError::missing_tenant());
    };
    // Known or not, the cookie's session is ended.
    if let Some(Credential::Cookie { secret }) = authentication.credential() {
        app.store
            .accounts()
            .delete_session(&secret_hash(secret))
            .await?;
    }
    let site = cookie_site(&headers, &uri);
    let cookie = removal_cookie(&tenant.to_string(), site, SystemTime::now());
    let mut response = StatusCode::OK.into_response();
    if let Ok(cookie) = HeaderValue::try_from(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use pubky_common::crypto::Keypair;

    use super::*;

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn session_info_matches_the_spec_vectors() {
        let user = Keypair::from_secret(&[0; 32]).public_key();
        let root = Capabilities::from_str("/:rw").unwrap();
        assert_eq!(
            session_info(&user, root, 1_700_000_000_000_000),
            unhex(
                "003b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29\
                 8080f9c0c1c482030000" /* created_at, name, user agent */
            )
            .into_iter()
            .chain(unhex("01042f3a7277"))
            .collect::<Vec<_>>()
        );
        let scoped = Capabilities::from_str("/pub/example.com/:rw,/pub/foo.txt:r").unwrap();
        assert_eq!(
            session_info(&user, scoped, 1_700_000_000),
            unhex(
                "003b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da2980e2cfaa06000002\
                 142f7075622f6578616d706c652e636f6d2f3a72770e2f7075622f666f6f2e7478743a72"
            )
        );
    }
}
