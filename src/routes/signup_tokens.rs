//! `GET /signup_tokens/{token}` (PROTOCOL.md §12.2): whether an invite code is still good.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat};
use homestead_config::SignupMode;
use http::{HeaderValue, StatusCode, header};

use crate::http_error::HttpError;
use crate::routes::AppState;
use crate::signup_token::is_well_formed;

/// `/signup_tokens/{token}`: `GET` only; any other method, `HEAD` included, is a 405 (PROTOCOL-0.17.md
/// §22 item 11).
pub async fn route(
    State(app): State<AppState>,
    method: http::Method,
    token: Path<String>,
) -> Response {
    if method != http::Method::GET {
        return super::storage::method_not_allowed("GET");
    }
    status(State(app), token)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The token's status and creation time as JSON; 400 in open mode or for a malformed token, 404 for an
/// unknown one.
async fn status(
    State(app): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, HttpError> {
    if app.signup_mode == SignupMode::Open {
        return Err(HttpError::bad_request("Signup tokens not required"));
    }
    if !is_well_formed(&token) {
        return Err(HttpError::bad_request(
            "Invalid signup token format: Invalid signup code id",
        ));
    }
    let Some(record) = app.store.accounts().signup_token(&token).await? else {
        return Err(HttpError::new(StatusCode::NOT_FOUND, "Token not found"));
    };
    let status = if record.used_by.is_some() {
        "used"
    } else {
        "valid"
    };
    let body = format!(
        "{{\"status\":\"{status}\",\"created_at\":\"{}\"}}",
        rfc3339(record.created_at)
    );
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// RFC 3339 in UTC with a `+00:00` offset and fractional seconds only when they are not zero.
fn rfc3339(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn creation_time_is_rfc3339_with_offset() {
        assert_eq!(
            rfc3339(1_764_000_000_123_456),
            "2025-11-24T16:00:00.123456+00:00"
        );
        assert_eq!(rfc3339(1_764_000_000_000_000), "2025-11-24T16:00:00+00:00");
    }
}
