//! Log output on stderr, as human-readable lines or JSON objects (`logging.format`), filtered by
//! `RUST_LOG` when set, else by `[logging]`.
//!
//! Lines are written in batches: they collect in a buffer that a background thread writes out every
//! [`FLUSH_EVERY`], so that per-request lines (`tower_http=debug`, off by default) do not cost two writes
//! to stderr per request. A warning or an error goes out at once, with everything before it, as does a
//! buffer past [`MAX_PENDING`]; [`flush`] empties the buffer at exit and before a panic's message.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use homestead_config::{LogFormat, Logging};
use opentelemetry_sdk::trace::SdkTracer;
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber, with `tracer` receiving spans when OTLP export is on. The filter of `[logging]` was validated when the config was loaded;
/// a bad `RUST_LOG` is reported and the configured filter used instead.
pub fn init(logging: &Logging, tracer: Option<SdkTracer>) {
    let configured = || EnvFilter::new(logging.filter());
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives).unwrap_or_else(|err| {
            eprintln!("RUST_LOG={directives} is not a log filter ({err}): using [logging]");
            configured()
        }),
        Err(_) => configured(),
    };
    let text = (logging.format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(Batched)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let json = (logging.format == LogFormat::Json)
        .then(|| tracing_subscriber::fmt::layer().json().with_writer(Batched));
    let flusher = std::thread::Builder::new().name("log-flush".into());
    let started = flusher.spawn(|| {
        loop {
            std::thread::sleep(FLUSH_EVERY);
            flush();
        }
    });
    if let Err(err) = started {
        eprintln!("cannot start the log writer thread ({err}): lines wait for a warning or exit");
    }
    let panic_message = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // `try_lock`: the panic may have happened while the buffer was held.
        if let Ok(mut pending) = PENDING.try_lock() {
            write_out(&mut pending);
        }
        panic_message(info);
    }));
    crate::request_span::set_exported(tracer.is_some());
    let spans = tracer.map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(spans)
        .init();
}

/// How often buffered lines are written out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered bytes beyond which lines are written out at once.
pub const MAX_PENDING: usize = 64 * 1024;

/// Formatted lines not yet written to stderr.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Writes out the buffered lines.
pub fn flush() {
    write_out(&mut PENDING.lock().unwrap_or_else(PoisonError::into_inner));
}

fn write_out(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().write_all(pending);
        pending.clear();
    }
}

/// The writers of [`PENDING`], one per event.
struct Batched;

/// One event's output: appended to [`PENDING`], written out at once when urgent.
struct Line {
    urgent: bool,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        pending.extend_from_slice(bytes);
        if self.urgent || pending.len() > MAX_PENDING {
            write_out(&mut pending);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { urgent: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Vec<u8> {
        PENDING.lock().unwrap().clone()
    }

    #[test]
    fn quiet_lines_wait_and_urgent_ones_take_them_along() {
        Batched.make_writer().write_all(b"a debug line\n").unwrap();
        assert!(pending().ends_with(b"a debug line\n"));
        Line { urgent: true }.write_all(b"a warning\n").unwrap();
        assert!(pending().is_empty(), "written out with the warning");
        Batched.make_writer().write_all(b"another\n").unwrap();
        flush();
        assert!(pending().is_empty());
        // A full buffer goes out without waiting for the thread.
        Batched
            .make_writer()
            .write_all(&vec![b'x'; MAX_PENDING + 1])
            .unwrap();
        assert!(pending().is_empty());
    }
}
