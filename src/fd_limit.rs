//! Open files: every connection is a file descriptor, and so is every blob being read or written and
//! every database connection. With the common default soft limit of 1,024, a thousand idle connections
//! would leave none for the work itself. At start-up the soft limit is raised to the hard one, and the
//! connections each client listener accepts are capped to what the limit leaves room for.

/// Descriptors kept aside for the database pools, the listeners, logs and the runtime.
const RESERVED: u64 = 128;
/// Descriptors one connection may need: its socket and the blob file of its request.
const PER_CONNECTION: u64 = 2;
/// Connections the admin and metrics listeners accept each.
pub const SMALL_LISTENER_CONNECTIONS: usize = 64;

/// Raises the soft open-file limit to the hard one; returns the limit now in force (`None` when it
/// cannot be read).
pub fn raise() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
    }
    Some(limit.rlim_cur)
}

/// The connections each of the two client listeners may hold under an open-file limit of `nofile`, at
/// most `configured`.
pub fn client_connections(configured: usize, nofile: u64) -> usize {
    let small = 2 * SMALL_LISTENER_CONNECTIONS as u64 * PER_CONNECTION;
    let room = nofile.saturating_sub(RESERVED + small) / (2 * PER_CONNECTION);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_limit() {
        assert_eq!(client_connections(10_000, 1 << 20), 10_000);
        let capped = client_connections(10_000, 1024);
        // Two client listeners at two descriptors each, the small listeners and the reserve fit.
        let used = 2 * capped as u64 * PER_CONNECTION
            + 2 * SMALL_LISTENER_CONNECTIONS as u64 * PER_CONNECTION
            + RESERVED;
        assert!(used <= 1024, "{capped} connections need {used}");
        assert!(capped >= 100, "{capped}");
        assert_eq!(client_connections(10_000, 10), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let now = raise().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!((now, limit.rlim_cur), (limit.rlim_max, limit.rlim_max));
    }
}
