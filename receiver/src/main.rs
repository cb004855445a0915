//! The `flagpost-receiver` binary: argument parsing. Logging and signals are set up as the
//! sidecar's are ([`flagpost::process`]); everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flagpost::process::{init_logging, shutdown_signal};
use flagpost_receiver::config::Config;

#[derive(Parser)]
#[command(
    name = "flagpost-receiver",
    version,
    about = "Verified flag web hooks in, a local flag cache out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the receiver (built-in defaults when no --config is given).
    Serve {
        /// The TOML configuration file; watched and reloaded while running.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print every error.
    Check {
        #[arg(long, default_value = "config/receiver.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: valid", config.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("flagpost-receiver: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    refuse_transparent_huge_pages();
    let (config, config_file) = match &config_path {
        Some(path) => {
            let (config, file) = Config::load_file(path)?;
            (config, Some(file))
        }
        None => (Config::default(), None),
    };
    // Once the configuration says how: every line of the run is in one format.
    init_logging(config.fixed.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.fixed.listen)
            .await
            .with_context(|| format!("listening on {}", config.fixed.listen))?;
        flagpost_receiver::run(listener, config, config_file, shutdown_signal()).await?;
        Ok(())
    })
}

// As the sidecar's binary does (`src/main.rs`): the writer thread and the request threads allocate
// for every web hook (its body, its parsed change, its rows), and glibc's malloc and free with
// their consolidation cost more of that than mimalloc's per-thread free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc commits its arena at once, and where the kernel's transparent huge pages are
/// enabled for it, each 2 MiB of the arena that is touched at all becomes resident whole: with
/// 10,000 change streams open (each a connection with two 8 KiB hyper buffers, barely written)
/// that was 20 KiB of RSS per stream instead of 12 KiB. Refused for this process before the
/// runtime allocates its connections; the cost is a few more TLB misses.
fn refuse_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process's flags.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        let error = std::io::Error::last_os_error();
        eprintln!("flagpost-receiver: cannot refuse transparent huge pages: {error}");
    }
}
