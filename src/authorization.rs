//! Who may do what on a tenant route (PROTOCOL.md §7), the one place that decides access: only the
//! [`Scope::Public`] area is served; its reads are public; everything else needs the tenant's own
//! principal, and a write needs a capability that covers the path.
//!
//! Unlike the 0.9.3 reference, and like 0.17.1, the capability check is segment-aware and runs on the
//! normalized path: a scope `/pub/app/` covers what lies below it, a scope `/pub/app` only that file, and
//! neither covers `/pub/app.evil/x`.

use homestead_backends::{EntryPath, Scope};
use homestead_middleware::{Authentication, Principal};
use http::{Method, StatusCode};
use pubky_common::capabilities::Action;

use crate::http_error::HttpError;

/// Checks who may touch the raw storage path `raw_path` of `tenant` (PROTOCOL.md §7.1 with the identity
/// rules of PROTOCOL-0.17.md §12.3): a write needs an identity first (401), then a tenant, the public area
/// and the tenant's own user (403 for another user's bearer). `Ok(None)`: a public read;
/// `Ok(Some(principal))`: the tenant's own principal, whose capabilities a write must still pass with
/// [`check_write`].
pub fn authorize<'a>(
    method: &Method,
    raw_path: &str,
    tenant: Option<&pkarr::PublicKey>,
    authentication: &'a Authentication,
) -> Result<Option<&'a Principal>, HttpError> {
    let read = method == Method::GET || method == Method::HEAD;
    let principal = match authentication {
        Authentication::Authenticated(principal) => Some(principal.as_ref()),
        _ => None,
    };
    if !read && principal.is_none() {
        return Err(HttpError::no_session());
    }
    let Some(tenant) = tenant else {
        return Err(HttpError::no_tenant());
    };
    if Scope::of(raw_path) != Scope::Public {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "Writing to directories other than '/pub/' is forbidden",
        ));
    }
    match principal {
        _ if read => Ok(None),
        Some(principal) if principal.user != *tenant => Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "Session user does not match target tenant",
        )),
        principal => Ok(principal),
    }
}

/// The area a normalized path resolves to must be one the server serves: `/pub/` (the raw path was
/// checked by [`authorize`], but `..` can leave it). A 400, the reference's `Invalid URL` reason.
pub fn check_scope(scope: Scope) -> Result<(), HttpError> {
    match scope {
        Scope::Public => Ok(()),
        Scope::Private | Scope::Other => Err(HttpError::bad_request(
            "Invalid URL: Path must start with /pub/",
        )),
    }
}

/// §7.2, segment-aware: the principal needs a capability with `w` whose scope covers `path` (no
/// principal: no capability).
pub fn check_write(principal: Option<&Principal>, path: &EntryPath) -> Result<(), HttpError> {
    let Some(principal) = principal else {
        return Err(no_write_access());
    };
    let allowed = principal.capabilities.iter().any(|capability| {
        capability.actions().contains(&Action::Write)
            && scope_covers(capability.scope().as_str(), path.as_str())
    });
    if allowed {
        Ok(())
    } else {
        Err(no_write_access())
    }
}

fn no_write_access() -> HttpError {
    HttpError::new(
        StatusCode::FORBIDDEN,
        "Session does not have write access to path",
    )
}

/// PROTOCOL-0.17.md §4.3: a scope ending in `/` covers everything below it; another scope covers only
/// itself.
fn scope_covers(scope: &str, path: &str) -> bool {
    if scope.ends_with('/') {
        path.starts_with(scope)
    } else {
        path == scope
    }
}

#[cfg(test)]
mod tests {
    use homestead_backends::NormalizedPath;
    use homestead_middleware::{Credential, Session};

    use super::*;

    const A: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
    const B: &str = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";

    fn key(z32: &str) -> pkarr::PublicKey {
        pkarr::PublicKey::try_from(z32).unwrap()
    }

    fn principal(owner: &str, capabilities: &str) -> Principal {
        let session = Session {
            user: key(owner),
            capabilities: capabilities.parse().unwrap_or_default(),
            created_at: 0,
            grant: None,
        };
        Principal::new(session, cookie())
    }

    fn cookie() -> Credential {
        Credential::Cookie {
            secret: "S".repeat(26),
        }
    }

    fn found(owner: &str, capabilities: &str) -> Authentication {
        Authentication::Authenticated(Box::new(principal(owner, capabilities)))
    }

    fn message(result: Result<Option<&Principal>, HttpError>) -> (u16, String) {
        match result {
            Ok(None) => (200, "public".into()),
            Ok(Some(_)) => (200, "session".into()),
            Err(err) => (err.status.as_u16(), err.message),
        }
    }

    #[test]
    fn checks_run_in_the_reference_order() {
        let a = key(A);
        let put = Method::PUT;
        let cases = [
            (
                None,
                Method::GET,
                "/pub/x",
                Authentication::NoCredential,
                404,
                "Pubky Host is missing",
            ),
            (
                None,
                put.clone(),
                "/pub/x",
                Authentication::NoCredential,
                401,
                "No authenticated session found",
            ),
            (
                Some(&a),
                Method::GET,
                "/priv/x",
                found(A, "/:rw"),
                403,
                "Writing to directories other than '/pub/' is forbidden",
            ),
            (
                Some(&a),
                put.clone(),
                "/pub",
                found(A, "/:rw"),
                403,
                "Writing to directories other than '/pub/' is forbidden",
            ),
            (
                Some(&a),
                Method::GET,
                "/pub/x",
                Authentication::NoCredential,
                200,
                "public",
            ),
            (
                Some(&a),
                Method::HEAD,
                "/pub/x",
                Authentication::NoCredential,
                200,
                "public",
            ),
            (
                Some(&a),
                put.clone(),
                "/pub/x",
                Authentication::NoCredential,
                401,
                "No authenticated session found",
            ),
            (
                Some(&a),
                Method::DELETE,
                "/pub/x",
                Authentication::Unknown(cookie()),
                401,
                "No authenticated session found",
            ),
            (
                Some(&a),
                put.clone(),
                "/pub/x",
                found(B, "/:rw"),
                403,
                "Session user does not match target tenant",
            ),
            (
                Some(&a),
                Method::POST,
                "/pub/x",
                found(A, "/:rw"),
                200,
                "session",
            ),
        ];
        for (tenant, method, path, state, status, text) in cases {
            let got = message(authorize(&method, path, tenant, &state));
            assert_eq!(got, (status, text.to_string()), "{method} {path}");
        }
    }

    #[test]
    fn write_capabilities_are_segment_aware() {
        let check = |caps: &str, path: &str| {
            check_write(Some(&principal(A, caps)), &EntryPath::parse(path).unwrap()).is_ok()
        };
        let caps = "/pub/pubky.app/:rw,/pub/foo.bar/file:r";
        assert!(check(caps, "/pub/pubky.app/foo"));
        assert!(check(caps, "/pub/pubky.app/a/b/c"));
        assert!(!check(caps, "/pub/pubky.app"));
        assert!(!check(caps, "/pub/foo.bar/file"));
        assert!(!check(caps, "/pub/other"));
        // No trailing slash: the file itself only (PROTOCOL-0.17.md §4.3), never a sibling.
        assert!(check("/pub/app:rw", "/pub/app"));
        assert!(!check("/pub/app:rw", "/pub/app/x"));
        assert!(!check("/pub/app:rw", "/pub/app.evil/x"));
        assert!(!check("/pub/app:rw", "/pub/apple"));
        assert!(check("/:rw", "/pub/anything"));
        assert!(check("/:w", "/pub/anything"));
        assert!(!check("/:r", "/pub/anything"));
        assert!(!check("", "/pub/anything"));
        // Checked on the normalized path, so encoded or dotted forms cannot slip past the scope.
        assert!(!check("/pub/app/:rw", "/pub/app/../other/x"));
        // No principal, no capability.
        let path = EntryPath::parse("/pub/x").unwrap();
        assert_eq!(
            check_write(None, &path).unwrap_err().message,
            "Session does not have write access to path"
        );
    }

    #[test]
    fn only_the_public_area_is_served() {
        let scope = |path: &str| NormalizedPath::parse(path).unwrap().scope();
        assert!(check_scope(scope("/pub/a")).is_ok());
        assert!(check_scope(scope("/pub/a/")).is_ok());
        for outside in ["/", "/pub", "/priv/a", "/x"] {
            let err = check_scope(scope(outside)).unwrap_err();
            assert_eq!(
                (err.status.as_u16(), err.message.as_str()),
                (400, "Invalid URL: Path must start with /pub/"),
                "{outside}: the reference's message"
            );
        }
    }
}
