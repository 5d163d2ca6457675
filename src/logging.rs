//! Log output on stderr, as human-readable lines or JSON objects (`logging.format`), filtered by
//! `RUST_LOG` when set, else by `[logging]`.

use std::io::IsTerminal;

use homestead_config::{LogFormat, Logging};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. The filter of `[logging]` was validated when the config was loaded;
/// a bad `RUST_LOG` is reported and the configured filter used instead.
pub fn init(logging: &Logging) {
    let configured = || EnvFilter::new(logging.filter());
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives).unwrap_or_else(|err| {
            eprintln!("RUST_LOG={directives} is not a log filter ({err}): using [logging]");
            configured()
        }),
        Err(_) => configured(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match logging.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
