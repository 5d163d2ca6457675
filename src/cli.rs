//! The command line: `homestead [--data-dir DIR] [--config FILE] [run | init | backup DEST | restore SRC |
//! export-user KEY [-o FILE] | import-user | import-reference ...]`, `run` being the default, like the
//! reference binary's `pubky-homeserver --data-dir DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use homestead_config::{Config, DataDir, Loaded, default_data_dir};

use crate::app::App;
use crate::command_context::CommandContext;
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
    /// Copy a consistent snapshot of the database and every file body it references into DEST (a new
    /// directory), while the server keeps serving.
    Backup {
        /// The backup directory to create (missing, or an empty directory).
        dest: PathBuf,
    },
    /// Restore a backup into this data directory's empty database and blob store (before the server
    /// starts there).
    Restore {
        /// A directory written by `homestead backup`.
        src: PathBuf,
    },
    /// Write one user's files to stdout, or to a file, as a user archive (format: see the README's
    /// "Operating").
    ExportUser {
        /// The user's public key (z-base-32).
        key: String,
        /// Write the archive to this new file instead of stdout (written under a temporary name and
        /// renamed when complete; a failed export leaves nothing)
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Read a user archive from stdin into this server: all of it, or nothing. The user must be
    /// absent here or have no files.
    ImportUser {
        /// The signup token to consume when this server requires one and the user is absent.
        #[arg(long)]
        signup_token: Option<String>,
    },
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
    let (data_dir, config) = (cli.data_dir.as_deref(), cli.config.as_deref());
    match cli.command.unwrap_or(Command::Run) {
        Command::Init => {
            let (_, _, keypair) = open_server(data_dir, config)?;
            println!("{}", keypair.public_key());
            Ok(())
        }
        Command::Run => {
            let (data_dir, loaded, keypair) = open_server(data_dir, config)?;
            serve(data_dir, loaded, keypair)
        }
        Command::Backup { dest } => block_on(async {
            let ctx = CommandContext::existing(data_dir, config)?;
            crate::backup::backup(&ctx, &dest).await
        }),
        Command::Restore { src } => block_on(async {
            let ctx = CommandContext::target(data_dir, config)?;
            crate::backup::restore(&ctx, &src).await
        }),
        Command::ExportUser { key, output } => block_on(async {
            let ctx = CommandContext::existing(data_dir, config)?;
            match output {
                Some(file) => crate::user_archive::export_user_to_file(&ctx, &key, &file).await,
                None => {
                    let out = tokio::io::stdout();
                    crate::user_archive::export_user(&ctx, &key, out, "stdout").await
                }
            }
        }),
        Command::ImportUser { signup_token } => block_on(async {
            let ctx = CommandContext::existing(data_dir, config)?;
            let stdin = tokio::io::stdin();
            crate::user_archive::import_user(&ctx, stdin, signup_token.as_deref()).await
        }),
        // The reference's inputs are checked before anything here creates a key or a config.
        Command::ImportReference(args) => {
            let data_dir = data_dir.map_or_else(default_data_dir, Path::to_path_buf);
            crate::import_reference::run(&data_dir, config, &args)
        }
    }
}

/// The data directory (created if missing), the configuration (the commented sample written if
/// missing) and the server key (created if missing), as the server starts.
fn open_server(
    data_dir: Option<&Path>,
    config: Option<&Path>,
) -> anyhow::Result<(DataDir, Loaded, pkarr::Keypair)> {
    let data_dir = DataDir::open(&data_dir.map_or_else(default_data_dir, Path::to_path_buf))?;
    let loaded = match config {
        Some(path) => Config::load(path, false)?,
        None => Config::load(&data_dir.config_file(), true)?,
    };
    let keypair = server_key::load_or_create(&data_dir.secret_file())?;
    Ok((data_dir, loaded, keypair))
}

/// Runs an operator command (backup, restore, export-user, import-user) to its end.
fn block_on(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(command)
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
