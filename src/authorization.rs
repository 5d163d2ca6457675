//! Who may do what on a tenant route (PROTOCOL.md §7): reads of `/pub/` are public; everything else
//! needs the tenant's own session, and a write needs a capability that covers the path.
//!
//! Unlike the reference, the capability check is segment-aware and runs on the normalized path: a scope
//! `/pub/app` covers `/pub/app` and `/pub/app/...`, never `/pub/app.evil/x`.

use std::str::FromStr;

use homestead_backends::EntryPath;
use homestead_middleware::{Session, SessionState};
use http::{Method, StatusCode};
use pubky_common::capabilities::{Action, Capabilities};

use crate::http_error::HttpError;

/// Checks §7.1 steps 1–7 for a request on the raw storage path `raw_path` of `tenant`. `Ok(None)`: a
/// public read; `Ok(Some(session))`: the tenant's own session, whose capabilities a write must still
/// pass with [`check_write`].
pub fn authorize<'a>(
    method: &Method,
    raw_path: &str,
    tenant: Option<&pkarr::PublicKey>,
    state: &'a SessionState,
) -> Result<Option<&'a Session>, HttpError> {
    let Some(tenant) = tenant else {
        return Err(HttpError::no_tenant());
    };
    if !raw_path.starts_with("/pub/") {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "Writing to directories other than '/pub/' is forbidden",
        ));
    }
    if method == Method::GET || method == Method::HEAD {
        return Ok(None);
    }
    let unauthorized = |message| Err(HttpError::new(StatusCode::UNAUTHORIZED, message));
    match state {
        SessionState::NoCookie => unauthorized("No session secret found in cookies"),
        SessionState::Unknown(_) => unauthorized("No session found for session secret"),
        SessionState::Found { session, .. } if session.public_key != *tenant => {
            unauthorized("SessionInfo public key does not match pubky-host")
        }
        SessionState::Found { session, .. } => Ok(Some(session)),
    }
}

/// §7.2, segment-aware: the session needs a capability with `w` whose scope covers `path` (no session:
/// no capability).
pub fn check_write(session: Option<&Session>, path: &EntryPath) -> Result<(), HttpError> {
    let capabilities = session
        .and_then(|s| Capabilities::from_str(&s.capabilities).ok())
        .unwrap_or_default();
    let allowed = capabilities.iter().any(|capability| {
        capability.actions().contains(&Action::Write)
            && scope_covers(capability.scope().as_str(), path.as_str())
    });
    if allowed {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "Session does not have write access to path",
        ))
    }
}

/// A scope ending in `/` covers everything below it; another scope covers itself and what lies below it
/// as a directory.
fn scope_covers(scope: &str, path: &str) -> bool {
    if scope.ends_with('/') {
        return path.starts_with(scope);
    }
    path.strip_prefix(scope)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
    const B: &str = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";

    fn key(z32: &str) -> pkarr::PublicKey {
        pkarr::PublicKey::try_from(z32).unwrap()
    }

    fn session(owner: &str, capabilities: &str) -> Session {
        Session {
            public_key: key(owner),
            capabilities: capabilities.into(),
            created_at: 0,
        }
    }

    fn found(owner: &str, capabilities: &str) -> SessionState {
        SessionState::Found {
            secret: "S".repeat(26),
            session: Box::new(session(owner, capabilities)),
        }
    }

    fn message(result: Result<Option<&Session>, HttpError>) -> (u16, String) {
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
                SessionState::NoCookie,
                404,
                "Pubky Host is missing",
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
                SessionState::NoCookie,
                200,
                "public",
            ),
            (
                Some(&a),
                Method::HEAD,
                "/pub/x",
                SessionState::NoCookie,
                200,
                "public",
            ),
            (
                Some(&a),
                put.clone(),
                "/pub/x",
                SessionState::NoCookie,
                401,
                "No session secret found in cookies",
            ),
            (
                Some(&a),
                Method::DELETE,
                "/pub/x",
                SessionState::Unknown("S".repeat(26)),
                401,
                "No session found for session secret",
            ),
            (
                Some(&a),
                put.clone(),
                "/pub/x",
                found(B, "/:rw"),
                401,
                "SessionInfo public key does not match pubky-host",
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
            check_write(Some(&session(A, caps)), &EntryPath::parse(path).unwrap()).is_ok()
        };
        let caps = "/pub/pubky.app/:rw,/pub/foo.bar/file:r";
        assert!(check(caps, "/pub/pubky.app/foo"));
        assert!(check(caps, "/pub/pubky.app/a/b/c"));
        assert!(!check(caps, "/pub/pubky.app"));
        assert!(!check(caps, "/pub/foo.bar/file"));
        assert!(!check(caps, "/pub/other"));
        // No trailing slash: the path itself and below it, but not a sibling sharing the prefix.
        assert!(check("/pub/app:rw", "/pub/app"));
        assert!(check("/pub/app:rw", "/pub/app/x"));
        assert!(!check("/pub/app:rw", "/pub/app.evil/x"));
        assert!(!check("/pub/app:rw", "/pub/apple"));
        assert!(check("/:rw", "/pub/anything"));
        assert!(check("/:w", "/pub/anything"));
        assert!(!check("/:r", "/pub/anything"));
        assert!(!check("", "/pub/anything"));
        // Checked on the normalized path, so encoded or dotted forms cannot slip past the scope.
        assert!(!check("/pub/app/:rw", "/pub/app/../other/x"));
    }
}
