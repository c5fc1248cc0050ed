//! `sluice backfill`: imports a date range in chunks, with a progress bar. Interrupted
//! (Ctrl-C, a crash) and run again, it resumes the source's active job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_core::{Backfill, BackfillRequest, Backfiller, Budget, JobStatus, SyncService};

pub struct Args {
    pub source: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub chunk: Option<String>,
    pub cancel: bool,
    pub json: bool,
}

pub async fn run(service: SyncService, args: Args) -> anyhow::Result<bool> {
    let service = Arc::new(service);
    let store = service.store().clone();
    let backfiller = Backfiller::new(service, crate::wiring::backfill_settings());
    let state = store
        .get_source(&args.source)
        .await?
        .with_context(|| format!("the config has no source `{}`", args.source))?;
    let active = match &state.active_backfill {
        Some(id) => Some(backfiller.get(&args.source, id).await?),
        None => None,
    };
    if args.cancel {
        let Some(job) = active else {
            bail!("source `{}` has no active backfill to cancel", args.source);
        };
        let job = backfiller.cancel(&args.source, &job.id).await?;
        report(&job, args.json)?;
        return Ok(true);
    }
    let job = match active {
        Some(job) => {
            if !same_range(&job, &args)? {
                bail!(
                    "source `{}` already has an active backfill {} ({} to {}); run `sluice backfill --source {}` to resume it, or add --cancel to cancel it",
                    args.source,
                    job.id,
                    job.start,
                    job.end,
                    args.source
                );
            }
            let p = job.progress();
            eprintln!(
                "resuming backfill {}: {} of {} chunks finished",
                job.id,
                p.chunks_done + p.chunks_failed,
                p.chunks_total
            );
            job
        }
        None => {
            let (Some(from), Some(to)) = (&args.from, &args.to) else {
                bail!(
                    "--from and --to are required to start a backfill (source `{}` has none to resume)",
                    args.source
                );
            };
            let request = BackfillRequest {
                start: Some(from.clone()),
                end: Some(to.clone()),
                chunk: args.chunk.clone(),
            };
            let job = backfiller.create(&args.source, &request).await?;
            eprintln!("backfill {} planned: {} chunks", job.id, job.chunks.len());
            job
        }
    };

    let budget = Budget::default();
    let on_interrupt = budget.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: stopping after the current batch; run the same command again to resume");
            on_interrupt.interrupt();
        }
    });
    let bar = progress_bar(&job);
    let started = Instant::now();
    let rows_before = job.progress().rows_read;
    let on_progress = |job: &Backfill| {
        let p = job.progress();
        bar.set_length(p.chunks_total as u64);
        bar.set_position((p.chunks_done + p.chunks_failed) as u64);
        let rate = (p.rows_read - rows_before) as f64 / started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{} rows read, {} written, {:.0} rows/s{}",
            p.rows_read,
            p.rows_written,
            rate,
            match p.chunks_failed {
                0 => String::new(),
                n => format!(", {n} chunks failed"),
            }
        ));
    };
    let worked = backfiller.work(&args.source, &budget, &on_progress).await?;
    bar.finish_and_clear();
    let job = match worked {
        Some(job) => job,
        None => {
            let state = store.get_source(&args.source).await?;
            let until = state.and_then(|s| s.lease).map(|l| l.expires_at);
            bail!(
                "another run holds source `{}`'s lease{}; run the same command again after it",
                args.source,
                until.map(|t| format!(" until {t}")).unwrap_or_default()
            );
        }
    };
    report(&job, args.json)?;
    Ok(job.status == JobStatus::Done)
}

/// Whether `--from/--to/--chunk`, where given, describe `job`.
fn same_range(job: &Backfill, args: &Args) -> anyhow::Result<bool> {
    let matches = |given: &Option<String>, field, expected| -> anyhow::Result<bool> {
        Ok(match given {
            Some(text) => sluice_core::backfill::parse_instant(field, text)? == expected,
            None => true,
        })
    };
    let chunk_matches = match &args.chunk {
        Some(c) => sluice_core::backfill::parse_chunk(c)?.num_seconds() == job.chunk_seconds,
        None => true,
    };
    Ok(matches(&args.from, "from", job.start)? && matches(&args.to, "to", job.end)? && chunk_matches)
}

fn progress_bar(job: &Backfill) -> ProgressBar {
    let p = job.progress();
    let bar = ProgressBar::new(p.chunks_total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} chunks, ETA {eta} | {msg}")
            .expect("the template is valid"),
    );
    bar.set_position((p.chunks_done + p.chunks_failed) as u64);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn report(job: &Backfill, json: bool) -> anyhow::Result<()> {
    let p = job.progress();
    if json {
        let mut v = serde_json::to_value(job)?;
        v["progress"] = serde_json::to_value(p)?;
        v["errors"] = serde_json::to_value(job.errors())?;
        println!("{v}");
        return Ok(());
    }
    let status = serde_json::to_value(job.status)?;
    println!(
        "backfill {} {}: {} of {} chunks done, {} failed; read {}, written {}, unchanged {}, rejected {}",
        job.id,
        status.as_str().unwrap_or_default(),
        p.chunks_done,
        p.chunks_total,
        p.chunks_failed,
        p.rows_read,
        p.rows_written,
        p.rows_unchanged,
        p.rows_rejected
    );
    for e in job.errors() {
        println!("  failed chunk {e}");
    }
    Ok(())
}
