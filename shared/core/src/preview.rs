//! The test query (DESIGN §7, issue 4): what a source's query would import, without
//! writing anything. Renders the template for the next window (or a given one), runs it
//! read-only, counts the rows, and shows the first ones as the records they would become.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::mapping::{LazyMapper, MappingError};
use crate::ports::{LoginCheck, Secrets, SourceError, SourceReader, SourceState};
use crate::record::Reject;
use crate::run::KEPT_REJECTS;
use crate::source::{FieldError, SourceConfig};
use crate::sync::{OpenSource, SyncError};
use crate::template::{Bind, TemplateError};
use crate::value::Value;
use crate::window::{Window, next_start};

/// Records a preview shows; the count covers every row up to [`PreviewLimits::rows`].
pub const PREVIEW_RECORDS: usize = 20;

/// How far a test query goes: whoever waits for it (API Gateway gives up after 29 s)
/// must get an answer, and the database must not keep working for nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewLimits {
    /// The whole test query's time, connecting included; the session's statement
    /// timeout is at most this too, so the database stops the query as well. `None`:
    /// the source's own `query_timeout_seconds`.
    pub time: Option<Duration>,
    /// Rows counted at most; the count stops there and says so.
    pub rows: u64,
}

impl Default for PreviewLimits {
    fn default() -> Self {
        PreviewLimits {
            time: None,
            rows: 100_000,
        }
    }
}

/// What a query would import. `errors` lists everything that would fail the run or
/// reject rows; nothing is written anywhere.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    pub window: PreviewWindow,
    /// The SQL as sent, with its placeholders.
    pub sql: String,
    /// The values bound to the placeholders, in order.
    pub binds: Vec<serde_json::Value>,
    pub columns: Vec<String>,
    pub row_count: u64,
    /// The count stopped at the row cap: the query returns more rows than `row_count`.
    pub row_count_capped: bool,
    /// The first rows as records: key and fields.
    pub records: Vec<PreviewRecord>,
    pub rows_rejected: u64,
    pub rejects: Vec<Reject>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub duration_ms: u64,
    /// The host key the SSH bastion showed, when the source has a tunnel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<String>,
    /// What the source's login may do beyond reading, checked afresh; absent when the
    /// database could not be reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<LoginCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviewWindow {
    pub last_update_time: DateTime<Utc>,
    pub upper_date_limit: DateTime<Utc>,
    /// Why the next run's window ends there (the database's clock, or the oldest
    /// transaction still open); absent for a window given by the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviewRecord {
    pub key: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Runs the test query of `config` (saved or not) within `limits`. The window
/// is `window` when given, else the next run's: from the stored watermark (less the
/// lookback) of `state`, or the first run's start, up to the database's clock.
pub async fn preview(
    reader: &dyn SourceReader,
    secrets: &dyn Secrets,
    config: &SourceConfig,
    state: Option<&SourceState>,
    window: Option<Window>,
    limits: PreviewLimits,
) -> Preview {
    let began = Instant::now();
    let mut p = Preview {
        window: PreviewWindow {
            last_update_time: DateTime::UNIX_EPOCH,
            upper_date_limit: DateTime::UNIX_EPOCH,
            bound: None,
        },
        sql: String::new(),
        binds: Vec::new(),
        columns: Vec::new(),
        row_count: 0,
        row_count_capped: false,
        records: Vec::new(),
        rows_rejected: 0,
        rejects: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
        duration_ms: 0,
        ssh_host_key: None,
        login: None,
    };
    // The database stops the statement at the time limit too: a session dropped
    // mid-query does not stop every engine's work (PostgreSQL notices only when it next
    // writes to the socket).
    let mut limited = config.clone();
    if let Some(time) = limits.time {
        let seconds = u32::try_from(time.as_secs().max(1)).unwrap_or(u32::MAX);
        limited.query_timeout_seconds = limited.query_timeout_seconds.min(seconds);
    }
    let work = run(&mut p, reader, secrets, &limited, state, window, limits.rows);
    let outcome = match limits.time {
        Some(time) => tokio::time::timeout(time, work).await.map_err(|_| time),
        None => Ok(work.await),
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => p.errors.push(e.to_string()),
        Err(time) => p.errors.push(format!(
            "the test query stopped at its time limit of {} s, and the database's work with it; the counts are those reached by then. A run has the source's query_timeout_seconds ({} s): make the query faster (an index on the date column) or test a shorter window",
            time.as_secs(),
            config.query_timeout_seconds,
        )),
    }
    p.duration_ms = began.elapsed().as_millis() as u64;
    p
}

/// Why a preview could not run to the end.
#[derive(Debug, thiserror::Error)]
enum PreviewError {
    #[error(transparent)]
    Config(#[from] FieldError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl From<SourceError> for PreviewError {
    fn from(e: SourceError) -> Self {
        PreviewError::Sync(e.into())
    }
}

impl From<MappingError> for PreviewError {
    fn from(e: MappingError) -> Self {
        PreviewError::Sync(e.into())
    }
}

impl From<TemplateError> for PreviewError {
    fn from(e: TemplateError) -> Self {
        PreviewError::Sync(e.into())
    }
}

// The request's parts, as the services pass them; a struct for them would be one more
// name for the same eight things.
#[allow(clippy::too_many_arguments)]
async fn run(
    p: &mut Preview,
    reader: &dyn SourceReader,
    secrets: &dyn Secrets,
    config: &SourceConfig,
    state: Option<&SourceState>,
    window: Option<Window>,
    max_rows: u64,
) -> Result<(), PreviewError> {
    config.validate()?;
    let recorded = state
        .filter(|s| s.same_connection(config))
        .and_then(|s| s.ssh_host_key.as_deref());
    let mut open = OpenSource::open(config, reader, secrets, recorded).await?;
    let login = open.check_login().await;
    let writable = !login.is_read_only();
    if writable {
        p.warnings.push(login.to_string());
    }
    p.login = Some(login.clone());
    if writable && config.require_read_only_login {
        return Err(SyncError::LoginNotReadOnly(login).into());
    }
    p.ssh_host_key = open.session.ssh_host_key().map(str::to_string);
    if !open.template.uses_upper_limit() {
        p.warnings.push(
            "the query has no {{ upper_date_limit }}: windows cannot be narrowed (catch-up, halving, backfill chunks); adding `AND <date column> < {{ upper_date_limit }}` is advised".into(),
        );
    }
    let (window, bound) = match window {
        Some(w) => (w, None),
        None => {
            let bound = open.upper_bound().await?;
            let from = next_start(
                state.and_then(|s| s.watermark),
                config.initial_watermark,
                config.lookback_seconds,
            );
            (Window { from, to: bound.at }, Some(bound.reason))
        }
    };
    p.window = PreviewWindow {
        last_update_time: window.from,
        upper_date_limit: window.to,
        bound,
    };
    let OpenSource {
        template, mut session, ..
    } = open;
    let query = template.render(config.engine.placeholder_style(), window.from, window.to)?;
    p.sql = query.sql.clone();
    p.binds = query
        .binds
        .iter()
        .map(|b| match b {
            Bind::Timestamp(t) => serde_json::Value::String(Value::iso_timestamp(t)),
            Bind::UnixSeconds(s) => serde_json::Value::from(*s),
        })
        .collect();
    p.columns = session.columns(&query).await?;
    let mut mapper = LazyMapper::new(config.sync_type, &p.columns)?;
    let mut rows = session.stream(&query);
    while let Some(row) = rows.next().await {
        if p.row_count == max_rows {
            // Dropping the stream ends the query: the database stops sending.
            p.row_count_capped = true;
            p.warnings.push(format!(
                "the count stopped at {max_rows} rows: the window holds more; a run reads them all (up to the row limit of the source)"
            ));
            break;
        }
        let row = row?;
        p.row_count += 1;
        if p.columns.is_empty() {
            p.columns = row.columns.to_vec();
        }
        let mapped = mapper.map(row)?;
        if let Ok(Some(warning)) = mapped.as_ref().map(|m| m.warning)
            && !p.warnings.iter().any(|w| w == warning)
        {
            p.warnings.push(warning.to_string());
        }
        match mapped {
            Ok(mapped) if p.records.len() < PREVIEW_RECORDS => p.records.push(PreviewRecord {
                key: mapped.record.key.clone(),
                fields: mapped
                    .record
                    .fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_plain_json()))
                    .collect(),
            }),
            Ok(_) => {}
            Err(reject) => {
                p.rows_rejected += 1;
                if p.rejects.len() < KEPT_REJECTS {
                    p.errors.push(format!(
                        "row {}: {}",
                        reject.reference.as_deref().unwrap_or("(no reference)"),
                        reject.reason
                    ));
                    p.rejects.push(reject);
                }
            }
        }
    }
    drop(rows);
    session.finish().await?;
    Ok(())
}
