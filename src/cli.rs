//! The command line: `homestead [--data-dir DIR] [--config FILE] [run | init | import-reference]`, `run`
//! being the default, like the reference binary's `pubky-homeserver --data-dir DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use homestead_config::{Config, DataDir, Loaded, default_data_dir};

use crate::app::App;
use crate::import_reference::ImportReferenceArgs;
use crate::server_key;
use crate::telemetry::Telemetry;

/// A Pubky homeserver.
#[derive(Debug, Parser)]
#[command(name = "homestead", version, about)]
pub struct Cli {
    /// Data directory: config.toml, the server key, the embedded database and blobs [default: ~/.homestead]
    #[arg(short = 'd', long, env = "HOMESTEAD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Configuration file [default: <data-dir>/config.toml, written with commented defaults if missing]
    #[arg(short = 'c', long, env = "HOMESTEAD_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGINT or SIGTERM (the default).
    Run,
    /// Write the config file and the server key if missing, print the server's public key, and exit.
    Init,
    /// Switch from a reference homeserver (pubky-homeserver 0.9.3 or 0.17.1) in place: copy its server
    /// key, users, tokens, sessions, files and event log into this data directory's storage.
    ImportReference(ImportReferenceArgs),
}

/// Parses the command line, runs the command and turns any error into one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("homestead: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Everything the server creates (data directory, config, database, blobs) is its own alone.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    let config = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Run) {
        Command::Init => {
            let (_, _, keypair) = open_server(&data_dir, config)?;
            println!("{}", keypair.public_key());
            Ok(())
        }
        Command::Run => {
            let (data_dir, loaded, keypair) = open_server(&data_dir, config)?;
            serve(data_dir, loaded, keypair)
        }
        // The reference's inputs are checked before anything here creates a key or a config.
        Command::ImportReference(args) => crate::import_reference::run(&data_dir, config, &args),
    }
}

/// The data directory, the configuration and the server key (each created when missing).
fn open_server(
    data_dir: &std::path::Path,
    config: Option<&std::path::Path>,
) -> anyhow::Result<(DataDir, Loaded, pkarr::Keypair)> {
    let data_dir = DataDir::open(data_dir)?;
    let loaded = match config {
        Some(path) => Config::load(path, false)?,
        None => Config::load(&data_dir.config_file(), true)?,
    };
    let keypair = server_key::load_or_create(&data_dir.secret_file())?;
    Ok((data_dir, loaded, keypair))
}

fn serve(data_dir: DataDir, loaded: Loaded, keypair: pkarr::Keypair) -> anyhow::Result<()> {
    let mut telemetry = Telemetry::from_config(&loaded.config.otlp)?;
    crate::logging::init(&loaded.config.logging, telemetry.tracer());
    for warning in &loaded.warnings {
        tracing::warn!("config: {warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let metric_reader = telemetry.take_metric_reader();
        let app = App::start(&data_dir, loaded.config, keypair, metric_reader).await?;
        app.print_banner();
        wait_for_signal().await?;
        tracing::info!("shutting down");
        app.shutdown().await;
        telemetry.shutdown();
        Ok(())
    });
    crate::logging::flush();
    served
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    Ok(())
}
