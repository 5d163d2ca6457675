//! Query strings, parsed one way for every route: `application/x-www-form-urlencoded` as browsers and the
//! SDKs write it (`+` is a space, `%XX` escapes are decoded, invalid UTF-8 becomes U+FFFD, a pair without
//! `=` has an empty value). Names repeat freely; a route asks for the last value or for all of them.
//!
//! ```
//! use homestead_middleware::query::Query;
//!
//! let query = Query::parse(Some("limit=10&user=a&user=b%20c&limit=20"));
//! assert_eq!(query.last("limit"), Some("20"));
//! assert_eq!(query.all("user").collect::<Vec<_>>(), ["a", "b c"]);
//! ```

use std::borrow::Cow;

/// The decoded pairs of a query string, in order; values borrow from the query unless decoding changed
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    /// Parses the query of a URI (`None`: no query, no pairs).
    pub fn parse(query: Option<&'a str>) -> Self {
        Self {
            pairs: form_urlencoded::parse(query.unwrap_or_default().as_bytes()).collect(),
        }
    }

    /// The last value of `name`: where a parameter is given twice, the later one wins.
    pub fn last(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_ref())
    }

    /// Every value of `name`, in the order given.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.pairs
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_ref())
    }
}

/// The values of `name` exactly as written in `query` (no decoding; pairs without `=` are skipped). Only
/// for the tenant's `?pubky-host=`, which has always been matched undecoded: decoding would make values
/// such as `_pubky%2E<key>` name a tenant that they do not name today.
pub fn raw_values<'a>(query: Option<&'a str>, name: &'a str) -> impl Iterator<Item = &'a str> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(move |(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_and_plus_decoded() {
        let query = Query::parse(Some("a=x%2Fy+z&b%5B%5D=1&c=%2B"));
        assert_eq!(query.last("a"), Some("x/y z"));
        assert_eq!(query.last("b[]"), Some("1"));
        assert_eq!(query.last("c"), Some("+"));
        assert_eq!(query.last("d"), None);
        assert_eq!(Query::parse(None), Query::default());
        assert_eq!(Query::parse(Some("")).last(""), None);
    }

    #[test]
    fn bad_escapes_are_kept_or_replaced_never_refused() {
        let query = Query::parse(Some("bad=%FF%FE&short=%2&odd=%zz&pct=100%"));
        assert_eq!(query.last("bad"), Some("\u{FFFD}\u{FFFD}"));
        assert_eq!(query.last("short"), Some("%2"));
        assert_eq!(query.last("odd"), Some("%zz"));
        assert_eq!(query.last("pct"), Some("100%"));
        let name = Query::parse(Some("%C3%28=v"));
        assert_eq!(name.last("\u{FFFD}("), Some("v"));
    }

    #[test]
    fn empty_pairs_are_skipped_and_bare_names_are_empty() {
        let query = Query::parse(Some("&&a&=x&b=&&"));
        assert_eq!(query.last("a"), Some(""));
        assert_eq!(query.last(""), Some("x"));
        assert_eq!(query.last("b"), Some(""));
        assert_eq!(query.all("a").count(), 1);
        let eq_in_value = Query::parse(Some("k=a=b"));
        assert_eq!(eq_in_value.last("k"), Some("a=b"));
    }

    #[test]
    fn repeated_keys_keep_every_value_and_the_last_wins() {
        let query = Query::parse(Some("u=1&v=x&u=2&u=&u=3"));
        assert_eq!(query.last("u"), Some("3"));
        assert_eq!(query.all("u").collect::<Vec<_>>(), ["1", "2", "", "3"]);
        assert_eq!(query.all("w").count(), 0);
        let emptied = Query::parse(Some("cursor=abc&cursor="));
        assert_eq!(emptied.last("cursor"), Some(""));
    }

    #[test]
    fn raw_values_are_not_decoded() {
        let query = Some("pubky-host=a%2Eb&pubky%2Dhost=c&pubky-host&pubky-host=d+e&pubky-host=");
        assert_eq!(
            raw_values(query, "pubky-host").collect::<Vec<_>>(),
            ["a%2Eb", "d+e", ""]
        );
        assert_eq!(raw_values(None, "pubky-host").count(), 0);
        assert_eq!(
            raw_values(Some("%FF=%FF"), "%FF").collect::<Vec<_>>(),
            ["%FF"]
        );
    }
}
