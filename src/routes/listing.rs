//! Directory listings (PROTOCOL.md §9): query parsing and the `GET /pub/<dir>/` answer.

use axum::response::{IntoResponse, Response};
use homestead_backends::store::ListRequest;
use homestead_backends::{DirPath, NormalizedPath, Store};
use homestead_middleware::query::Query;
use homestead_middleware::tenant::parse_key;
use http::{HeaderValue, StatusCode, header};

use crate::http_error::HttpError;

/// Entries per page unless asked otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// Most entries per page.
const MAX_LIMIT: u32 = 1000;

/// The listing parameters of a query string, before the cursor is checked.
#[derive(Debug)]
pub struct ListQuery {
    /// `limit`, defaulted and capped.
    pub limit: u32,
    /// `reverse`.
    pub reverse: bool,
    /// `shallow`.
    pub shallow: bool,
    /// `cursor`, as given (empty = none).
    pub cursor: Option<String>,
}

/// Parses the query (percent-decoded, last value wins). Bad booleans are a 400; a bad `limit` means the
/// default.
pub fn parse_query(query: Option<&str>) -> Result<ListQuery, HttpError> {
    let query = Query::parse(query);
    let limit = query
        .last("limit")
        .and_then(|l| l.parse::<u16>().ok())
        .map_or(DEFAULT_LIMIT, |l| u32::from(l).min(MAX_LIMIT));
    Ok(ListQuery {
        limit,
        reverse: parse_bool(query.last("reverse"))?,
        shallow: parse_bool(query.last("shallow"))?,
        cursor: query
            .last("cursor")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    })
}

/// `true`, `yes`, `1` or empty mean true; `false`, `no`, `0` false; absent is false.
fn parse_bool(value: Option<&str>) -> Result<bool, HttpError> {
    let Some(value) = value else {
        return Ok(false);
    };
    match value.to_ascii_lowercase().as_str() {
        "" | "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(HttpError::bad_request("Invalid boolean parameter")),
    }
}

/// A cursor `[pubky://]*<key>/<path>`: the key must be valid (it is not compared with the tenant), the
/// path is normalized and used.
fn parse_cursor(cursor: &str) -> Option<NormalizedPath> {
    let mut rest = cursor;
    while let Some(stripped) = rest.strip_prefix("pubky://") {
        rest = stripped;
    }
    let (key, path) = rest.split_at(rest.find('/')?);
    parse_key(key)?;
    NormalizedPath::parse(path).ok()
}

/// Lists `dir` of `owner` as `pubky://<owner><path>` lines.
pub async fn list(
    store: &Store,
    owner: &str,
    dir: DirPath,
    query: ListQuery,
) -> Result<Response, HttpError> {
    let cursor = query.cursor.as_deref().map(parse_cursor);
    let request = ListRequest {
        dir,
        cursor: cursor.clone().flatten(),
        limit: query.limit,
        reverse: query.reverse,
        shallow: query.shallow,
    };
    let not_found = || HttpError::new(StatusCode::NOT_FOUND, "Directory Not Found");
    if matches!(cursor, Some(None)) {
        // A missing directory outranks a bad cursor.
        let probe = ListRequest {
            cursor: None,
            limit: 0,
            ..request
        };
        return Err(match store.list(owner, &probe).await? {
            None => not_found(),
            Some(_) => HttpError::bad_request("Invalid cursor"),
        });
    }
    let paths = store.list(owner, &request).await?.ok_or_else(not_found)?;
    let line = "pubky://".len() + owner.len() + 1;
    let mut body = String::with_capacity(paths.iter().map(|p| line + p.len()).sum());
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            body.push('\n');
        }
        body.push_str("pubky://");
        body.push_str(owner);
        body.push_str(path);
    }
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    #[test]
    fn limits_default_and_cap() {
        let limit = |q: &str| parse_query(Some(q)).unwrap().limit;
        assert_eq!(limit(""), 100);
        assert_eq!(limit("limit=2"), 2);
        assert_eq!(limit("limit=0"), 0);
        assert_eq!(limit("limit=5000"), 1000);
        assert_eq!(limit("limit=abc"), 100);
        assert_eq!(limit("limit="), 100);
        assert_eq!(limit("limit=65536"), 100);
        assert_eq!(limit("limit=-1"), 100);
        assert_eq!(limit("limit=1&limit=7"), 7);
    }

    #[test]
    fn booleans_follow_the_spec() {
        let q = |q: &str| parse_query(Some(q)).map(|l| (l.reverse, l.shallow));
        assert_eq!(q("reverse&shallow").unwrap(), (true, true));
        assert_eq!(q("reverse=&shallow=YES").unwrap(), (true, true));
        assert_eq!(q("reverse=1&shallow=0").unwrap(), (true, false));
        assert_eq!(q("reverse=no&shallow=False").unwrap(), (false, false));
        assert_eq!(q("").unwrap(), (false, false));
        let err = q("reverse=maybe").unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.message.as_str()),
            (400, "Invalid boolean parameter")
        );
    }

    #[test]
    fn cursors_in_both_forms() {
        let path = |c: &str| parse_cursor(c).map(|p| p.as_str().to_string());
        let plain = format!("{A}/pub/example.com/a.txt");
        assert_eq!(path(&plain).as_deref(), Some("/pub/example.com/a.txt"));
        assert_eq!(
            path(&format!("pubky://{plain}")).as_deref(),
            Some("/pub/example.com/a.txt")
        );
        assert_eq!(
            path(&format!("pubky://pubky://{plain}")).as_deref(),
            Some("/pub/example.com/a.txt")
        );
        assert_eq!(path(&format!("{A}/pub/a/../b")).as_deref(), Some("/pub/b"));
        assert_eq!(path(&format!("{A}/other")).as_deref(), Some("/other"));
        assert_eq!(path("/pub/x"), None);
        assert_eq!(path(A), None);
        assert_eq!(path(&format!("pubky{A}/pub/x")), None);
        assert_eq!(path(&format!("{A}/pub/%01")), Some("/pub/%01".into()));
        assert_eq!(path(&format!("{A}/pub/a\u{1}b")), None);
        let empty = parse_query(Some("cursor=")).unwrap();
        assert_eq!(empty.cursor, None);
    }
}
