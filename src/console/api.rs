//! The console's own API beside the operator routes it shares with the admin API: signing in and out,
//! the overview, minting several tokens at once and searching users by key prefix.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use homestead_backends::metadata::{Quota, UserLimits, UserOrder, UserPage, UserState};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::Console;
use super::guard::{COOKIE, session_token};
use super::request_rate::SLOT_SECS;
use super::sessions::SESSION_TTL;
use crate::http_error::HttpError;
use crate::routes::admin::{constant_time_eq, mint_token, unprocessable, user_item, utc_time};
use crate::user_quota::QuotaPatch;

/// How long a wrong password holds the console's sign-in: at most one guess a second through the console
/// (the `X-Admin-Password` header API, as in the reference, is not slowed).
pub(crate) const WRONG_PASSWORD_DELAY: Duration = Duration::from_secs(1);
/// Most tokens minted by one request.
const MAX_MINT: u64 = 100;
/// Most matches of a key-prefix search.
const SEARCH_MATCHES: usize = 50;
/// Users read per page of a key-prefix search, and most pages read.
const SEARCH_PAGE: u32 = 1000;
const SEARCH_PAGES: u32 = 50;
/// The z-base-32 alphabet of keys.
const Z32: &str = "ybndrfg8ejkmcpqxot1uwisza345h769";

/// The body of `POST /console/api/sign-in`.
#[derive(Debug, serde::Deserialize)]
pub struct SignIn {
    password: String,
}

/// `{"csrf_token": ...}` with a `Cache-Control: no-store`.
fn csrf_answer(csrf_token: &str) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "csrf_token": csrf_token })),
    )
        .into_response()
}

/// `POST /console/api/sign-in`: the admin password for a session cookie (`Path=/console`, HttpOnly,
/// SameSite=Strict) and its CSRF token. One attempt is checked at a time (another meanwhile gets 429) and
/// a wrong one holds the check for [`WRONG_PASSWORD_DELAY`].
pub async fn sign_in(
    State(console): State<Console>,
    Json(body): Json<SignIn>,
) -> Result<Response, HttpError> {
    let expected = console.app.admin_password.as_bytes();
    // One attempt at a time, and no queue: a guesser's pile of waiting attempts cannot hold the
    // operator's sign-in back.
    let Ok(_checking) = console.sign_in_check.try_lock() else {
        let mut busy = HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Another sign-in is being checked: try again in a second",
        )
        .into_response();
        busy.headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        return Ok(busy);
    };
    if expected.is_empty() || !constant_time_eq(body.password.as_bytes(), expected) {
        tokio::time::sleep(WRONG_PASSWORD_DELAY).await;
        return Err(HttpError::new(StatusCode::UNAUTHORIZED, "Wrong password"));
    }
    let (token, csrf_token) = console.sessions.create();
    let cookie = format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    Ok(([(header::SET_COOKIE, cookie)], csrf_answer(&csrf_token)).into_response())
}

/// `GET /console/api/session`: the CSRF token of the signed-in browser (after a reload).
pub async fn session(State(console): State<Console>, headers: HeaderMap) -> Response {
    let csrf_token = session_token(&headers).and_then(|token| console.sessions.csrf_token(token));
    // The guard let the request through, so the session exists.
    csrf_answer(&csrf_token.unwrap_or_default())
}

/// `POST /console/api/sign-out`: ends the session and clears the cookie.
pub async fn sign_out(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers) {
        console.sessions.remove(token);
    }
    let cookie = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

/// `GET /console/api/overview`: what the overview page shows. Counts need the database; while it is
/// down they are replaced by the reason, and the rest is still answered.
pub async fn overview(State(console): State<Console>) -> Response {
    let app = &console.app;
    let health = app.store.health();
    // While the health probe finds the database down, asking it would only wait out a timeout.
    let counts = match health.database_up() {
        true => app
            .store
            .operations()
            .counts()
            .await
            .map_err(|e| e.to_string()),
        false => Err("the database does not answer".to_string()),
    };
    let counts = match counts {
        Ok(counts) => json!({
            "users": counts.users,
            "disabled_users": counts.disabled_users,
            "used_bytes": counts.used_bytes,
            "signup_tokens": counts.signup_tokens,
            "unused_signup_tokens": counts.unused_signup_tokens,
        }),
        Err(err) => json!({ "error": format!("Counts unavailable: {err}") }),
    };
    let publish = app
        .admin
        .publish
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let republisher = *app
        .admin
        .republisher
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let blob_store = blob_store_space(&console).await;
    let default_quota_mb = match app.store.default_quota() {
        Quota::Unlimited => json!("unlimited"),
        Quota::Bytes(bytes) => json!(bytes >> 20),
    };
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "public_key": app.admin.public_key,
        "pubky_address": app.admin.pubky_address,
        "icann_domain": app.admin.icann_domain,
        "uptime_secs": console.started.elapsed().as_secs(),
        "counts": counts,
        "default_quota_mb": default_quota_mb,
        "blob_store": blob_store,
        "health": { "database": health.database_up(), "blobs": health.blobs_up() },
        "publish": {
            "published": publish.published,
            "failed": publish.failed,
            "last_error": publish.last_error,
            "last_attempt": publish.last_attempt_micros.map(utc_time),
        },
        "republisher": republisher.map(|run| json!({
            "republished": run.summary.republished,
            "restored": run.summary.restored,
            "elsewhere": run.summary.elsewhere,
            "missing": run.summary.missing,
            "failed": run.summary.failed,
            "finished_at": utc_time(run.finished_micros),
        })),
        "request_rate": { "slot_secs": SLOT_SECS, "counts": app.metrics.request_rate.recent() },
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// What the blob store is, and for a filesystem store its volume's `total_bytes` and `free_bytes`
/// (`null` for memory and S3, which have no fixed total; an `error` when `statvfs` fails).
async fn blob_store_space(console: &Console) -> Value {
    let blobs = console.app.store.blob_store().clone();
    let describe = blobs.describe().to_string();
    // One statvfs call, off the runtime's threads: a hung network mount must not stall them.
    let space = tokio::task::spawn_blocking(move || blobs.volume_space())
        .await
        .unwrap_or_else(|err| Some(Err(std::io::Error::other(err))));
    match space {
        None => json!({ "describe": describe, "total_bytes": null, "free_bytes": null }),
        Some(Ok(space)) => json!({
            "describe": describe,
            "total_bytes": space.total_bytes,
            "free_bytes": space.free_bytes,
        }),
        Some(Err(err)) => json!({
            "describe": describe,
            "total_bytes": null,
            "free_bytes": null,
            "error": format!("Volume size unavailable: {err}"),
        }),
    }
}

/// `POST /console/api/mint` with `{"count": n, "quota": {UserQuota} | null}`: `n` tokens (1 to
/// [`MAX_MINT`]) handing out the same settings, as `{"tokens": [...]}`.
pub async fn mint(
    State(console): State<Console>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, HttpError> {
    let count = match body.get("count") {
        None => 1,
        Some(count) => count
            .as_u64()
            .filter(|count| (1..=MAX_MINT).contains(count))
            .ok_or_else(|| {
                HttpError::bad_request(format!(
                    "count: expected a whole number from 1 to {MAX_MINT}, not {count}"
                ))
            })?,
    };
    let (quota, limits) = match body.get("quota") {
        None | Some(Value::Null) => (None, UserLimits::default()),
        Some(quota) => {
            let patch = QuotaPatch::parse(quota).map_err(unprocessable)?;
            patch
                .apply(None, &UserLimits::default())
                .map_err(unprocessable)?
        }
    };
    let mut tokens = Vec::new();
    for _ in 0..count {
        tokens.push(mint_token(&console.app, quota, &limits).await?);
    }
    Ok(Json(json!({ "tokens": tokens })))
}

/// The query of `GET /console/api/user_search`.
#[derive(Debug, serde::Deserialize)]
pub struct SearchQuery {
    prefix: String,
}

/// `GET /console/api/user_search?prefix=<z32 prefix>`: users whose key starts with the prefix, at most
/// [`SEARCH_MATCHES`], found by reading the user list in sign-up order; `complete` is false when the
/// search stopped before the end of the list.
pub async fn user_search(
    State(console): State<Console>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<Value>, HttpError> {
    let prefix = query.prefix.trim().to_ascii_lowercase();
    let prefix = prefix
        .strip_prefix("pubky")
        .filter(|p| p.len() == 52)
        .unwrap_or(&prefix);
    if prefix.is_empty() || prefix.len() > 52 || !prefix.chars().all(|c| Z32.contains(c)) {
        return Err(HttpError::bad_request(format!(
            "Key prefix: 1 to 52 letters of the key alphabet ({Z32})"
        )));
    }
    let accounts = console.app.store.accounts();
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    let mut complete = false;
    for _ in 0..SEARCH_PAGES {
        let page = UserPage {
            after: after.as_deref(),
            limit: SEARCH_PAGE,
            state: UserState::All,
            order: UserOrder::CreatedAt,
            reverse: true,
        };
        let users = accounts.list_users(&page).await?.unwrap_or_default();
        items.extend(
            users
                .iter()
                .filter(|user| user.public_key.starts_with(prefix))
                .map(|user| user_item(&console.app, user)),
        );
        match users.last() {
            Some(last) if users.len() == SEARCH_PAGE as usize => {
                after = Some(last.public_key.clone());
            }
            _ => {
                complete = true;
                break;
            }
        }
        if items.len() >= SEARCH_MATCHES {
            break;
        }
    }
    items.truncate(SEARCH_MATCHES);
    Ok(Json(json!({ "items": items, "complete": complete })))
}
