//! The import's progress on stderr: on a terminal one line redrawn in place (a bar, files, bytes, rate
//! and time left); otherwise a plain line every few seconds, for logs.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use homestead_backends::import::Tally;

/// How often a terminal line is redrawn.
const TERMINAL_EVERY: Duration = Duration::from_millis(200);
/// How often a plain line is written.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Width of the bar, in characters.
const BAR: usize = 24;

/// Draws progress lines.
#[derive(Debug)]
pub struct Progress {
    terminal: bool,
    started: Instant,
    shown: Option<Instant>,
}

impl Progress {
    /// Progress on stderr, as a bar when stderr is a terminal.
    pub fn on_stderr() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            shown: None,
        }
    }

    /// Shows the tally if it is time to (always when `last`).
    pub fn update(&mut self, tally: &Tally, last: bool) {
        let every = if self.terminal {
            TERMINAL_EVERY
        } else {
            PLAIN_EVERY
        };
        if !last && self.shown.is_some_and(|shown| shown.elapsed() < every) {
            return;
        }
        self.shown = Some(Instant::now());
        let line = line(tally, self.started.elapsed(), self.terminal.then_some(BAR));
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}{}", if last { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
    }
}

/// One progress line: `[bar] files a/b, bytes x/y, rate, ETA`.
fn line(tally: &Tally, elapsed: Duration, bar: Option<usize>) -> String {
    let fraction = if tally.bytes_total > 0 {
        tally.bytes_done as f64 / tally.bytes_total as f64
    } else if tally.files_total > 0 {
        tally.files_done as f64 / tally.files_total as f64
    } else {
        1.0
    };
    let rate = tally.bytes_done as f64 / elapsed.as_secs_f64().max(0.001);
    let left = tally.bytes_total.saturating_sub(tally.bytes_done) as f64;
    let eta = if tally.bytes_done > 0 && rate > 0.0 {
        format!("{}s", (left / rate).ceil() as u64)
    } else {
        "?".into()
    };
    let bar = bar.map_or_else(String::new, |width| {
        let full = ((fraction * width as f64) as usize).min(width);
        format!("[{}{}] ", "#".repeat(full), ".".repeat(width - full))
    });
    format!(
        "import-reference: {bar}files {}/{}, {}/{}, {}/s, ETA {eta}",
        tally.files_done,
        tally.files_total,
        bytes(tally.bytes_done),
        bytes(tally.bytes_total),
        bytes(rate as u64),
    )
}

/// A byte count for people: B, KiB, MiB, GiB.
pub fn bytes(n: u64) -> String {
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
        let tally = Tally {
            files_total: 4,
            bytes_total: 4 << 20,
            files_done: 1,
            bytes_done: 1 << 20,
            ..Tally::default()
        };
        let plain = line(&tally, Duration::from_secs(1), None);
        assert_eq!(
            plain,
            "import-reference: files 1/4, 1.0 MiB/4.0 MiB, 1.0 MiB/s, ETA 3s"
        );
        let bar = line(&tally, Duration::from_secs(1), Some(8));
        assert!(bar.contains("[##......] files 1/4"), "{bar}");
        let start = line(&Tally::default(), Duration::ZERO, Some(4));
        assert!(
            start.contains("[####] files 0/0, 0 B/0 B") && start.ends_with("ETA ?"),
            "{start}"
        );
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
