//! Client requests counted per ten-second slot over the last ten minutes, lock-free: the console's
//! request-rate sparkline reads it, so the server's own numbers are shown without a metrics stack.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Seconds one slot covers.
pub const SLOT_SECS: u64 = 10;
/// Slots kept: ten minutes.
const SLOTS: usize = 60;

/// A ring of counters: each cell holds its slot number (high 32 bits) and its count (low 32 bits), so
/// that a cell left from an older lap is recognised and restarted in one atomic update.
#[derive(Debug)]
pub struct RequestRate {
    started: Instant,
    cells: [AtomicU64; SLOTS],
}

impl Default for RequestRate {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            cells: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RequestRate {
    /// Counts one request now.
    pub fn record(&self) {
        self.record_in(self.slot_now());
    }

    /// Requests per slot, oldest first, ending with the current (partial) slot; slots before the
    /// server started are left out.
    pub fn recent(&self) -> Vec<u64> {
        self.recent_at(self.slot_now())
    }

    fn slot_now(&self) -> u64 {
        self.started.elapsed().as_secs() / SLOT_SECS
    }

    fn record_in(&self, slot: u64) {
        let tag = slot & 0xFFFF_FFFF;
        let cell = &self.cells[(slot % SLOTS as u64) as usize];
        // The closure always returns Some: the update cannot fail.
        let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| {
            Some(match value >> 32 == tag {
                true if value & 0xFFFF_FFFF == 0xFFFF_FFFF => value,
                true => value + 1,
                false => (tag << 32) | 1,
            })
        });
    }

    fn recent_at(&self, now: u64) -> Vec<u64> {
        let first = now.saturating_sub(SLOTS as u64 - 1);
        (first..=now)
            .map(|slot| {
                let value = self.cells[(slot % SLOTS as u64) as usize].load(Ordering::Relaxed);
                match value >> 32 == slot & 0xFFFF_FFFF {
                    true => value & 0xFFFF_FFFF,
                    false => 0,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_slot_and_old_laps_read_as_zero() {
        let rate = RequestRate::default();
        rate.record_in(0);
        rate.record_in(0);
        rate.record_in(2);
        assert_eq!(rate.recent_at(2), vec![2, 0, 1]);
        // A lap later the window is slots 1 to 60, and slot 60 shares slot 0's cell: the old count is
        // not read as the new one.
        let recent = rate.recent_at(60);
        assert_eq!(
            (recent.len(), &recent[..3], recent[59]),
            (60, &[0, 1, 0][..], 0)
        );
        rate.record_in(60);
        assert_eq!(rate.recent_at(60)[59], 1);
    }
}
