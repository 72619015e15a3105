//! `silo`: the command-line entry to Silo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use silo_host::{Config, Runtime, Silo, Status};

#[derive(Parser)]
#[command(
    name = "silo",
    version,
    about = "Run untrusted CMS upload plugins against sandboxed storage"
)]
struct Cli {
    /// Config file (default: ./silo.toml if present, else the built-in default).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store one local file at <volume>/<path> through the upload pipeline;
    /// prints the outcome as JSON (exit 0 accepted, 1 rejected or failed).
    Run {
        /// Destination, e.g. public/photos/cat.jpg.
        target: String,
        /// The local file to upload.
        #[arg(long)]
        file: PathBuf,
        /// Declared content type (default: guessed from the destination path).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Inspect plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Print a component's sha256, imports and exports, and whether Silo can
    /// run it (exit 1 if not).
    Check { component: PathBuf },
}

fn load_config(explicit: Option<&Path>) -> anyhow::Result<Config> {
    if let Some(path) = explicit {
        return Ok(Config::load(path)?);
    }
    let local = Path::new("silo.toml");
    if local.exists() {
        return Ok(Config::load(local)?);
    }
    eprintln!(
        "silo: no config file (no --config, no ./silo.toml); using the built-in default: \
         volumes 'public' and 'private' under ./silo-data, plugins upload-guard and image-styles"
    );
    Ok(Config::builtin_default(&std::env::current_dir()?))
}

async fn run(config: Option<&Path>, target: &str, file: &Path, content_type: Option<&str>) -> anyhow::Result<Status> {
    if !file.is_file() {
        anyhow::bail!("input file {} does not exist or is not a file", file.display());
    }
    let config = load_config(config)?;
    // Refuse a bad destination before anything is created on disk.
    config.check_target(target)?;
    let silo = Silo::open(config)?;
    let report = silo.upload_file(target, file, content_type).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.status)
}

fn check(path: &Path) -> anyhow::Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let runtime = Runtime::new(None, 64)?;
    let name = path.display().to_string();
    let inspection = runtime.inspect(&name, &bytes)?;
    println!("component: {name}");
    println!("sha256:    {}", inspection.sha256);
    match &inspection.verdict {
        Ok(()) => println!("world:     silo:plugin/upload-plugin@0.1.0 (Silo can run it)"),
        Err(e) => println!("world:     not runnable by Silo: {e}"),
    }
    println!("imports:");
    for import in &inspection.imports {
        println!("  {import}");
    }
    println!("exports:");
    for export in &inspection.exports {
        println!("  {export}");
    }
    Ok(inspection.verdict.is_ok())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SILO_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("silo: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Run {
            target,
            file,
            content_type,
        } => match runtime.block_on(run(cli.config.as_deref(), &target, &file, content_type.as_deref())) {
            Ok(Status::Accepted) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                let message = format!("{e:#}");
                eprintln!("silo: {message}");
                let json =
                    serde_json::json!({ "status": "error", "error": { "code": "invalid-input", "message": message } });
                println!("{json:#}");
                ExitCode::from(2)
            }
        },
        Command::Plugin {
            command: PluginCommand::Check { component },
        } => match check(&component) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("silo: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}
