//! `silo`: the command-line entry to Silo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use silo_host::{Config, Silo, Status};

mod authoring;

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
    /// Store one local file at VOLUME/PATH through the upload pipeline;
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
    /// Maintain the metadata cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Serve the HTTP API (for CMSs in any language). Writes and private
    /// reads need `Authorization: Bearer $SILO_TOKEN`; `/metrics` and the
    /// admin routes need `$SILO_ADMIN_TOKEN` (unset: they are off). The
    /// config's `[serve]` may name files holding them instead.
    Serve {
        /// Address to listen on (default: the config's `serve.listen`, else
        /// 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Copy an existing uploads directory into a volume (or, with
    /// --reverse, a volume into a directory). Resumable: files already at
    /// the destination with the same size and checksum are skipped. Every
    /// copy is verified. Exit 1 if any file could not be copied.
    Migrate(MigrateArgs),
    /// Print the audit trail: every change made through Silo and every
    /// refused upload, oldest first, one per line (`--json`: one JSON
    /// object per line).
    Audit(AuditArgs),
    /// Inspect plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Rebuild the cache from the backends (all volumes, or one).
    Refresh {
        #[arg(long)]
        volume: Option<String>,
        /// First give files whose ETag is not the MD5 of their bytes (put
        /// in a local volume by hand, or stored before Silo made MD5
        /// ETags) that ETag; this reads each such file once.
        #[arg(long)]
        rehash: bool,
    },
    /// Report files missing from, extra in, or stale in the cache; exit 1 on
    /// any drift. Changes nothing.
    Verify {
        #[arg(long)]
        volume: Option<String>,
    },
    /// Files, bytes and directories per volume.
    Stats,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Print a component's sha256, imports and exports, and whether Silo can
    /// run it (exit 1 if not).
    Check { component: PathBuf },
    /// Write a new plugin project NAME (in DIR, default .): its source, the
    /// SDK and the plugin world, `silo-plugin.toml` (the keys of a
    /// `[[plugins]]` stanza) and test cases.
    New {
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: authoring::Lang,
        #[arg(long, value_enum, default_value = "validator")]
        kind: authoring::Kind,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build the plugin project in DIR, check the component, and print its
    /// sha256 and the `[[plugins]]` stanza for silo.toml.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Build the plugin project in DIR and run each case of its
    /// tests/cases.toml through Silo's pipeline on memory volumes (exit 1
    /// if one fails).
    Test {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
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
    let silo = Silo::open(config).await?;
    let source = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let mut pending = silo.stage_stream(target, source, content_type).await?;
    pending.actor = Some(silo_host::audit::Actor::request(silo_host::audit::CLI));
    let report = silo.judge(pending).await;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.status)
}

fn check(path: &Path) -> anyhow::Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.display().to_string();
    let inspection = silo_host::inspect_plugin(&name, &bytes)?;
    println!("component: {name}");
    println!("sha256:    {}", inspection.sha256);
    match &inspection.verdict {
        Ok(()) => println!("world:     silo:plugin/upload-plugin@0.1.0 (Silo can run it)"),
        Err(e) => println!("world:     not runnable by Silo: {e}"),
    }
    println!(
        "memory:    at least {} MiB to start (a stage's limits.memory_mib must be as much or more)",
        inspection.min_memory_mib.max(1)
    );
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

/// The volumes a cache command applies to.
fn volumes_of(storage: &silo_host::Storage, only: Option<&str>) -> anyhow::Result<Vec<String>> {
    match only {
        Some(v) => {
            storage
                .volume(v)
                .map_err(|_| anyhow::anyhow!("there is no volume named '{v}'"))?;
            Ok(vec![v.to_owned()])
        }
        None => Ok(storage.volumes().map(|v| v.name.clone()).collect()),
    }
}

/// A spinner counting scanned objects (drawn only on a terminal).
fn scanning(volume: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("scanning {volume}"));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} objects ({per_sec})").expect("valid template"),
    );
    bar
}

/// A secret from the environment, else from the file the config names.
fn secret(var: &str, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Ok(value) = std::env::var(var)
        && !value.is_empty()
    {
        return Ok(Some(value));
    }
    let Some(file) = file else { return Ok(None) };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the secret file {} (for {var})", file.display()))?;
    // Files written by `echo` end in a newline that is not part of it.
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        anyhow::bail!("the secret file {} (for {var}) is empty", file.display());
    }
    Ok(Some(value.to_owned()))
}

async fn serve(config: Option<&Path>, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let config = load_config(config)?;
    let settings = config.serve.clone();
    let write = secret("SILO_TOKEN", settings.token_file.as_deref())?
        .filter(|t| t.len() >= 16)
        .context(
            "set SILO_TOKEN (or the config's serve.token_file) to a secret of at least 16 characters; \
             writes and private reads need it",
        )?;
    // Signatures use their own key when one is given, else the token.
    let signing_key = match secret("SILO_SIGNING_KEY", settings.signing_key_file.as_deref())? {
        Some(k) if k.len() < 16 => anyhow::bail!("SILO_SIGNING_KEY must be at least 16 characters"),
        key => key.unwrap_or_else(|| write.clone()).into_bytes(),
    };
    let admin = match secret("SILO_ADMIN_TOKEN", settings.admin_token_file.as_deref())? {
        Some(t) if t.len() < 16 => anyhow::bail!("SILO_ADMIN_TOKEN must be at least 16 characters"),
        Some(t) if t == write => anyhow::bail!("SILO_ADMIN_TOKEN must differ from SILO_TOKEN"),
        admin => admin,
    };
    let listen = listen
        .or(settings.listen)
        .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    let s3_api = config.s3_api.clone();
    let drain = std::time::Duration::from_secs(settings.drain_timeout_secs.unwrap_or(30));
    let volumes: Vec<String> = config.volumes.keys().cloned().collect();
    // The principals of the credentials file (and SILO_S3_ACCESS_KEY), for
    // both doors; SIGHUP reloads them, and a bad file keeps the old set.
    let principals = if settings.credentials_file.is_some() || s3_api.is_some() {
        let principals = std::sync::Arc::new(
            silo_host::principals::PrincipalsHandle::open(settings.credentials_file.as_deref(), volumes)
                .context("the principals")?,
        );
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            let principals = principals.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match principals.reload() {
                        Ok(n) => eprintln!("silo: reloaded the credentials: {n} principals"),
                        Err(e) => eprintln!("silo: kept the credentials in force: {e}"),
                    }
                }
            });
        }
        Some(principals)
    } else {
        None
    };
    let silo = std::sync::Arc::new(Silo::open(config).await?);
    // What this node's last process left half-recorded is set right
    // before it serves; the upkeep runs until it stops.
    let background = silo.start_background().await?;
    if background.recovered > 0 {
        eprintln!(
            "silo: set right {} files this node left half-recorded when it stopped",
            background.recovered
        );
    }
    let app = silo_host::serve::router(
        silo.clone(),
        silo_host::serve::Tokens {
            write,
            signing_key,
            admin,
            principals: principals.clone(),
        },
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // One signal stops both doors; each finishes its requests in flight.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let when_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut doors = tokio::task::JoinSet::new();
    if let (Some(s3), Some(principals)) = (s3_api, principals) {
        if principals.current().s3_keys() == 0 {
            anyhow::bail!(
                "the S3 endpoint has no principals with an S3 key: list them in [serve] credentials_file, or set SILO_S3_ACCESS_KEY and SILO_S3_SECRET_KEY"
            );
        }
        let s3_listener = tokio::net::TcpListener::bind(s3.listen)
            .await
            .with_context(|| format!("cannot listen on {} for the S3 endpoint", s3.listen))?;
        eprintln!("silo: S3 endpoint on http://{}", s3_listener.local_addr()?);
        let settings = silo_host::serve::s3::S3ApiSettings {
            base_domain: s3.base_domain.clone(),
            region: s3.region.clone(),
            idle_timeout: std::time::Duration::from_secs(s3.idle_timeout_secs),
        };
        doors.spawn(silo_host::serve::s3::serve(
            s3_listener,
            silo.clone(),
            principals,
            settings,
            when_stopped(),
            drain,
        ));
    }
    eprintln!("silo: listening on http://{}", listener.local_addr()?);
    // In-flight requests (uploads included) finish before the process exits.
    let max_connections = silo.config().limits.max_connections as usize;
    doors.spawn(silo_host::serve::serve(
        listener,
        app,
        max_connections,
        when_stopped(),
        drain,
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        // A door that ends by itself has failed.
        Some(ended) = doors.join_next() => {
            ended??;
            anyhow::bail!("a listener stopped");
        }
    }
    // Not ready from now on (a load balancer's `/readyz` sees 503); no new
    // connections; requests in flight get the drain timeout to finish.
    silo.drain();
    background.stop();
    eprintln!(
        "silo: draining: finishing the requests in flight (at most {}s)",
        drain.as_secs()
    );
    let _ = stop.send(true);
    let mut cut_off = false;
    while let Some(ended) = doors.join_next().await {
        cut_off |= ended?? == silo_host::serve::Drained::TimedOut;
    }
    if cut_off {
        anyhow::bail!(
            "the drain timeout ({}s) cut off requests still in flight",
            drain.as_secs()
        );
    }
    eprintln!("silo: drained");
    Ok(())
}

#[derive(clap::Args)]
struct AuditArgs {
    #[arg(long)]
    volume: Option<String>,
    /// Paths starting with this (a plain string prefix).
    #[arg(long)]
    prefix: Option<String>,
    /// The principal: a credential's name, `cli`, `silo`, or a plugin's.
    #[arg(long)]
    principal: Option<String>,
    /// Everything one request (one upload and what its plugins did) caused.
    #[arg(long)]
    request: Option<String>,
    /// From this time: RFC 3339 (2026-12-04T10:00:00Z) or a duration ago (2h, 7days).
    #[arg(long, value_parser = silo_host::audit::parse_time)]
    since: Option<u64>,
    /// Before this time, as for --since.
    #[arg(long, value_parser = silo_host::audit::parse_time)]
    until: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

async fn audit(config: Option<&Path>, args: AuditArgs) -> anyhow::Result<bool> {
    let config = load_config(config)?;
    // A volume no longer configured still has its history.
    let storage = silo_host::open_storage(&config).await?;
    let filter = silo_host::audit::Filter {
        volume: args.volume,
        prefix: args.prefix,
        principal: args.principal,
        request_id: args.request,
        since_ms: args.since,
        until_ms: args.until,
    };
    let page_size = silo_host::admin::MAX_AUDIT_PAGE;
    let mut after = None;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        let page = storage.audit_page(&filter, after, page_size).await?;
        for record in &page {
            use std::io::Write;
            if args.json {
                writeln!(out, "{}", serde_json::to_string(record)?)?;
            } else {
                writeln!(out, "{}", record.line())?;
            }
        }
        match page.last() {
            Some(last) if page.len() == page_size => after = Some(last.id),
            _ => return Ok(true),
        }
    }
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// The local directory.
    dir: PathBuf,
    /// The volume.
    #[arg(long)]
    volume: String,
    /// Copies running at once.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,
    /// Print what would be copied, and copy nothing.
    #[arg(long)]
    dry_run: bool,
    /// Copy the volume into the directory instead (for leaving S3).
    #[arg(long)]
    reverse: bool,
}

async fn migrate(config: Option<&Path>, args: MigrateArgs) -> anyhow::Result<bool> {
    use silo_host::migrate::{self, Action, Direction};
    let config = load_config(config)?;
    let direction = if args.reverse {
        Direction::Export
    } else {
        Direction::Import
    };
    if direction == Direction::Import && !args.dir.is_dir() {
        anyhow::bail!("{} is not a directory", args.dir.display());
    }
    if direction == Direction::Export && args.dir.exists() && !args.dir.is_dir() {
        anyhow::bail!("{} exists and is not a directory", args.dir.display());
    }
    let storage = silo_host::open_storage(&config).await?;
    volumes_of(&storage, Some(&args.volume))?;
    let plan = migrate::plan(&storage, &args.volume, &args.dir, direction).await?;
    let (from, to) = match direction {
        Direction::Import => (args.dir.display().to_string(), format!("volume '{}'", args.volume)),
        Direction::Export => (format!("volume '{}'", args.volume), args.dir.display().to_string()),
    };
    for (path, why) in &plan.unusable {
        println!("unusable {path}: {why}");
    }
    if args.dry_run {
        for item in &plan.items {
            let what = match item.action {
                Action::Copy => "copy",
                Action::Check => "check",
            };
            println!("{what} {} ({} bytes)", item.path, item.size);
        }
        let checks = plan.items.iter().filter(|i| i.action == Action::Check).count();
        println!(
            "plan: {} files ({} bytes) from {from} to {to}; {checks} of them already there with the same size \
             (copied only if their checksums differ); {} unusable; nothing copied (dry run)",
            plan.items.len(),
            plan.bytes(),
            plan.unusable.len()
        );
        return Ok(true);
    }
    let bar = indicatif::ProgressBar::new(plan.bytes());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} ({bytes_per_sec}, {eta})")
            .expect("valid template"),
    );
    let files = plan.items.len();
    let progress = {
        let bar = bar.clone();
        std::sync::Arc::new(move |done: u64, bytes: u64| {
            bar.set_position(bytes);
            bar.set_message(format!("{done}/{files} files"));
        })
    };
    let unusable = plan.unusable.len();
    let report = migrate::run(
        &storage,
        &args.volume,
        &args.dir,
        direction,
        plan,
        args.jobs.into(),
        progress,
    )
    .await;
    bar.finish_and_clear();
    for (path, why) in &report.refused {
        println!("refused {path}: {why}");
    }
    for (path, why) in &report.failed {
        println!("failed {path}: {why}");
    }
    println!(
        "{from} -> {to}: copied {} ({} bytes), already there {}, refused by the content policy {}, failed {}, unusable {unusable}",
        report.copied,
        report.copied_bytes,
        report.skipped,
        report.refused.len(),
        report.failed.len()
    );
    Ok(report.is_complete())
}

async fn cache(config: Option<&Path>, command: CacheCommand) -> anyhow::Result<bool> {
    let config = load_config(config)?;
    let storage = silo_host::open_storage(&config).await?;
    match command {
        CacheCommand::Refresh { volume, rehash } => {
            for v in volumes_of(&storage, volume.as_deref())? {
                if rehash {
                    let bar = scanning(&v);
                    let n = silo_host::maintenance::rehash(&storage, &v, &|n| bar.set_position(n)).await?;
                    bar.finish_and_clear();
                    println!("{v}: {n} files given the MD5 of their bytes as their ETag");
                }
                let bar = scanning(&v);
                let r = silo_host::maintenance::refresh(&storage, &v, &|n| bar.set_position(n)).await?;
                bar.finish_and_clear();
                println!(
                    "{v}: {} files, {} bytes (added {}, removed {}, changed {})",
                    r.files, r.bytes, r.added, r.removed, r.changed
                );
                if r.resumed > 0 {
                    println!(
                        "{v}: resumed an interrupted refresh ({} objects already listed)",
                        r.resumed
                    );
                }
                for key in &r.skipped {
                    println!("{v}: skipped {key:?}: not a valid path");
                }
                if r.abandoned_removed > 0 {
                    println!("{v}: removed {} abandoned multipart uploads", r.abandoned_removed);
                }
                if let Some(e) = &r.abandoned_error {
                    println!("{v}: could not look for abandoned uploads: {e}");
                }
            }
            Ok(true)
        }
        CacheCommand::Verify { volume } => {
            let mut clean = true;
            for v in volumes_of(&storage, volume.as_deref())? {
                let bar = scanning(&v);
                let drift = silo_host::maintenance::verify(&storage, &v, &|n| bar.set_position(n)).await?;
                bar.finish_and_clear();
                for (kind, keys) in [
                    ("missing", &drift.missing),
                    ("extra", &drift.extra),
                    ("stale", &drift.stale),
                ] {
                    for key in keys {
                        println!("{v}: {kind} {key}");
                    }
                }
                if drift.is_clean() {
                    println!("{v}: clean");
                }
                clean &= drift.is_clean();
            }
            Ok(clean)
        }
        CacheCommand::Stats => {
            println!("{:<16} {:>12} {:>16} {:>12}", "volume", "files", "bytes", "directories");
            for r in storage.volume_reports().await? {
                println!("{:<16} {:>12} {:>16} {:>12}", r.volume, r.files, r.bytes, r.directories);
            }
            Ok(true)
        }
    }
}

/// What is logged: `SILO_LOG` (an `EnvFilter` spec; default `warn`).
/// s3s's own log is off unless `SILO_LOG` names it: it writes every
/// client error at ERROR with the request's values in full, so anyone
/// could fill the log; the S3 endpoint logs one line per error instead.
fn log_filter() -> Result<tracing_subscriber::EnvFilter, String> {
    let spec = std::env::var("SILO_LOG").unwrap_or_else(|_| "warn".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&spec).map_err(|e| format!("SILO_LOG={spec:?}: {e}"))?;
    if spec.contains("s3s") {
        return Ok(filter);
    }
    Ok(filter.add_directive("s3s=off".parse().expect("a valid directive")))
}

fn main() -> ExitCode {
    let filter = match log_filter() {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("silo: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
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
        Command::Cache { command } => exit(runtime.block_on(cache(cli.config.as_deref(), command))),
        Command::Migrate(args) => exit(runtime.block_on(migrate(cli.config.as_deref(), args))),
        Command::Audit(args) => exit(runtime.block_on(audit(cli.config.as_deref(), args))),
        Command::Serve { listen } => exit(runtime.block_on(serve(cli.config.as_deref(), listen)).map(|()| true)),
        Command::Plugin { command } => match command {
            PluginCommand::Check { component } => exit(check(&component)),
            PluginCommand::New { name, lang, kind, dir } => exit(authoring::new(&dir, &name, lang, kind).map(|root| {
                println!(
                    "created {}: `silo plugin test {0}` runs its cases, `silo plugin build {0}` makes the component",
                    root.display()
                );
                true
            })),
            PluginCommand::Build { dir } => exit(authoring::build(&dir).map(|built| {
                println!("component: {}", built.component.display());
                println!("sha256:    {}", built.sha256);
                println!(
                    "\nCopy the component into the config's plugin_dir and add:\n\n{}",
                    built.stanza
                );
                true
            })),
            PluginCommand::Test { dir } => {
                exit(authoring::build(&dir).and_then(|built| runtime.block_on(authoring::test(&dir, &built))))
            }
        },
    }
}

/// Exit 0 for a good outcome, 1 for a bad one (rejected, drift), 2 for an
/// error that stopped the command.
fn exit(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("silo: {e:#}");
            ExitCode::from(2)
        }
    }
}
