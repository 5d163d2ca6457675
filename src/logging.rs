//! Log output on stderr, as human-readable lines or JSON objects (`logging.format`), filtered by
//! `RUST_LOG` when set, else by `[logging]`.

use std::io::IsTerminal;

use homestead_config::{LogFormat, Logging};
use opentelemetry_sdk::trace::SdkTracer;
use tracing_subscriber::EnvFilter;
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
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let json = (logging.format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    let spans = tracer.map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(spans)
        .init();
}
