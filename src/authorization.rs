//! Who may do what on a storage path (PROTOCOL.md §7, PROTOCOL-0.17.md §12.3, §13), the one place that
//! decides access: `/pub/` is readable by anyone, `/priv/` only by its owner's own sessions with a
//! capability that covers the path with `r`; a write anywhere needs the owner's own session with `w`;
//! nothing outside the two areas is served. Every rule runs on the normalized path, before any lookup, so
//! an answer never tells whether a file the asker may not read exists.
//!
//! Unlike the 0.9.3 reference, and like 0.17.1, the capability check is segment-aware: a scope
//! `/pub/app/` covers what lies below it, a scope `/pub/app` only that file, and neither covers
//! `/pub/app.evil/x`.

use homestead_backends::{EntryPath, Scope};
use homestead_middleware::{Authentication, Credential, Principal};
use http::{HeaderMap, StatusCode};
use pubky_common::capabilities::Action;

use crate::http_error::HttpError;

/// The principal a request authenticated as, if any.
pub fn identity(authentication: &Authentication) -> Option<&Principal> {
    match authentication {
        Authentication::Authenticated(principal) => Some(principal),
        _ => None,
    }
}

/// Whether a browser sent the request for a page of another site (`Sec-Fetch-Site: cross-site`).
pub fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

/// The identity a private read may use. A cookie that a browser attached for another site's page is
/// none: CORS lets every origin read answers with credentials, so without this any site could read a
/// signed-in user's `/priv/` files through their browser. A bearer is set by the app itself and always
/// counts; requests outside browsers send no `Sec-Fetch-Site`.
pub fn private_identity<'a>(
    identity: Option<&'a Principal>,
    headers: &HeaderMap,
) -> Option<&'a Principal> {
    identity.filter(|principal| {
        matches!(principal.via, Credential::Bearer { .. }) || !cross_site(headers)
    })
}

/// §13.1 (without the event streams' one-user rule): may `identity` read the normalized `path` of
/// `owner`? `/pub/` is public; `/priv/` needs the owner's own principal with a capability covering the
/// path with `r` (401 without an identity, 403 otherwise); anything else is 403.
pub fn check_read(
    path: &str,
    owner: &pkarr::PublicKey,
    identity: Option<&Principal>,
) -> Result<(), HttpError> {
    match Scope::of(path) {
        Scope::Public => return Ok(()),
        Scope::Private => {}
        Scope::Other => {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "Reading from directories other than '/pub/' and '/priv/' is forbidden",
            ));
        }
    }
    let Some(principal) = identity else {
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "Authentication required to read private storage",
        ));
    };
    check_owner(principal, owner)?;
    if covers(principal, Action::Read, path) {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "Session does not have read access to path",
        ))
    }
}

/// §12.3 steps 3–5: may `principal` write the file `path` of `owner`? Only inside `/pub/` or `/priv/`,
/// only as the owner, only with a capability covering the path with `w`; each refusal a 403.
pub fn check_write(
    principal: &Principal,
    owner: &pkarr::PublicKey,
    path: &EntryPath,
) -> Result<(), HttpError> {
    if Scope::of(path.as_str()) == Scope::Other {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "Writing to directories other than '/pub/' and '/priv/' is forbidden",
        ));
    }
    check_owner(principal, owner)?;
    if covers(principal, Action::Write, path.as_str()) {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "Session does not have write access to path",
        ))
    }
}

/// A principal acts only for its own user.
fn check_owner(principal: &Principal, owner: &pkarr::PublicKey) -> Result<(), HttpError> {
    if principal.user == *owner {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "Session user does not match target tenant",
        ))
    }
}

/// Whether one of the principal's capabilities grants `action` on `path` (§4.3).
pub fn covers(principal: &Principal, action: Action, path: &str) -> bool {
    principal.capabilities.iter().any(|capability| {
        capability.actions().contains(&action) && scope_covers(capability.scope().as_str(), path)
    })
}

/// PROTOCOL-0.17.md §4.3: a scope ending in `/` covers everything below it (and itself, the directory);
/// another scope covers only itself.
fn scope_covers(scope: &str, path: &str) -> bool {
    if scope.ends_with('/') {
        path.starts_with(scope)
    } else {
        path == scope
    }
}

#[cfg(test)]
mod tests {
    use homestead_middleware::Session;

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
        let cookie = Credential::Cookie {
            secret: "S".repeat(26),
        };
        Principal::new(session, cookie)
    }

    fn outcome(result: Result<(), HttpError>) -> (u16, String) {
        match result {
            Ok(()) => (200, String::new()),
            Err(err) => (err.status.as_u16(), err.message),
        }
    }

    #[test]
    fn reads_follow_the_permission_order() {
        let owner = key(A);
        let own = principal(A, "/priv/app/:r,/pub/:rw");
        let writer = principal(A, "/priv/app/:w");
        let events_only = principal(A, "/priv/app/:e");
        let root = principal(A, "/:rw");
        let stranger = principal(B, "/:rw");
        let cases: [(&str, Option<&Principal>, u16, &str); 12] = [
            ("/pub/x", None, 200, ""),
            ("/pub/x", Some(&stranger), 200, ""),
            ("/", None, 403, "Reading from directories"),
            ("/pub", Some(&root), 403, "Reading from directories"),
            ("/other/x", Some(&root), 403, "Reading from directories"),
            ("/priv/app/x", None, 401, "Authentication required"),
            ("/priv/app/x", Some(&stranger), 403, "Session user does not"),
            ("/priv/app/x", Some(&own), 200, ""),
            ("/priv/app/", Some(&own), 200, ""),
            ("/priv/other", Some(&own), 403, "Session does not have read"),
            (
                "/priv/app/x",
                Some(&writer),
                403,
                "Session does not have read",
            ),
            (
                "/priv/app/x",
                Some(&events_only),
                403,
                "Session does not have read",
            ),
        ];
        for (path, identity, status, text) in cases {
            let (got, message) = outcome(check_read(path, &owner, identity));
            assert_eq!(got, status, "{path}: {message}");
            assert!(message.starts_with(text), "{path}: {message}");
        }
        assert!(check_read("/priv/x", &owner, Some(&root)).is_ok());
        // Listing a directory needs the directory itself covered.
        let file_scope = principal(A, "/priv/app:r");
        assert!(check_read("/priv/app/", &owner, Some(&file_scope)).is_err());
    }

    #[test]
    fn writes_need_the_area_the_owner_and_a_write_capability() {
        let owner = key(A);
        let check = |caps: &str, user: &str, path: &str| {
            outcome(check_write(
                &principal(user, caps),
                &owner,
                &EntryPath::parse(path).unwrap(),
            ))
        };
        assert_eq!(check("/:rw", A, "/pub/x").0, 200);
        assert_eq!(check("/:rw", A, "/priv/x").0, 200);
        assert_eq!(
            check("/:rw", A, "/x").1,
            "Writing to directories other than '/pub/' and '/priv/' is forbidden"
        );
        assert_eq!(
            check("/:rw", B, "/pub/x").1,
            "Session user does not match target tenant"
        );
        assert_eq!(
            check("/priv/app/:r", A, "/priv/app/x").1,
            "Session does not have write access to path"
        );
    }

    #[test]
    fn capabilities_are_segment_aware() {
        let check = |caps: &str, path: &str| covers(&principal(A, caps), Action::Write, path);
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
        assert!(check("/:w", "/priv/anything"));
        assert!(!check("/:r", "/pub/anything"));
        assert!(!check("", "/pub/anything"));
    }
}
