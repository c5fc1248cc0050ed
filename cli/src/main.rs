//! `sluice`: the demo, and syncs and backfills from a config file against either store.

mod backfill;
mod deliver;
mod demo;
mod sources;
mod wiring;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_core::{Run, RunStatus, Trigger};
use sluice_local::LocalConfig;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Keeps a DynamoDB (or embedded) copy of the rows your SQL query selects."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Builds a small SQLite sales database and the embedded store, syncs, changes some
    /// rows, syncs again and shows what happened. No network, no AWS.
    Demo {
        /// Where to put the demo's files (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Runs one sync of each source (or of the ones named) from a config file.
    Sync {
        /// The config file (see README "Configuration").
        #[arg(long, short, default_value = "sluice.yaml")]
        config: PathBuf,
        /// Only these sources.
        #[arg(long = "source", short)]
        sources: Vec<String>,
        /// Print each run as JSON instead of a summary line.
        #[arg(long)]
        json: bool,
        /// Then deliver the calls of the sources that have a destination.
        #[arg(long)]
        deliver: bool,
    },
    /// Sends the calls of sources with a destination that have not been delivered in
    /// their current version (or, with --replay-failed, those whose delivery failed).
    Deliver {
        #[arg(long, short, default_value = "sluice.yaml")]
        config: PathBuf,
        /// Only these sources (default: every source with a destination).
        #[arg(long = "source", short)]
        sources: Vec<String>,
        #[arg(long)]
        replay_failed: bool,
        #[arg(long)]
        json: bool,
    },
    /// A source's delivery log: each call's state, attempts and last error.
    Deliveries {
        #[arg(long, short, default_value = "sluice.yaml")]
        config: PathBuf,
        #[arg(long, short)]
        source: String,
        /// Only `failed` or `delivered` ones.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Imports history in date chunks, with a progress bar. Run again after an
    /// interruption, it resumes the source's active backfill.
    Backfill {
        #[arg(long, short, default_value = "sluice.yaml")]
        config: PathBuf,
        #[arg(long, short)]
        source: String,
        /// Start of the range (inclusive): 2024-01-01 or 2024-01-01T00:00:00Z.
        #[arg(long)]
        from: Option<String>,
        /// End of the range (exclusive), not in the future.
        #[arg(long)]
        to: Option<String>,
        /// Chunk size: 15m, 6h, 1d (default) or 7d.
        #[arg(long)]
        chunk: Option<String>,
        /// Cancel the source's active backfill instead.
        #[arg(long)]
        cancel: bool,
        /// Print the job as JSON at the end instead of a summary line.
        #[arg(long)]
        json: bool,
    },
    /// Runs a source's query for the next window (or --from/--to) and shows what it
    /// would import: row count, columns, the first records, every error. Writes nothing.
    Preview {
        #[arg(long, short, default_value = "sluice.yaml")]
        config: PathBuf,
        #[arg(long, short)]
        source: String,
        /// The window's start (`last_update_time`): 2024-01-01 or 2024-01-01T00:00:00Z.
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// The window's end (`upper_date_limit`), exclusive.
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Print the preview as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The config file's sources, with what the store knows of them.
    Sources {
        #[arg(long, short, default_value = "sluice.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: SourcesAction,
    },
    /// Lists a source's latest runs (the import log).
    Runs {
        #[arg(long, short, default_value = "sluice.yaml")]
        config: PathBuf,
        #[arg(long, short)]
        source: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Runs older than this run id (the last id of the previous page).
        #[arg(long)]
        before: Option<String>,
    },
}

#[derive(Subcommand)]
enum SourcesAction {
    /// One line per source: frequency, watermark, last run, active backfill.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A source's config and state, and its latest runs.
    Show {
        #[arg(long, short)]
        source: String,
        #[arg(long)]
        json: bool,
    },
    /// Adds the source defined in FILE (YAML or JSON) to the config file.
    Add {
        #[arg(long)]
        file: PathBuf,
    },
    /// Removes a source from the config file and the store (records kept unless --purge).
    Rm {
        #[arg(long, short)]
        source: String,
        #[arg(long)]
        purge: bool,
    },
}

// Rows are many small allocations; mimalloc spends far less time on them than glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(
            std::env::var("SLUICE_LOG")
                .ok()
                .and_then(|l| l.to_lowercase().parse().ok())
                .unwrap_or(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo { dir } => demo::run(dir).await.map(|()| ExitCode::SUCCESS),
        Command::Sync {
            config,
            sources,
            json,
            deliver,
        } => {
            let config = LocalConfig::load(&config)?;
            let service = wiring::service(&config).await?;
            let ids: Vec<String> = if sources.is_empty() {
                config.sources.iter().map(|s| s.id.clone()).collect()
            } else {
                sources
            };
            let mut failed = false;
            for id in &ids {
                let source = source_in(&config, id)?;
                service.store().put_source(source).await?;
                let run = service.run(id, Trigger::Manual, None).await?;
                failed |= run.status == RunStatus::Failed;
                if json {
                    println!("{}", serde_json::to_string(&run)?);
                } else {
                    println!("{}", summary(&run));
                }
            }
            if deliver {
                let targets: Vec<_> = deliver::sources(&config, &[])?
                    .into_iter()
                    .filter(|s| ids.contains(&s.id))
                    .collect();
                let deliverer = wiring::deliverer(&config, service.store().clone())?;
                failed |= !deliver::run(&deliverer, &targets, false, json).await?;
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Deliver {
            config,
            sources,
            replay_failed,
            json,
        } => {
            let config = LocalConfig::load(&config)?;
            let store = wiring::store(&config).await?;
            for source in &config.sources {
                store.put_source(source).await?;
            }
            let targets = deliver::sources(&config, &sources)?;
            let deliverer = wiring::deliverer(&config, store)?;
            let clean = deliver::run(&deliverer, &targets, replay_failed, json).await?;
            Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Deliveries {
            config,
            source,
            status,
            limit,
            json,
        } => {
            let config = LocalConfig::load(&config)?;
            let store = wiring::store(&config).await?;
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(
                    s.parse::<sluice_core::DeliveryStatus>()
                        .map_err(|e| anyhow::anyhow!("--status {s}: {e}"))?,
                ),
            };
            deliver::list(&*store, &source, status, limit, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill {
            config,
            source,
            from,
            to,
            chunk,
            cancel,
            json,
        } => {
            let config = LocalConfig::load(&config)?;
            let service = wiring::service(&config).await?;
            let source_config = source_in(&config, &source)?;
            service.store().put_source(source_config).await?;
            let args = backfill::Args {
                source,
                from,
                to,
                chunk,
                cancel,
                json,
            };
            let done = backfill::run(service, args).await?;
            Ok(if done { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Preview {
            config,
            source,
            from,
            to,
            json,
        } => {
            let config = LocalConfig::load(&config)?;
            let service = wiring::service(&config).await?;
            let source_config = source_in(&config, &source)?;
            let window = match (from, to) {
                (Some(from), Some(to)) => Some(sluice_core::window::Window {
                    from: sluice_core::backfill::parse_instant("from", &from)?,
                    to: sluice_core::backfill::parse_instant("to", &to)?,
                }),
                _ => None,
            };
            let preview = service.preview(source_config, window).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&preview)?);
            } else {
                print_preview(&preview)?;
            }
            Ok(if preview.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Sources { config: path, action } => {
            let config = LocalConfig::load(&path)?;
            match action {
                SourcesAction::List { json } => sources::list(&config, json).await?,
                SourcesAction::Show { source, json } => sources::show(&config, &source, json).await?,
                SourcesAction::Add { file } => sources::add(&path, &config, &file).await?,
                SourcesAction::Rm { source, purge } => sources::rm(&path, &config, &source, purge).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs {
            config,
            source,
            limit,
            before,
        } => {
            let config = LocalConfig::load(&config)?;
            let store = wiring::store(&config).await?;
            for run in store.list_runs(&source, limit, before.as_deref()).await? {
                println!("{}", summary(&run));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line per run, for people.
pub fn summary(run: &Run) -> String {
    let status = format!("{:?}", run.status).to_lowercase();
    let mut line = format!(
        "{} {} {status}: read {}, written {}, unchanged {}, rejected {} in {} ms",
        run.source_id, run.id, run.rows_read, run.rows_written, run.rows_unchanged, run.rows_rejected, run.duration_ms
    );
    if let Some(w) = run.watermark {
        line.push_str(&format!("; watermark {}", sluice_core::Value::iso_timestamp(&w)));
    }
    if let Some(bound) = &run.window_bound {
        line.push_str(&format!("\n  window bound: {bound}"));
    }
    if let Some(m) = &run.message {
        line.push_str(&format!("\n  {m}"));
    }
    if let Some(login) = &run.login {
        line.push_str(&format!("\n  {login}"));
    }
    for r in &run.rejects {
        line.push_str(&format!(
            "\n  rejected {}: {}",
            r.reference.as_deref().unwrap_or("(no reference)"),
            r.reason
        ));
    }
    line
}

fn print_preview(p: &sluice_core::Preview) -> anyhow::Result<()> {
    let iso = sluice_core::Value::iso_timestamp;
    println!(
        "window [{}, {}), {} ms",
        iso(&p.window.last_update_time),
        iso(&p.window.upper_date_limit),
        p.duration_ms
    );
    if let Some(bound) = &p.window.bound {
        println!("window bound: {bound}");
    }
    println!("sql: {}", p.sql);
    println!("binds: {}", serde_json::to_string(&p.binds)?);
    println!("columns: {}", p.columns.join(", "));
    println!("rows: {} ({} would be rejected)", p.row_count, p.rows_rejected);
    for r in &p.records {
        println!("  {} {}", r.key, serde_json::to_string(&r.fields)?);
    }
    // A login that is not proven read-only is among the warnings.
    if let Some(login) = p.login.as_ref().filter(|l| l.is_read_only()) {
        println!("{login}");
    }
    for w in &p.warnings {
        println!("warning: {w}");
    }
    for e in &p.errors {
        println!("error: {e}");
    }
    Ok(())
}

/// The config's source `id`, or an error naming it.
pub fn source_in<'a>(config: &'a LocalConfig, id: &str) -> anyhow::Result<&'a sluice_core::SourceConfig> {
    config
        .source(id)
        .with_context(|| format!("the config has no source `{id}`"))
}
