//! Backfill jobs (DESIGN §3 "Backfill job"): a date range split into chunks, each
//! imported as one run, with per-chunk status, retries and splits, and the request
//! that plans a job.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::source::FieldError;
use crate::window::Window;

/// More chunks than this is refused: each chunk is a run and a line in the job.
pub const MAX_CHUNKS: usize = 1_000;
/// Attempts at one chunk before it is marked failed.
pub const MAX_ATTEMPTS: u32 = 3;
/// A chunk shorter than this is not split again.
pub const MIN_CHUNK_SECONDS: i64 = 60;
/// Chunk errors are cut to this many characters, so a job of many failed chunks still
/// fits one stored item.
const MAX_ERROR_CHARS: usize = 300;

fn bad(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError::new(field, reason)
}

/// What a user asks for: `{"start": ISO-8601, "end": ISO-8601, "chunk": "1d"}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    pub start: Option<String>,
    pub end: Option<String>,
    /// `15m`, `6h`, `1d`, `7d`: a whole number of minutes, hours or days. Default `1d`.
    pub chunk: Option<String>,
}

/// `2024-01-31T10:00:00Z`, `2024-01-31T10:00:00+02:00`, `2024-01-31T10:00:00` (UTC) or
/// `2024-01-31` (midnight UTC).
pub fn parse_instant(field: &'static str, text: &str) -> Result<DateTime<Utc>, FieldError> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(bad(
        field,
        format!("{text:?} is not an ISO-8601 date or timestamp; write it like 2024-01-31 or 2024-01-31T00:00:00Z"),
    ))
}

/// `15m`, `6h`, `1d`, `7d` as a duration.
pub fn parse_chunk(text: &str) -> Result<Duration, FieldError> {
    let malformed = || {
        bad(
            "chunk",
            format!("{text:?} is not a chunk size; write a whole number and m, h or d, such as 15m, 6h, 1d or 7d"),
        )
    };
    let text = text.trim();
    // The unit is the last character, which may be more than one byte ("1€").
    let unit_len = text.chars().next_back().map_or(0, char::len_utf8);
    let (digits, unit) = text.split_at(text.len() - unit_len);
    let n: i64 = digits.parse().map_err(|_| malformed())?;
    let chunk = match unit {
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        _ => None,
    }
    .ok_or_else(malformed)?;
    if n <= 0 || chunk > Duration::days(366) {
        return Err(bad("chunk", format!("{text:?} must be between 1m and 366d")));
    }
    Ok(chunk)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Planned; no chunk has run yet.
    Pending,
    Running,
    /// Every chunk is done.
    Done,
    /// Every chunk ran; some failed after their retries.
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkStatus {
    Pending,
    Running,
    Done,
    Failed,
}

/// One part of the range: `[from, to)`, imported as one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub status: ChunkStatus,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub rows_read: u64,
    #[serde(default)]
    pub rows_written: u64,
    #[serde(default)]
    pub rows_unchanged: u64,
    #[serde(default)]
    pub rows_rejected: u64,
    /// The last error; for a failed chunk, why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A chunk that failed is retried no earlier than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// The run of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Chunk {
    fn new(window: Window) -> Self {
        Chunk {
            from: window.from,
            to: window.to,
            status: ChunkStatus::Pending,
            attempts: 0,
            rows_read: 0,
            rows_written: 0,
            rows_unchanged: 0,
            rows_rejected: 0,
            error: None,
            retry_at: None,
            run_id: None,
        }
    }

    pub fn window(&self) -> Window {
        Window {
            from: self.from,
            to: self.to,
        }
    }
}

/// A backfill job: the range, its chunks and their progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backfill {
    /// Time-sortable (UUIDv7).
    pub id: String,
    pub source_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub chunk_seconds: i64,
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Set by a cancel: no chunk starts after it; the running one finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Bumped by every save; a save of a stale copy is refused (optimistic concurrency).
    #[serde(default)]
    pub version: u64,
    pub chunks: Vec<Chunk>,
}

/// Totals over a job's chunks, as the API and the progress bar show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Progress {
    pub chunks_total: usize,
    pub chunks_pending: usize,
    pub chunks_running: usize,
    pub chunks_done: usize,
    pub chunks_failed: usize,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_unchanged: u64,
    pub rows_rejected: u64,
    /// Share of the range's time covered by finished (done or failed) chunks.
    pub percent_done: f64,
}

/// What a worker does next with a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run the chunk at this index.
    Run(usize),
    /// Only failed chunks waiting for their retry remain; the first is due then.
    WaitUntil(DateTime<Utc>),
    /// Seal the job: nothing is left to run, or it was cancelled.
    Finish,
}

impl Backfill {
    /// Validates a request against `now` and plans its chunks, as the job `id`. A
    /// `bounded` query (one with `{{ upper_date_limit }}`) is read in the chunks asked
    /// for; any other reads on past a chunk's end, so the range is one chunk.
    pub fn plan(
        id: String,
        source_id: &str,
        request: &BackfillRequest,
        now: DateTime<Utc>,
        bounded: bool,
    ) -> Result<Self, FieldError> {
        let required = |field, v: &Option<String>| {
            v.as_deref()
                .ok_or_else(|| bad(field, "is required (an ISO-8601 date or timestamp)"))
                .and_then(|t| parse_instant(field, t))
        };
        let start = required("start", &request.start)?;
        let end = required("end", &request.end)?;
        if end <= start {
            return Err(bad("end", format!("{end} is not after start {start}")));
        }
        let span = end - start;
        let chunk = match bounded {
            true => parse_chunk(request.chunk.as_deref().unwrap_or("1d"))?,
            false => span,
        };
        if end > now {
            return Err(bad(
                "end",
                format!(
                    "{end} is in the future (now is {now}); a backfill imports history, the schedule keeps up after it"
                ),
            ));
        }
        let count = (span.num_seconds() + chunk.num_seconds() - 1) / chunk.num_seconds();
        if count as usize > MAX_CHUNKS {
            return Err(bad(
                "chunk",
                format!(
                    "the range splits into {count} chunks, more than the limit of {MAX_CHUNKS}; use a larger chunk (such as {}d) or a shorter range",
                    (span.num_days() / MAX_CHUNKS as i64 + 1).max(1)
                ),
            ));
        }
        let chunks = crate::window::windows(start, end, Some(chunk))
            .map(Chunk::new)
            .collect();
        Ok(Backfill {
            id,
            source_id: source_id.to_string(),
            start,
            end,
            chunk_seconds: chunk.num_seconds(),
            status: JobStatus::Pending,
            created_at: now,
            updated_at: now,
            finished_at: None,
            cancel_requested_at: None,
            version: 0,
            chunks,
        })
    }

    /// Pending or running: it holds the source's one backfill slot.
    pub fn is_active(&self) -> bool {
        matches!(self.status, JobStatus::Pending | JobStatus::Running)
    }

    pub fn progress(&self) -> Progress {
        let mut p = Progress {
            chunks_total: self.chunks.len(),
            ..Progress::default()
        };
        let mut finished = Duration::zero();
        for c in &self.chunks {
            match c.status {
                ChunkStatus::Pending => p.chunks_pending += 1,
                ChunkStatus::Running => p.chunks_running += 1,
                ChunkStatus::Done => p.chunks_done += 1,
                ChunkStatus::Failed => p.chunks_failed += 1,
            }
            if matches!(c.status, ChunkStatus::Done | ChunkStatus::Failed) {
                finished += c.to - c.from;
            }
            p.rows_read += c.rows_read;
            p.rows_written += c.rows_written;
            p.rows_unchanged += c.rows_unchanged;
            p.rows_rejected += c.rows_rejected;
        }
        let total = (self.end - self.start).num_seconds().max(1) as f64;
        p.percent_done = (finished.num_seconds() as f64 * 1000.0 / total).round() / 10.0;
        p
    }

    /// The errors of failed chunks, for the API.
    pub fn errors(&self) -> Vec<String> {
        self.chunks
            .iter()
            .filter(|c| c.status == ChunkStatus::Failed)
            .filter_map(|c| c.error.as_ref().map(|e| format!("[{}, {}): {e}", c.from, c.to)))
            .collect()
    }

    /// What to do next at `now`, for a worker that holds the source's lease: a
    /// cancelled job is sealed, then the first chunk that is due runs; with only
    /// retries waiting, wait for the first of them. A chunk marked running is the
    /// holder's own (its save succeeded but the answer was lost) once stopped workers'
    /// chunks are recovered, so it runs: the job is done only when every chunk is.
    pub fn next_action(&self, now: DateTime<Utc>) -> Action {
        if self.cancel_requested_at.is_some() {
            return Action::Finish;
        }
        let mut wait: Option<DateTime<Utc>> = None;
        for (i, c) in self.chunks.iter().enumerate() {
            match c.status {
                ChunkStatus::Running => return Action::Run(i),
                ChunkStatus::Pending => {}
                ChunkStatus::Done | ChunkStatus::Failed => continue,
            }
            match c.retry_at {
                Some(at) if at > now => wait = Some(wait.map_or(at, |w| w.min(at))),
                _ => return Action::Run(i),
            }
        }
        wait.map_or(Action::Finish, Action::WaitUntil)
    }

    /// Chunks left `running` by a worker that stopped (crash, timeout) run again; the
    /// lost attempt counts, so a chunk that kills its worker does not loop forever.
    pub fn recover_stopped_chunks(&mut self, now: DateTime<Utc>) {
        for c in self.chunks.iter_mut().filter(|c| c.status == ChunkStatus::Running) {
            c.attempts += 1;
            let reason = "the worker running this chunk stopped (crash or timeout)";
            if c.attempts >= MAX_ATTEMPTS {
                c.status = ChunkStatus::Failed;
                c.error = Some(format!("{reason} {} times", c.attempts));
            } else {
                c.status = ChunkStatus::Pending;
                c.error = Some(reason.into());
                c.retry_at = Some(now);
            }
        }
    }

    pub fn start_chunk(&mut self, index: usize, now: DateTime<Utc>) {
        self.chunks[index].status = ChunkStatus::Running;
        self.status = JobStatus::Running;
        self.updated_at = now;
    }

    /// Records a chunk whose run finished.
    pub fn chunk_done(&mut self, index: usize, run: &crate::Run) {
        let c = &mut self.chunks[index];
        c.status = ChunkStatus::Done;
        c.rows_read = run.rows_read;
        c.rows_written = run.rows_written;
        c.rows_unchanged = run.rows_unchanged;
        c.rows_rejected = run.rows_rejected;
        c.run_id = Some(run.id.clone());
        c.error = None;
        c.retry_at = None;
        self.updated_at = run.started_at;
    }

    /// Records a failed attempt: retried after `backoff`, or failed for good after
    /// [`MAX_ATTEMPTS`].
    pub fn chunk_failed(&mut self, index: usize, run_id: &str, error: &str, now: DateTime<Utc>, backoff: Duration) {
        let c = &mut self.chunks[index];
        c.attempts += 1;
        c.run_id = Some(run_id.to_string());
        c.error = Some(error.chars().take(MAX_ERROR_CHARS).collect());
        if c.attempts >= MAX_ATTEMPTS {
            c.status = ChunkStatus::Failed;
            c.retry_at = None;
        } else {
            c.status = ChunkStatus::Pending;
            c.retry_at = Some(now + backoff);
        }
        self.updated_at = now;
    }

    /// A chunk that ran out of time becomes two halves that run next. A chunk too
    /// short to split fails with a message that says so.
    pub fn split_chunk(&mut self, index: usize, now: DateTime<Utc>) {
        self.updated_at = now;
        let c = &self.chunks[index];
        let half = (c.to - c.from).num_seconds() / 2;
        if half < MIN_CHUNK_SECONDS {
            let c = &mut self.chunks[index];
            c.status = ChunkStatus::Failed;
            c.attempts += 1;
            c.error = Some(format!(
                "even a chunk of {}s does not finish inside the function's time budget; make the query faster (an index on the date column) or raise the function timeout",
                (c.to - c.from).num_seconds()
            ));
            return;
        }
        let mid = c.from + Duration::seconds(half);
        let (first, second) = (
            Chunk::new(Window { from: c.from, to: mid }),
            Chunk::new(Window { from: mid, to: c.to }),
        );
        self.chunks.splice(index..=index, [first, second]);
    }

    /// A chunk stopped by an interrupt (Ctrl-C) runs again from the start next time.
    pub fn chunk_interrupted(&mut self, index: usize, now: DateTime<Utc>) {
        self.chunks[index].status = ChunkStatus::Pending;
        self.updated_at = now;
    }

    /// Seals the job once nothing is left to run, or when it is cancelled.
    pub fn finish(&mut self, now: DateTime<Utc>) {
        self.status = if self.cancel_requested_at.is_some() {
            JobStatus::Cancelled
        } else if self.chunks.iter().any(|c| c.status == ChunkStatus::Failed) {
            JobStatus::Failed
        } else {
            JobStatus::Done
        };
        self.finished_at = Some(now);
        self.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn request(start: &str, end: &str, chunk: Option<&str>) -> BackfillRequest {
        BackfillRequest {
            start: Some(start.into()),
            end: Some(end.into()),
            chunk: chunk.map(Into::into),
        }
    }

    #[test]
    fn chunk_sizes_parse_in_minutes_hours_and_days() {
        assert_eq!(parse_chunk("15m").unwrap(), Duration::minutes(15));
        assert_eq!(parse_chunk("6h").unwrap(), Duration::hours(6));
        assert_eq!(parse_chunk("7d").unwrap(), Duration::days(7));
        // Multi-byte last characters once split a character in two and panicked.
        for bad in [
            "", "d", "1w", "1.5d", "-1d", "0h", "1 d x", "999d", "1€", "€", "1d€", "7дн",
        ] {
            let e = parse_chunk(bad).unwrap_err();
            assert_eq!(e.field, "chunk", "{bad}");
        }
    }

    #[test]
    fn a_range_is_planned_in_chunks_with_a_shorter_last_one() {
        let job = Backfill::plan(
            "j".into(),
            "s",
            &request("2025-01-01", "2025-01-03T12:00:00Z", None),
            now(),
            true,
        )
        .unwrap();
        assert_eq!(job.chunk_seconds, 86_400);
        assert_eq!(job.chunks.len(), 3);
        // Without an upper bound the query reads on past any chunk: twenty years, one chunk.
        let whole = Backfill::plan(
            "j".into(),
            "s",
            &request("2005-01-01", "2025-01-01", Some("1d")),
            now(),
            false,
        )
        .unwrap();
        assert_eq!(whole.chunks.len(), 1);
        assert_eq!((whole.chunks[0].from, whole.chunks[0].to), (whole.start, whole.end));
        assert_eq!(job.chunks[2].to - job.chunks[2].from, Duration::hours(12));
        assert_eq!(job.next_action(now()), Action::Run(0));
        assert_eq!(job.progress().percent_done, 0.0);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (request("2025-01-02", "2025-01-01", None), "end"),
            (request("2025-01-01", "2027-01-01", None), "end"),
            (request("2025-01-01", "2025-01-02", Some("1x")), "chunk"),
            (request("2020-01-01", "2025-01-01", Some("1h")), "chunk"),
            (request("yesterday", "2025-01-01", None), "start"),
            (BackfillRequest::default(), "start"),
        ];
        for (req, field) in cases {
            assert_eq!(
                Backfill::plan("j".into(), "s", &req, now(), true).unwrap_err().field,
                field,
                "{req:?}"
            );
        }
    }

    #[test]
    fn failures_are_retried_then_failed_and_splits_halve() {
        let mut job = Backfill::plan("j".into(), "s", &request("2025-01-01", "2025-01-03", None), now(), true).unwrap();
        job.chunk_failed(0, "r", "boom", now(), Duration::seconds(10));
        assert_eq!(job.next_action(now()), Action::Run(1));
        job.split_chunk(1, now());
        assert_eq!(job.chunks.len(), 3);
        assert_eq!(job.chunks[1].to - job.chunks[1].from, Duration::hours(12));
        for i in [1, 2] {
            job.chunks[i].status = ChunkStatus::Done;
        }
        assert_eq!(job.next_action(now()), Action::WaitUntil(now() + Duration::seconds(10)));
        job.chunk_failed(0, "r", "boom", now(), Duration::zero());
        job.chunk_failed(0, "r", "boom", now(), Duration::zero());
        assert_eq!(job.chunks[0].status, ChunkStatus::Failed);
        assert_eq!(job.next_action(now()), Action::Finish);
        job.finish(now());
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.progress().percent_done, 100.0);
        assert_eq!(job.errors().len(), 1);
    }
}
