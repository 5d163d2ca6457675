//! The admin listener's routes (OPERATIONS.md §5, PROTOCOL-0.17 §19): liveness, signup tokens, users
//! and their quotas, disabling users. Every route but `/` needs the `X-Admin-Password` header, compared
//! in constant time.

use std::num::NonZeroU16;

use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use rand::RngCore;

use homestead_backends::metadata::{
    NewSignupToken, Quota, TokenPage, TokenState, User, UserLimits, UserOrder, UserPage, UserState,
    now_micros,
};
use serde::Deserialize;

use crate::http_error::HttpError;
use crate::pkarr_record::SharedPublishStatus;
use crate::routes::AppState;
use crate::user_quota::{self, QuotaPatch};
use crate::user_republisher::LastRun;

/// What the admin info reports beside the database totals.
#[derive(Debug, Clone, Default)]
pub struct AdminFacts {
    /// The server's z32 key.
    pub public_key: String,
    /// `<ip>:<port>` of the advertised PubkyTLS endpoint, if any.
    pub pubky_address: Option<String>,
    /// `<domain>:<port>` of the advertised ICANN endpoint, if any.
    pub icann_domain: Option<String>,
    /// How publishing the server's record goes.
    pub publish: SharedPublishStatus,
    /// The user keys republisher's last run.
    pub republisher: LastRun,
}

/// The header that carries the admin password.
const PASSWORD_HEADER: &str = "x-admin-password";

/// Liveness text of the admin listener; needs no password.
pub async fn root() -> &'static str {
    "Homeserver - Admin Endpoint"
}

/// Refuses requests without the right password (401 `Missing admin password` / `Invalid admin
/// password`).
pub async fn require_password(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    let unauthorized = |message| HttpError::new(StatusCode::UNAUTHORIZED, message);
    let Some(given) = request.headers().get(PASSWORD_HEADER) else {
        return Err(unauthorized("Missing admin password"));
    };
    // An empty password never matches, whatever the configuration let through.
    if app.admin_password.is_empty()
        || !constant_time_eq(given.as_bytes(), app.admin_password.as_bytes())
    {
        return Err(unauthorized("Invalid admin password"));
    }
    Ok(next.run(request).await)
}

/// Refuses requests whose `Host` names anything but an IP address or `localhost` (403), so that a web
/// page whose name an attacker points at the operator's loopback (DNS rebinding) cannot reach the API.
/// Requests without a `Host` (and HTTP/2 without `:authority`) are not from a browser and pass.
pub async fn require_local_host(request: Request, next: Next) -> Result<Response, HttpError> {
    let host = request
        .headers()
        .get(http::header::HOST)
        .map(|value| value.to_str().unwrap_or("\u{fffd}").to_string())
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_string()));
    if let Some(host) = host
        && !is_local_host(&host)
    {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "Admin API: only requests to an IP address or localhost are served",
        ));
    }
    Ok(next.run(request).await)
}

/// Whether a `Host` value (with or without port) is an IP literal or `localhost`.
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((address, _)) => address,
            None => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Byte equality whose time depends only on the lengths, not on where the bytes differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let differing = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && differing == 0
}

/// `GET /generate_signup_token`: mints a single-use token `XXXX-XXXX-XXXX` (7 random bytes in Crockford
/// base32) whose user gets the server defaults.
pub async fn generate_signup_token(State(app): State<AppState>) -> Result<String, HttpError> {
    mint_token(&app, None, &UserLimits::default()).await
}

/// `POST /generate_signup_token` with a `UserQuota` JSON body: a token whose user gets those settings.
pub async fn generate_signup_token_with_quota(
    State(app): State<AppState>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Result<String, HttpError> {
    let patch = QuotaPatch::parse(&body).map_err(unprocessable)?;
    let (quota, limits) = patch
        .apply(None, &UserLimits::default())
        .map_err(unprocessable)?;
    mint_token(&app, quota, &limits).await
}

/// Mints one token with these settings and stores it.
pub(crate) async fn mint_token(
    app: &AppState,
    quota: Option<Quota>,
    limits: &UserLimits,
) -> Result<String, HttpError> {
    let mut bytes = [0u8; 7];
    rand::rng().fill_bytes(&mut bytes);
    let code = base32::encode(base32::Alphabet::Crockford, &bytes);
    let token = format!("{}-{}-{}", &code[0..4], &code[4..8], &code[8..12]);
    app.store
        .accounts()
        .create_signup_token(&NewSignupToken {
            token: &token,
            created_at: now_micros(),
            quota,
            limits,
        })
        .await?;
    Ok(token)
}

/// 422 with a validation message.
pub(crate) fn unprocessable(message: String) -> HttpError {
    HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

fn user_key(user: &str) -> Result<String, HttpError> {
    homestead_middleware::tenant::parse_key(user)
        .map(|key| key.to_string())
        .ok_or_else(|| HttpError::bad_request(format!("Invalid public key: {user}")))
}

/// `GET /users/{user}/quota`: `{"effective": ..., "overrides": ...}`.
pub async fn user_quota(
    State(app): State<AppState>,
    Path(user): Path<String>,
) -> Result<axum::Json<serde_json::Value>, HttpError> {
    let user = app
        .store
        .accounts()
        .user(&user_key(&user)?)
        .await?
        .ok_or_else(HttpError::not_found)?;
    Ok(axum::Json(quota_json(&app, &user)))
}

/// `PATCH /users/{user}/quota`: merges a `UserQuota` patch into the user's settings.
pub async fn patch_user_quota(
    State(app): State<AppState>,
    Path(user): Path<String>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Result<StatusCode, HttpError> {
    let key = user_key(&user)?;
    // Field errors come before the user lookup, as in the reference.
    let patch = QuotaPatch::parse(&body).map_err(unprocessable)?;
    let user = app
        .store
        .accounts()
        .user(&key)
        .await?
        .ok_or_else(HttpError::not_found)?;
    let (quota, limits) = patch
        .apply(user.quota, &user.limits)
        .map_err(unprocessable)?;
    if app
        .store
        .accounts()
        .set_limits(&key, quota, &limits)
        .await?
    {
        Ok(StatusCode::OK)
    } else {
        Err(HttpError::not_found())
    }
}

/// `GET /info`: the reference's fields in its order (OPERATIONS.md §5.5, unchanged in 0.17.1; `version`
/// is Homestead's), then Homestead's own: `num_pop_nonces`, `pkarr_publish` and
/// `user_keys_republisher`.
pub async fn info(State(app): State<AppState>) -> Result<axum::response::Response, HttpError> {
    use axum::response::IntoResponse;
    let counts = app.store.operations().counts().await?;
    let facts = &app.admin;
    let publish = facts
        .publish
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let republisher = *facts.republisher.lock().unwrap_or_else(|p| p.into_inner());
    let body = serde_json::json!({
        "num_users": counts.users,
        "num_disabled_users": counts.disabled_users,
        "total_disk_used_mb": (counts.used_bytes as f64 / 1_048_576.0).round() as u64,
        "num_signup_codes": counts.signup_tokens,
        "num_unused_signup_codes": counts.unused_signup_tokens,
        "public_key": facts.public_key,
        "pkarr_pubky_address": facts.pubky_address,
        "pkarr_icann_domain": facts.icann_domain,
        "version": env!("CARGO_PKG_VERSION"),
        "num_pop_nonces": counts.pop_nonces,
        "pkarr_publish": {
            "published": publish.published,
            "failed": publish.failed,
            "last_error": publish.last_error,
        },
        "user_keys_republisher": republisher.map(|run| serde_json::json!({
            "republished": run.summary.republished,
            "restored": run.summary.restored,
            "elsewhere": run.summary.elsewhere,
            "missing": run.summary.missing,
            "failed": run.summary.failed,
        })),
    });
    Ok((
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}

/// Page size of the admin listings unless asked otherwise, and the largest page served.
const PAGE: u16 = 100;
const MAX_PAGE: u16 = 1000;

/// `limit`: 1 to 65535 (0 and other values are query errors), served up to [`MAX_PAGE`].
fn page_limit(limit: Option<NonZeroU16>) -> u32 {
    u32::from(limit.map_or(PAGE, NonZeroU16::get).min(MAX_PAGE))
}

/// The query of `GET /users` (PROTOCOL-0.17 §19.1).
#[derive(Debug, serde::Deserialize)]
pub struct UsersQuery {
    limit: Option<NonZeroU16>,
    #[serde(default, deserialize_with = "z32_cursor")]
    cursor: Option<String>,
    #[serde(default)]
    state: UserStateParam,
    #[serde(default)]
    sort_by: SortParam,
    #[serde(default)]
    reverse: bool,
}

/// `state` of `GET /users`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum UserStateParam {
    #[default]
    All,
    Enabled,
    Disabled,
}

/// `sort_by` of `GET /users`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum SortParam {
    #[default]
    CreatedAt,
    UsedBytes,
}

/// A `cursor` that is a z32 public key (a `pubky`-prefixed one is refused).
fn z32_cursor<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let value = String::deserialize(de)?;
    homestead_middleware::tenant::parse_key(&value)
        .map(|key| Some(key.to_string()))
        .ok_or_else(|| serde::de::Error::custom(format!("`{value}` is not a public key")))
}

/// The query of `GET /signup_tokens` (PROTOCOL-0.17 §19.3).
#[derive(Debug, serde::Deserialize)]
pub struct TokensQuery {
    limit: Option<NonZeroU16>,
    #[serde(default, deserialize_with = "token_cursor")]
    cursor: Option<String>,
    #[serde(default)]
    state: TokenStateParam,
}

/// `state` of `GET /signup_tokens`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum TokenStateParam {
    #[default]
    All,
    Used,
    Unused,
}

/// A `cursor` that is a well-formed signup token.
fn token_cursor<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let value = String::deserialize(de)?;
    match crate::signup_token::is_well_formed(&value) {
        true => Ok(Some(value)),
        false => Err(serde::de::Error::custom(format!(
            "`{value}` is not a signup token (XXXX-XXXX-XXXX)"
        ))),
    }
}

/// A time as the reference's admin API writes it: UTC without offset, fractional seconds only when not
/// zero (`2026-10-02T12:00:00.123456`).
pub(crate) fn utc_time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.f")
        .to_string()
}

/// One user of the admin API: key, sign-up time, flag, usage and quota, in the reference's order.
pub(crate) fn user_item(app: &AppState, user: &User) -> serde_json::Value {
    serde_json::json!({
        "pubky": user.public_key,
        "created_at": utc_time(user.created_at),
        "disabled": user.disabled,
        "used_bytes": user.used_bytes,
        "quota": quota_json(app, user),
    })
}

/// `{"effective": ..., "overrides": ...}` of a user (OPERATIONS.md §5.4).
fn quota_json(app: &AppState, user: &User) -> serde_json::Value {
    serde_json::json!({
        "effective": user_quota::effective(user.quota, &user.limits, app.store.default_quota(), &app.default_quotas),
        "overrides": user_quota::overrides(user.quota, &user.limits),
    })
}

/// `{"items": [...], "next_cursor": ...}` from a page read with one item more than `limit`: the cursor
/// is the last item's when more follow.
fn page_json<T>(
    mut rows: Vec<T>,
    limit: u32,
    cursor: impl Fn(&T) -> String,
    item: impl Fn(&T) -> serde_json::Value,
) -> axum::Json<serde_json::Value> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = rows.last().filter(|_| more).map(&cursor);
    let items: Vec<_> = rows.iter().map(item).collect();
    axum::Json(serde_json::json!({ "items": items, "next_cursor": next }))
}

/// `GET /users`: users by sign-up time or usage, keyset-paginated (PROTOCOL-0.17 §19.1); 400 `Unknown
/// cursor` when the cursor names no user.
pub async fn users(
    State(app): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<UsersQuery>,
) -> Result<axum::Json<serde_json::Value>, HttpError> {
    let limit = page_limit(query.limit);
    let page = UserPage {
        after: query.cursor.as_deref(),
        limit: limit + 1,
        state: match query.state {
            UserStateParam::All => UserState::All,
            UserStateParam::Enabled => UserState::Enabled,
            UserStateParam::Disabled => UserState::Disabled,
        },
        order: match query.sort_by {
            SortParam::CreatedAt => UserOrder::CreatedAt,
            SortParam::UsedBytes => UserOrder::UsedBytes,
        },
        reverse: query.reverse,
    };
    let users = app.store.accounts().list_users(&page).await?;
    let users = users.ok_or_else(|| HttpError::bad_request("Unknown cursor"))?;
    Ok(page_json(
        users,
        limit,
        |u| u.public_key.clone(),
        |u| user_item(&app, u),
    ))
}

/// `GET /users/{user}`: one user, as an item of `GET /users`.
pub async fn user(
    State(app): State<AppState>,
    Path(user): Path<String>,
) -> Result<axum::Json<serde_json::Value>, HttpError> {
    let key = homestead_middleware::tenant::parse_key(&user).ok_or_else(|| {
        HttpError::bad_request(format!("Invalid URL: `{user}` is not a public key"))
    })?;
    let user = app.store.accounts().user(&key.to_string()).await?;
    let user = user.ok_or_else(HttpError::not_found)?;
    Ok(axum::Json(user_item(&app, &user)))
}

/// `GET /signup_tokens`: tokens by text, with who redeemed them when, and the quota they hand out
/// (PROTOCOL-0.17 §19.3).
pub async fn signup_tokens(
    State(app): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<TokensQuery>,
) -> Result<axum::Json<serde_json::Value>, HttpError> {
    let limit = page_limit(query.limit);
    let page = TokenPage {
        after: query.cursor.as_deref(),
        limit: limit + 1,
        state: match query.state {
            TokenStateParam::All => TokenState::All,
            TokenStateParam::Used => TokenState::Used,
            TokenStateParam::Unused => TokenState::Unused,
        },
    };
    let tokens = app.store.accounts().list_signup_tokens(&page).await?;
    Ok(page_json(
        tokens,
        limit,
        |t| t.token.clone(),
        |t| {
            serde_json::json!({
                "token": t.token,
                "created_at": utc_time(t.created_at),
                "used_at": t.used_at.map(utc_time),
                "used_by": t.used_by,
                "quota": user_quota::overrides(t.quota, &t.limits),
            })
        },
    ))
}

/// `DELETE /webdav/{user}/pub/{path}` and `/webdav/{user}/priv/{path}`: deletes a file as the operator
/// (quota credited, `DEL` event).
pub async fn delete_entry(
    State(app): State<AppState>,
    Path((user, path)): Path<(String, String)>,
) -> Result<http::StatusCode, HttpError> {
    let key = homestead_middleware::tenant::parse_key(&user)
        .ok_or_else(|| HttpError::bad_request(format!("Invalid public key: {user}")))?;
    let invalid_url = |err| HttpError::bad_request(format!("Invalid URL: {err}"));
    let path =
        homestead_backends::NormalizedPath::parse(&format!("/{path}")).map_err(invalid_url)?;
    // Checked after normalizing: `..` can leave the two areas.
    if path.scope() == homestead_backends::Scope::Other {
        return Err(HttpError::bad_request(
            "Invalid URL: Path must start with /pub/ or /priv/",
        ));
    }
    let path = homestead_backends::EntryPath::try_from(path).map_err(invalid_url)?;
    match app.store.delete(&key.to_string(), &path).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(HttpError::not_found()),
    }
}

/// `POST /users/{user}/disable`: the user may still read, delete and sign in, but not write.
pub async fn disable_user(
    State(app): State<AppState>,
    Path(user): Path<String>,
) -> Result<&'static str, HttpError> {
    set_disabled(&app, &user, true).await
}

/// `POST /users/{user}/enable`: undoes a disable.
pub async fn enable_user(
    State(app): State<AppState>,
    Path(user): Path<String>,
) -> Result<&'static str, HttpError> {
    set_disabled(&app, &user, false).await
}

async fn set_disabled(
    app: &AppState,
    user: &str,
    disabled: bool,
) -> Result<&'static str, HttpError> {
    let key = homestead_middleware::tenant::parse_key(user)
        .ok_or_else(|| HttpError::bad_request(format!("Invalid public key: {user}")))?;
    if app
        .store
        .accounts()
        .set_disabled(&key.to_string(), disabled)
        .await?
    {
        Ok("Ok")
    } else {
        Err(HttpError::new(StatusCode::NOT_FOUND, "User not found"))
    }
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, is_local_host, page_limit, utc_time};

    #[test]
    fn times_are_utc_without_offset_and_fractions_only_when_not_zero() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00");
        assert_eq!(utc_time(1_500_000), "1970-01-01T00:00:01.500");
        assert_eq!(utc_time(1_000_001), "1970-01-01T00:00:01.000001");
        assert_eq!(
            utc_time(1_790_942_400_123_456),
            "2026-10-02T12:00:00.123456"
        );
    }

    #[test]
    fn page_limits_default_to_100_and_are_capped_at_1000() {
        let limit = |n| page_limit(std::num::NonZeroU16::new(n));
        assert_eq!((limit(0), limit(1), limit(1000)), (100, 1, 1000));
        assert_eq!((limit(1001), limit(u16::MAX)), (1000, 1000));
    }

    #[test]
    fn password_comparison_is_exact() {
        assert!(constant_time_eq(b"admin", b"admin"));
        assert!(!constant_time_eq(b"admin", b"admim"));
        assert!(!constant_time_eq(b"admin", b"admin2"));
        assert!(!constant_time_eq(b"", b"admin"));
    }

    #[test]
    fn only_addresses_and_localhost_are_local_hosts() {
        for host in [
            "127.0.0.1:6288",
            "127.0.0.1",
            "localhost:6288",
            "LOCALHOST",
            "[::1]:6288",
        ] {
            assert!(is_local_host(host), "{host}");
        }
        for host in [
            "evil.example:6288",
            "evil.example",
            "127.0.0.1.nip.io",
            "[::1",
            "",
            "\u{fffd}",
        ] {
            assert!(!is_local_host(host), "{host}");
        }
    }
}
