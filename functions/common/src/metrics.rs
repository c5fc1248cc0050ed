//! A run's figures as a CloudWatch Embedded Metric Format document: one JSON log line
//! that CloudWatch Logs turns into metrics, with no API call and no extra permission.

use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};
use sluice_core::{Run, RunObserver, RunStatus};

/// Prints every run's metrics as one EMF line on stdout, which CloudWatch Logs reads
/// in Lambda.
#[derive(Debug, Clone)]
pub struct EmfMetrics {
    /// The CloudWatch namespace, `Sluice/{NamePrefix}`.
    pub namespace: String,
}

impl RunObserver for EmfMetrics {
    fn run_finished(&self, run: &Run, at: DateTime<Utc>) {
        println!("{}", emf(run, &self.namespace, at));
    }
}

/// The EMF document of `run`, finished at `now`. Metrics are published per source and
/// trigger, and per trigger over all sources (what the alarms watch).
///
/// `WatermarkLag` (now minus the watermark) is given for runs that got as far as reading
/// the watermark and were not skipped: a disabled source or a run that found another in
/// progress says nothing about lag.
pub fn emf(run: &Run, namespace: &str, now: DateTime<Utc>) -> Json {
    let failed = u8::from(run.status == RunStatus::Failed);
    let skipped = u8::from(run.status == RunStatus::Skipped);
    let lag = run
        .watermark
        .filter(|_| run.status != RunStatus::Skipped)
        .map(|w| (now - w).num_seconds().max(0));
    let mut metrics = vec![
        json!({"Name": "Runs", "Unit": "Count"}),
        json!({"Name": "FailedRuns", "Unit": "Count"}),
        json!({"Name": "SkippedRuns", "Unit": "Count"}),
        json!({"Name": "RowsRead", "Unit": "Count"}),
        json!({"Name": "RowsWritten", "Unit": "Count"}),
        json!({"Name": "RowsUnchanged", "Unit": "Count"}),
        json!({"Name": "RowsRejected", "Unit": "Count"}),
        json!({"Name": "Duration", "Unit": "Milliseconds"}),
    ];
    if lag.is_some() {
        metrics.push(json!({"Name": "WatermarkLag", "Unit": "Seconds"}));
    }
    let mut doc = json!({
        "_aws": {
            "Timestamp": now.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["SourceId", "Trigger"], ["Trigger"]],
                "Metrics": metrics,
            }],
        },
        "SourceId": run.source_id,
        "Trigger": run.trigger,
        "RunId": run.id,
        "Status": run.status,
        "Runs": 1,
        "FailedRuns": failed,
        "SkippedRuns": skipped,
        "RowsRead": run.rows_read,
        "RowsWritten": run.rows_written,
        "RowsUnchanged": run.rows_unchanged,
        "RowsRejected": run.rows_rejected,
        "Duration": run.duration_ms,
    });
    if let Some(lag) = lag {
        doc["WatermarkLag"] = lag.into();
    }
    if let Some(job) = &run.backfill_id {
        doc["BackfillId"] = job.as_str().into();
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Trigger;

    fn run(status: RunStatus, watermark: Option<DateTime<Utc>>) -> Run {
        let mut run = Run::start("r".into(), "sales", Trigger::Schedule, Utc::now());
        run.rows_read = 10;
        run.rows_written = 7;
        run.rows_unchanged = 2;
        run.rows_rejected = 1;
        run.watermark = watermark;
        let at = run.started_at;
        run.finish(status, None, at)
    }

    fn declared(doc: &Json) -> Vec<&str> {
        doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn every_declared_metric_and_dimension_is_a_member_of_the_document() {
        let now = Utc::now();
        let doc = emf(
            &run(RunStatus::Succeeded, Some(now - chrono::Duration::seconds(90))),
            "Sluice/test",
            now,
        );
        for name in declared(&doc) {
            assert!(doc[name].is_number(), "{name} is declared but not a number: {doc}");
        }
        assert_eq!(doc["SourceId"], "sales");
        assert_eq!(doc["Trigger"], "schedule");
        assert_eq!(doc["WatermarkLag"], 90);
        assert_eq!(doc["RowsWritten"], 7);
        assert_eq!(doc["FailedRuns"], 0);
        assert_eq!(doc["_aws"]["Timestamp"], now.timestamp_millis());
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Sluice/test");
    }

    #[test]
    fn a_failed_run_counts_and_still_reports_its_lag() {
        let now = Utc::now();
        let doc = emf(
            &run(RunStatus::Failed, Some(now - chrono::Duration::hours(3))),
            "Sluice",
            now,
        );
        assert_eq!(doc["FailedRuns"], 1);
        assert_eq!(doc["WatermarkLag"], 3 * 3600);
    }

    #[test]
    fn skipped_runs_and_runs_without_a_watermark_report_no_lag() {
        let now = Utc::now();
        for doc in [
            emf(&run(RunStatus::Skipped, Some(now)), "Sluice", now),
            emf(&run(RunStatus::Succeeded, None), "Sluice", now),
        ] {
            assert!(doc.get("WatermarkLag").is_none());
            assert!(!declared(&doc).contains(&"WatermarkLag"));
        }
    }
}
