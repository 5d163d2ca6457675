//! Progress of a long operator command (import-reference, backup, restore, export-user, import-user) on
//! stderr: on a terminal one line redrawn in place (a bar, files, bytes, rate, ETA) at most five times a
//! second; otherwise a plain line every ten seconds, so that a log stays readable. Both end with a
//! summary line.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a terminal line is redrawn.
const TERMINAL_EVERY: Duration = Duration::from_millis(200);
/// How often a plain line is written.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// Width of the terminal bar, in characters.
const BAR: usize = 24;

/// Counts files and bytes against their totals and reports them.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    terminal: bool,
    started: Instant,
    state: Mutex<State>,
}

/// Files and bytes done, of their totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Files done.
    pub files: u64,
    /// Files in all.
    pub files_total: u64,
    /// Bytes done.
    pub bytes: u64,
    /// Bytes in all.
    pub bytes_total: u64,
}

#[derive(Debug)]
struct State {
    counts: Counts,
    shown: Instant,
}

impl Progress {
    /// Starts reporting `what` (e.g. "backup") of `files_total` files of `bytes_total` bytes.
    pub fn new(what: &'static str, files_total: u64, bytes_total: u64) -> Self {
        let now = Instant::now();
        Self {
            what,
            terminal: std::io::stderr().is_terminal(),
            started: now,
            state: Mutex::new(State {
                counts: Counts {
                    files_total,
                    bytes_total,
                    ..Counts::default()
                },
                shown: now,
            }),
        }
    }

    /// Counts bytes of the file in flight.
    pub fn bytes(&self, bytes: u64) {
        self.change(|counts| counts.bytes += bytes);
    }

    /// Counts one finished file.
    pub fn file_done(&self) {
        self.change(|counts| counts.files += 1);
    }

    /// Replaces the counts with a tally kept elsewhere (whose totals may grow while it runs).
    pub fn set(&self, counts: Counts) {
        self.change(|current| *current = counts);
    }

    fn change(&self, change: impl FnOnce(&mut Counts)) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut state.counts);
        let every = if self.terminal {
            TERMINAL_EVERY
        } else {
            PLAIN_EVERY
        };
        if state.shown.elapsed() < every {
            return;
        }
        state.shown = Instant::now();
        let bar = self.terminal.then_some(BAR);
        let line = line(self.what, state.counts, self.started.elapsed(), bar);
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
    }

    /// Prints the summary line: files, bytes, time and throughput.
    pub fn finish(&self) {
        let counts = self.state.lock().unwrap_or_else(|p| p.into_inner()).counts;
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = counts.bytes as f64 / elapsed.max(0.001);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(
            err,
            "{}: {} files, {} in {elapsed:.1} s ({}/s)",
            self.what,
            counts.files,
            human_bytes(counts.bytes),
            human_bytes(rate as u64)
        );
    }
}

/// One progress line: `what: [bar] files a/b, x/y bytes, rate, ETA`.
fn line(what: &str, counts: Counts, elapsed: Duration, bar: Option<usize>) -> String {
    let fraction = if counts.bytes_total > 0 {
        counts.bytes as f64 / counts.bytes_total as f64
    } else if counts.files_total > 0 {
        counts.files as f64 / counts.files_total as f64
    } else {
        1.0
    };
    let rate = counts.bytes as f64 / elapsed.as_secs_f64().max(0.001);
    let left = counts.bytes_total.saturating_sub(counts.bytes) as f64;
    let eta = if counts.bytes > 0 && rate > 0.0 {
        format!("{} s", (left / rate).ceil() as u64)
    } else {
        "?".into()
    };
    let bar = bar.map_or_else(String::new, |width| {
        let full = ((fraction * width as f64) as usize).min(width);
        format!("[{}{}] ", "#".repeat(full), ".".repeat(width - full))
    });
    format!(
        "{what}: {bar}files {}/{}, {}/{}, {}/s, ETA {eta}",
        counts.files,
        counts.files_total,
        human_bytes(counts.bytes),
        human_bytes(counts.bytes_total),
        human_bytes(rate as u64),
    )
}

/// A byte count for people: B, KiB, MiB, GiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_files_bytes_rate_and_eta() {
        let counts = Counts {
            files: 1,
            files_total: 4,
            bytes: 1 << 20,
            bytes_total: 4 << 20,
        };
        let plain = line("backup", counts, Duration::from_secs(1), None);
        assert_eq!(
            plain,
            "backup: files 1/4, 1.0 MiB/4.0 MiB, 1.0 MiB/s, ETA 3 s"
        );
        let bar = line("backup", counts, Duration::from_secs(1), Some(8));
        assert!(bar.contains("[##......] files 1/4"), "{bar}");
        let start = line("restore", Counts::default(), Duration::ZERO, Some(4));
        assert!(
            start.contains("[####] files 0/0, 0 B/0 B") && start.ends_with("ETA ?"),
            "{start}"
        );
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn counting_and_setting_change_the_counts() {
        let progress = Progress::new("export-user", 2, 10);
        progress.bytes(6);
        progress.file_done();
        let counts = progress.state.lock().unwrap().counts;
        assert_eq!((counts.files, counts.bytes, counts.files_total), (1, 6, 2));
        let tally = Counts {
            files: 3,
            files_total: 5,
            bytes: 7,
            bytes_total: 9,
        };
        progress.set(tally);
        assert_eq!(progress.state.lock().unwrap().counts, tally);
    }
}
