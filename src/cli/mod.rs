//! The `flagpost` command line: `serve`, `check` and `deliveries`. The binary only calls [`main`].
//!
//! - [`deliveries`]: `flagpost deliveries ...`, the admin API over HTTP.

pub mod deliveries;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::process::{init_logging, shutdown_signal};
use crate::store::UnusableFile;

#[derive(Parser)]
#[command(
    name = "flagpost",
    version,
    about = "Durable, signed delivery of feature-flag changes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: change API, flag files, delivery.
    Serve {
        /// Configuration file (TOML); without one the built-in defaults apply.
        #[arg(long, env = "FLAGPOST_CONFIG")]
        config: Option<PathBuf>,
        /// Start a new database where the database file is empty, truncated or damaged (the file is
        /// moved aside, not deleted). Without it such a file is refused: a new database restarts
        /// the event sequences receivers order by.
        #[arg(long)]
        new_database: bool,
    },
    /// Validate a configuration and its flag files; exits non-zero listing every error.
    Check {
        #[arg(long, env = "FLAGPOST_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Pending deliveries, attempts and dead letters of a running sidecar, and replays.
    Deliveries(deliveries::DeliveriesArgs),
}

/// Parses the command line and runs the command; errors are printed, and give a failing status.
pub fn main() -> ExitCode {
    init_logging();
    let result = match Cli::parse().command {
        Command::Serve {
            config,
            new_database,
        } => serve(config, new_database),
        Command::Check { config } => return check(config),
        Command::Deliveries(args) => run_deliveries(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flagpost: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: Option<PathBuf>, new_database: bool) -> anyhow::Result<()> {
    let unusable_file = if new_database {
        UnusableFile::StartNew
    } else {
        UnusableFile::Refuse
    };
    let (config, config_file) = match config_path {
        Some(path) => {
            let (config, file) = Config::load_file(&path)?;
            (config, Some(file))
        }
        None => (Config::load(None)?, None),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listen = config.fixed.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        crate::server::run_with(
            listener,
            config,
            config_file,
            unusable_file,
            shutdown_signal(),
        )
        .await?;
        Ok(())
    })
}

fn run_deliveries(args: deliveries::DeliveriesArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let answer = runtime.block_on(deliveries::run(args))?;
    println!("{answer}");
    Ok(())
}

fn check(config_path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config_path.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let flag_dir = &config.fixed.flag_files.dir;
    let errors = crate::flagfiles::check_dir(flag_dir, &config);
    for error in &errors {
        eprintln!("{error}");
    }
    if errors.is_empty() {
        println!(
            "configuration{} and flag files in {} are valid",
            config_path
                .map(|p| format!(" {}", p.display()))
                .unwrap_or_else(|| " (built-in defaults)".into()),
            flag_dir.display()
        );
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
