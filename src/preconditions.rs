//! The preconditions of a write or a delete (RFC 9110 §13.1): `If-Match`, `If-None-Match` and
//! `If-Unmodified-Since`, parsed into the [`WriteMode`] the Store checks before the body is read and
//! again under the user's row lock in the commit. A header that does not parse is a 400 with a one-line
//! reason: a client that asked for a condition never gets an unconditional write instead.
//!
//! As RFC 9110 §13.2.2 orders them: `If-Match` (strong comparison, so a weak tag never matches);
//! without it, `If-Unmodified-Since` (ignored, not even parsed, when `If-Match` is present, and when
//! there is no current file); then `If-None-Match` (weak comparison; any failure is a 412 for a write).
//! ETags are the quoted base64 of the content's BLAKE3 hash, so a tag that does not decode to one names
//! no file and matches nothing.

use homestead_backends::metadata::{Version, WriteMode};
use http::{HeaderMap, HeaderName, header};

use crate::http_error::HttpError;

/// Which precondition header is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreconditionError {
    /// `If-Match` is neither `*` nor a list of entity tags.
    IfMatch,
    /// `If-None-Match` is neither `*` nor a list of entity tags.
    IfNoneMatch,
    /// `If-Unmodified-Since` is not one HTTP date.
    IfUnmodifiedSince,
}

impl std::fmt::Display for PreconditionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::IfMatch => "If-Match",
            Self::IfNoneMatch => "If-None-Match",
            Self::IfUnmodifiedSince => "If-Unmodified-Since",
        };
        write!(f, "Invalid {name} header")
    }
}

impl std::error::Error for PreconditionError {}

impl From<PreconditionError> for HttpError {
    fn from(err: PreconditionError) -> Self {
        HttpError::bad_request(err.to_string())
    }
}

/// An entity-tag condition: `*` or a list of tags.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tags {
    /// `*`: any current file.
    Any,
    /// The tags' opaque parts, each with whether it is weak (`W/`).
    List(Vec<(bool, Vec<u8>)>),
}

/// The [`WriteMode`] of a PUT or DELETE with these headers: [`WriteMode::Overwrite`] without any
/// precondition, one mode for one, [`WriteMode::All`] for several.
pub fn write_mode(headers: &HeaderMap) -> Result<WriteMode, PreconditionError> {
    let mut modes = Vec::new();
    match tags(headers, header::IF_MATCH).map_err(|()| PreconditionError::IfMatch)? {
        Some(Tags::Any) => modes.push(WriteMode::Replace),
        // Strong comparison: a weak tag never matches.
        Some(Tags::List(list)) => modes.push(WriteMode::Update(versions(list, false))),
        None => {
            if let Some(secs) = unmodified_since(headers)? {
                modes.push(WriteMode::UnmodifiedSince(secs));
            }
        }
    }
    match tags(headers, header::IF_NONE_MATCH).map_err(|()| PreconditionError::IfNoneMatch)? {
        Some(Tags::Any) => modes.push(WriteMode::Create),
        // Weak comparison: `W/"x"` matches `"x"`.
        Some(Tags::List(list)) => modes.push(WriteMode::Except(versions(list, true))),
        None => {}
    }
    Ok(match modes.len() {
        0 => WriteMode::Overwrite,
        1 => modes.remove(0),
        _ => WriteMode::All(modes),
    })
}

/// The versions a list of tags names; weak tags only when `weak_too`.
fn versions(list: Vec<(bool, Vec<u8>)>, weak_too: bool) -> Vec<Version> {
    list.into_iter()
        .filter(|(weak, _)| weak_too || !weak)
        .filter_map(|(_, opaque)| Version::from_opaque_tag(&opaque))
        .collect()
}

/// The tags of every `name` header, as one list (RFC 9110 §5.3); None without any; `Err` when one
/// does not parse, when the list is empty, or when `*` is not alone.
fn tags(headers: &HeaderMap, name: HeaderName) -> Result<Option<Tags>, ()> {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut list = Vec::new();
    let mut star = false;
    for value in values {
        let mut rest = value.as_bytes();
        loop {
            rest = rest.trim_ascii_start();
            match rest {
                [] => break,
                [b',', tail @ ..] => rest = tail,
                [b'*', tail @ ..] => {
                    star = true;
                    rest = element_end(tail)?;
                }
                _ => {
                    let (weak, tail) = match rest {
                        [b'W', b'/', tail @ ..] => (true, tail),
                        _ => (false, rest),
                    };
                    let [b'"', tail @ ..] = tail else {
                        return Err(());
                    };
                    let close = tail.iter().position(|b| *b == b'"').ok_or(())?;
                    let opaque = &tail[..close];
                    // etagc: `!`, `#`-`~` and obs-text.
                    if !opaque
                        .iter()
                        .all(|b| *b == 0x21 || (*b >= 0x23 && *b != 0x7f))
                    {
                        return Err(());
                    }
                    list.push((weak, opaque.to_vec()));
                    rest = element_end(&tail[close + 1..])?;
                }
            }
        }
    }
    match (star, list.is_empty()) {
        (true, true) => Ok(Some(Tags::Any)),
        (false, false) => Ok(Some(Tags::List(list))),
        _ => Err(()),
    }
}

/// What follows a list element: optional whitespace, then a comma or the end.
fn element_end(rest: &[u8]) -> Result<&[u8], ()> {
    match rest.trim_ascii_start() {
        [] => Ok(&[]),
        [b',', tail @ ..] => Ok(tail),
        _ => Err(()),
    }
}

/// The `If-Unmodified-Since` date in Unix seconds; None without one.
fn unmodified_since(headers: &HeaderMap) -> Result<Option<i64>, PreconditionError> {
    let mut values = headers.get_all(header::IF_UNMODIFIED_SINCE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = PreconditionError::IfUnmodifiedSince;
    if values.next().is_some() {
        return Err(invalid);
    }
    let text = value.to_str().map_err(|_| invalid)?;
    http_date_secs(text.trim()).map(Some).ok_or(invalid)
}

/// An HTTP-date (RFC 9110 §5.6.7, any of its three forms) as Unix seconds; None when it is not one.
pub fn http_date_secs(text: &str) -> Option<i64> {
    let date = httpdate::parse_http_date(text).ok()?;
    let since = date
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .ok()?;
    i64::try_from(since.as_secs()).ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const HELLO: &str = "\"6o8WPbOGgpJeRJHF5Y1Ls1Bu+MFOt4qG6QjFYkpnIA8=\"";
    const EMPTY: &str = "\"rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI=\"";

    fn version(etag: &str) -> Version {
        Version::from_opaque_tag(etag.trim_matches('"').as_bytes()).unwrap()
    }

    fn mode(pairs: &[(&HeaderName, &[u8])]) -> Result<WriteMode, PreconditionError> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        write_mode(&headers)
    }

    #[test]
    fn no_precondition_overwrites() {
        assert_eq!(mode(&[]), Ok(WriteMode::Overwrite));
    }

    #[test]
    fn if_match_names_strong_versions_or_any_file() {
        let im = &header::IF_MATCH;
        assert_eq!(mode(&[(im, b"*")]), Ok(WriteMode::Replace));
        assert_eq!(mode(&[(im, b" * ")]), Ok(WriteMode::Replace));
        assert_eq!(
            mode(&[(im, HELLO.as_bytes())]),
            Ok(WriteMode::Update(vec![version(HELLO)]))
        );
        // A list, across lines, with empty elements; weak and foreign tags match nothing.
        let list = format!(" , W/{EMPTY},\"other\" ,{HELLO}");
        assert_eq!(
            mode(&[(im, list.as_bytes()), (im, EMPTY.as_bytes())]),
            Ok(WriteMode::Update(vec![version(HELLO), version(EMPTY)]))
        );
        assert_eq!(
            mode(&[(im, format!("W/{HELLO}").as_bytes())]),
            Ok(WriteMode::Update(Vec::new()))
        );
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let inm = &header::IF_NONE_MATCH;
        assert_eq!(mode(&[(inm, b"*")]), Ok(WriteMode::Create));
        assert_eq!(
            mode(&[(inm, format!("W/{HELLO}, \"x\"").as_bytes())]),
            Ok(WriteMode::Except(vec![version(HELLO)]))
        );
    }

    #[test]
    fn if_unmodified_since_yields_to_if_match() {
        let ius = &header::IF_UNMODIFIED_SINCE;
        let date: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(
            mode(&[(ius, date)]),
            Ok(WriteMode::UnmodifiedSince(784111777))
        );
        // RFC 850 and asctime dates are HTTP dates too.
        assert_eq!(
            mode(&[(ius, b"Sunday, 06-Nov-94 08:49:37 GMT")]),
            Ok(WriteMode::UnmodifiedSince(784111777))
        );
        assert_eq!(
            mode(&[(ius, b"Sun Nov  6 08:49:37 1994")]),
            Ok(WriteMode::UnmodifiedSince(784111777))
        );
        // Ignored, not even parsed, beside If-Match.
        assert_eq!(
            mode(&[(&header::IF_MATCH, b"*"), (ius, b"garbage")]),
            Ok(WriteMode::Replace)
        );
        assert_eq!(
            mode(&[(ius, date), (&header::IF_NONE_MATCH, b"*")]),
            Ok(WriteMode::All(vec![
                WriteMode::UnmodifiedSince(784111777),
                WriteMode::Create
            ]))
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        let (im, inm, ius) = (
            &header::IF_MATCH,
            &header::IF_NONE_MATCH,
            &header::IF_UNMODIFIED_SINCE,
        );
        for bad in [
            &b""[..],
            b" , ",
            b"abc",
            b"\"unterminated",
            b"\"a\" \"b\"",
            b"\"a\";x",
            b"w/\"a\"",
            b"W/ \"a\"",
            b"*, \"a\"",
            b"**",
            b"\"a b\"",
        ] {
            let shown = String::from_utf8_lossy(bad);
            assert_eq!(
                mode(&[(im, bad)]),
                Err(PreconditionError::IfMatch),
                "{shown}"
            );
            assert_eq!(
                mode(&[(inm, bad)]),
                Err(PreconditionError::IfNoneMatch),
                "{shown}"
            );
        }
        for bad in [
            &b"yesterday"[..],
            b"1994-11-06T08:49:37Z",
            b"Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
            b"\xff",
        ] {
            assert_eq!(
                mode(&[(ius, bad)]),
                Err(PreconditionError::IfUnmodifiedSince)
            );
        }
        let twice = [(ius, &b"Sun, 06 Nov 1994 08:49:37 GMT"[..]); 2];
        assert_eq!(mode(&twice), Err(PreconditionError::IfUnmodifiedSince));
        assert_eq!(
            HttpError::from(PreconditionError::IfMatch).message,
            "Invalid If-Match header"
        );
    }
}
