//! The console's sign-in sessions: random tokens held in memory with an absolute expiry, each with a
//! CSRF token of its own. A restart signs every operator out, which is fine for a console.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions held at once; signing in beyond it ends the oldest.
const MAX_SESSIONS: usize = 64;

/// One signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    csrf_token: String,
    expires: Instant,
}

/// The sessions, by cookie token.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, base64url without padding.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    /// Starts a session; its cookie token and CSRF token.
    pub fn create(&self) -> (String, String) {
        let (token, csrf_token) = (random_token(), random_token());
        let now = Instant::now();
        let mut sessions = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, session| session.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(token, _)| token.clone())
        {
            sessions.remove(&oldest);
        }
        let session = Session {
            csrf_token: csrf_token.clone(),
            expires: now + SESSION_TTL,
        };
        sessions.insert(token.clone(), session);
        (token, csrf_token)
    }

    /// The CSRF token of a live session.
    pub fn csrf_token(&self, token: &str) -> Option<String> {
        let sessions = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(token)
            .filter(|session| session.expires > Instant::now())
            .map(|session| session.csrf_token.clone())
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        let mut sessions = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_bounded_and_removable() {
        let sessions = Sessions::default();
        let (token, csrf) = sessions.create();
        assert_eq!((token.len(), csrf.len()), (43, 43));
        assert_ne!(token, csrf);
        assert_eq!(sessions.csrf_token(&token), Some(csrf));
        assert_eq!(sessions.csrf_token("other"), None);
        for _ in 0..MAX_SESSIONS {
            sessions.create();
        }
        assert_eq!(sessions.by_token.lock().unwrap().len(), MAX_SESSIONS);
        assert_eq!(sessions.csrf_token(&token), None, "the oldest went first");
        let (token, _) = sessions.create();
        sessions.remove(&token);
        assert_eq!(sessions.csrf_token(&token), None);
    }

    #[test]
    fn expired_sessions_are_refused() {
        let sessions = Sessions::default();
        let (token, _) = sessions.create();
        sessions
            .by_token
            .lock()
            .unwrap()
            .get_mut(&token)
            .unwrap()
            .expires = Instant::now();
        assert_eq!(sessions.csrf_token(&token), None);
    }
}
