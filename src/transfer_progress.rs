//! Progress of a long operator command on stderr: on a terminal one line rewritten in place (files,
//! bytes, rate, ETA) at most five times a second; otherwise a plain line every ten seconds, so that a
//! log stays readable. Both end with a summary line.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts files and bytes against known totals and reports them.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    total_files: u64,
    total_bytes: u64,
    terminal: bool,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    files: u64,
    bytes: u64,
    last_shown: Instant,
}

impl Progress {
    /// Starts reporting `what` (e.g. "backup") of `total_files` files of `total_bytes` bytes.
    pub fn new(what: &'static str, total_files: u64, total_bytes: u64) -> Self {
        let now = Instant::now();
        Self {
            what,
            total_files,
            total_bytes,
            terminal: std::io::stderr().is_terminal(),
            started: now,
            state: Mutex::new(State {
                files: 0,
                bytes: 0,
                last_shown: now,
            }),
        }
    }

    /// Counts bytes of the file in flight.
    pub fn bytes(&self, bytes: u64) {
        let mut state = self.state.lock().expect("progress lock");
        state.bytes += bytes;
        self.maybe_show(&mut state);
    }

    /// Counts one finished file.
    pub fn file_done(&self) {
        let mut state = self.state.lock().expect("progress lock");
        state.files += 1;
        self.maybe_show(&mut state);
    }

    fn maybe_show(&self, state: &mut State) {
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        if state.last_shown.elapsed() < every {
            return;
        }
        state.last_shown = Instant::now();
        let line = self.line(state);
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
    }

    fn line(&self, state: &State) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = state.bytes as f64 / elapsed;
        let eta = if rate > 0.0 && self.total_bytes > state.bytes {
            format!("{:.0} s", (self.total_bytes - state.bytes) as f64 / rate)
        } else {
            "-".to_string()
        };
        format!(
            "{}: {}/{} files, {}/{} ({}/s), ETA {eta}",
            self.what,
            state.files,
            self.total_files,
            mib(state.bytes),
            mib(self.total_bytes),
            mib(rate as u64),
        )
    }

    /// Prints the summary line: files, bytes, time and throughput.
    pub fn finish(&self) {
        let state = self.state.lock().expect("progress lock");
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = state.bytes as f64 / elapsed.max(0.001);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(
            err,
            "{}: {} files, {} in {elapsed:.1} s ({}/s)",
            self.what,
            state.files,
            mib(state.bytes),
            mib(rate as u64)
        );
    }
}

/// Bytes in MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_against_the_totals() {
        let progress = Progress::new("backup", 4, 4 << 20);
        progress.bytes(1 << 20);
        progress.file_done();
        let line = progress.line(&progress.state.lock().unwrap());
        assert!(
            line.starts_with("backup: 1/4 files, 1.0 MiB/4.0 MiB ("),
            "{line}"
        );
        assert!(line.contains("ETA"), "{line}");
    }
}
