//! `sluice deliver` and `sluice deliveries`: the calls of sources with a destination,
//! sent from the store (the calls whose current version has not been delivered), with
//! a progress line for large backlogs; and the delivery log.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_core::{Budget, Deliverer, DeliveryReport, DeliveryStatus, SourceConfig, Store};
use sluice_local::LocalConfig;

/// Calls read from the store at a time.
const BATCH: usize = 1_000;

/// The sources to deliver: those named, else every one with a destination.
pub fn sources<'a>(config: &'a LocalConfig, ids: &[String]) -> anyhow::Result<Vec<&'a SourceConfig>> {
    if ids.is_empty() {
        return Ok(config.sources.iter().filter(|s| s.destination.is_some()).collect());
    }
    ids.iter()
        .map(|id| {
            let s = crate::source_in(config, id)?;
            anyhow::ensure!(
                s.destination.is_some(),
                "source `{id}` has no destination; add one (README \"Delivering calls\")"
            );
            Ok(s)
        })
        .collect()
}

/// Delivers each source's undelivered calls, the waiting ones included (or, with
/// `replay`, its failed and waiting ones).
/// `false` when a call was refused or left undelivered.
pub async fn run(deliverer: &Deliverer, sources: &[&SourceConfig], replay: bool, json: bool) -> anyhow::Result<bool> {
    let mut clean = true;
    for source in sources {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})").expect("a valid template"),
        );
        bar.set_prefix(source.id.clone());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        let show = |r: &DeliveryReport| bar.set_message(line(r));
        let budget = Budget::default();
        let report = if replay {
            deliverer.replay_failed(source, usize::MAX, &budget).await
        } else {
            deliverer.deliver_undelivered(source, BATCH, &budget, &show).await
        }
        .with_context(|| format!("delivering the calls of `{}`", source.id))?;
        bar.finish_and_clear();
        clean &= report.rejected.is_empty() && report.undelivered.is_empty();
        if json {
            println!("{}", serde_json::json!({ "source_id": source.id, "report": report }));
        } else {
            println!("{}: {}", source.id, line(&report));
            for (key, reason) in report.rejected.iter().take(20) {
                println!("  refused {key}: {reason}");
            }
            if let Some(error) = &report.error {
                println!("  {error}; run `sluice deliver` again later");
            }
        }
    }
    Ok(clean)
}

fn line(r: &DeliveryReport) -> String {
    format!(
        "delivered {}, refused {}, left undelivered {}",
        r.delivered,
        r.rejected.len(),
        r.undelivered.len()
    )
}

/// `sluice deliveries`: a source's delivery states.
pub async fn list(
    store: &dyn Store,
    source: &str,
    status: Option<DeliveryStatus>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    for d in store.list_deliveries(source, status, limit, None).await? {
        if json {
            println!("{}", serde_json::to_string(&d)?);
            continue;
        }
        let mut line = format!("{} {}, {} attempt(s)", d.record_key, d.status.as_str(), d.attempts);
        if let Some(at) = d.delivered_at {
            line.push_str(&format!(", delivered {}", sluice_core::Value::iso_timestamp(&at)));
        }
        if let Some(at) = d.next_attempt_at {
            line.push_str(&format!(", next attempt {}", sluice_core::Value::iso_timestamp(&at)));
        }
        if let Some(e) = &d.last_error {
            line.push_str(&format!("\n  {e}"));
        }
        println!("{line}");
    }
    Ok(())
}
