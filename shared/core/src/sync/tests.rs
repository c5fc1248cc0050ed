//! The sync's decisions, on an in-memory store and a scripted database, in paused
//! tokio time: leases and their expiry, windows and the lookback, catch-up inside the
//! budget, halving at the row limit and at the time limit, failures that keep the
//! watermark, and the adaptive schedule.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::ports::{Clock, SourceErrorKind};
use crate::ports::{RecordReader, RunLog, SourceStore};
use crate::source::ConnectionSecret;
use crate::testing::{
    MemorySchedules, MemorySecrets, MemoryStore, RecordedEvents, ScriptedDatabase, ScriptedReader, TestClock,
};
use crate::value::Value;

pub(crate) const QUERY: &str = "SELECT id AS reference, user_id AS member_id, name AS member_name, date FROM sales
WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}";

pub(crate) fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

pub(crate) fn minutes(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

pub(crate) fn config(query: &str) -> SourceConfig {
    serde_json::from_value(serde_json::json!({
        "id": "sales", "name": "Sales", "engine": "postgres", "secret_id": "db",
        "query": query, "sync_type": "registration"
    }))
    .unwrap()
}

/// A sync service over memory, a scripted database and a clock at [`base`].
pub(crate) struct Fixture {
    pub store: Arc<MemoryStore>,
    pub db: Arc<ScriptedDatabase>,
    pub clock: Arc<TestClock>,
    pub schedules: Arc<MemorySchedules>,
    pub service: Arc<SyncService>,
}

impl Fixture {
    pub(crate) async fn new(config: SourceConfig) -> Self {
        Self::with_settings(config, SyncSettings::default()).await
    }

    pub(crate) async fn with_settings(config: SourceConfig, settings: SyncSettings) -> Self {
        Self::build(config, settings, chrono::Duration::zero()).await
    }

    /// A fixture whose sync runs on a clock `skew` ahead of the database's.
    async fn skewed(config: SourceConfig, skew: chrono::Duration) -> Self {
        Self::build(config, SyncSettings::default(), skew).await
    }

    async fn build(config: SourceConfig, settings: SyncSettings, skew: chrono::Duration) -> Self {
        let clock = Arc::new(TestClock::at(base()));
        let db = ScriptedDatabase::new(
            Arc::new(TestClock::at(base() - skew)),
            &["reference", "member_id", "member_name", "date"],
        );
        let store = Arc::new(MemoryStore::new());
        store.put_source(&config).await.unwrap();
        let secret = ConnectionSecret::from_json(r#"{"engine": "postgres", "database": "shop"}"#).unwrap();
        let schedules = Arc::new(MemorySchedules::default());
        let service = SyncService::new(
            store.clone(),
            Arc::new(ScriptedReader(db.clone())),
            Arc::new(MemorySecrets::with("db", secret)),
            Arc::new(RecordedEvents::default()),
            settings,
        )
        .with_clock(clock.clone(), Arc::new(crate::ports::UuidIds))
        .with_schedules(schedules.clone());
        Fixture {
            store,
            db,
            clock,
            schedules,
            service: Arc::new(service),
        }
    }

    /// Sale `id`, changed at `at` (what the window selects it by).
    pub(crate) fn sale(&self, id: i64, at: DateTime<Utc>) {
        self.db.upsert(
            at,
            vec![
                Value::Text(format!("s-{id}")),
                Value::Int(id % 3),
                Value::Text(format!("member {}", id % 3)),
                Value::Timestamp(at),
            ],
        );
    }

    pub(crate) async fn run(&self) -> Run {
        self.service.run("sales", Trigger::Schedule, None).await.unwrap()
    }

    pub(crate) async fn state(&self) -> SourceState {
        self.store.get_source("sales").await.unwrap().unwrap()
    }

    pub(crate) async fn records(&self) -> u64 {
        self.store.count_records("sales").await.unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn a_first_run_reads_up_to_the_database_clock_then_moves_the_watermark() {
    let f = Fixture::new(config(QUERY)).await;
    for id in 1..=3 {
        f.sale(id, base() - chrono::Duration::days(2));
    }
    let run = f.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    assert_eq!((run.rows_read, run.rows_written, run.rows_unchanged), (3, 3, 0));
    assert_eq!(
        f.db.queried(),
        [Window {
            from: DateTime::UNIX_EPOCH,
            to: base()
        }]
    );
    assert_eq!(f.state().await.watermark, Some(base()));
    assert_eq!(f.state().await.lease, None, "the lease is released");
    let (members, _) = f.store.list_members("sales").await.unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(f.store.runs("sales"), [run]);
}

#[tokio::test(start_paused = true)]
async fn the_next_run_rereads_the_lookback_so_a_late_commit_is_not_lost() {
    let f = Fixture::new(config(QUERY)).await;
    f.sale(1, base() - minutes(30));
    f.run().await;
    f.db.queried();
    tokio::time::advance(Duration::from_secs(600)).await;
    // Stamped before the watermark, committed after the first run read.
    f.sale(2, base() - minutes(2));
    f.sale(3, base() + minutes(5));
    let run = f.run().await;
    assert_eq!(
        f.db.queried(),
        [Window {
            from: base() - chrono::Duration::seconds(300),
            to: base() + minutes(10)
        }]
    );
    assert_eq!((run.rows_read, run.rows_written), (2, 2));
    assert_eq!(f.records().await, 3);
    // Nothing changed: the lookback re-reads, nothing is written.
    tokio::time::advance(Duration::from_secs(60)).await;
    let run = f.run().await;
    assert_eq!((run.rows_read, run.rows_written, run.rows_unchanged), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_transaction_open_past_the_lookback_holds_the_window_until_it_commits() {
    use crate::ports::{OpenTransaction, OpenTransactions};
    let f = Fixture::new(config(QUERY)).await;
    f.sale(1, base() - minutes(30));
    // Its row is stamped with its start and invisible until it commits.
    let began = base() - minutes(20);
    f.db.show_transactions(OpenTransactions::Seen(Some(OpenTransaction {
        started_at: began,
        session: "pid 4711".into(),
    })));
    let first = f.run().await;
    assert_eq!(
        f.db.queried(),
        [Window {
            from: DateTime::UNIX_EPOCH,
            to: began
        }]
    );
    assert_eq!((first.rows_read, f.state().await.watermark), (1, Some(began)));
    assert_eq!(
        first.window_bound.as_deref(),
        Some("capped at the oldest open transaction, started 2026-01-01T11:40:00Z by pid 4711")
    );

    // Still open well past the lookback: the window waits at its start, and the
    // watermark never passes it.
    tokio::time::advance(Duration::from_secs(45 * 60)).await;
    let second = f.run().await;
    assert_eq!(
        f.db.queried(),
        [Window {
            from: began - chrono::Duration::seconds(300),
            to: began
        }]
    );
    assert_eq!((second.rows_read, f.state().await.watermark), (0, Some(began)));

    // Open past an hour: still capped (nothing is lost), and the log says it waits.
    tokio::time::advance(Duration::from_secs(30 * 60)).await;
    let third = f.run().await;
    let bound = third.window_bound.unwrap();
    assert!(bound.contains("by pid 4711; open for 95 minutes"), "{bound}");
    assert_eq!(f.state().await.watermark, Some(began));

    // It commits: the next run reads its row, once.
    f.sale(2, began);
    f.db.show_transactions(OpenTransactions::Seen(None));
    let fourth = f.run().await;
    assert_eq!(
        fourth.window_bound.as_deref(),
        Some("database clock: no other transaction open")
    );
    assert_eq!((fourth.rows_read, fourth.rows_written), (1, 1));
    assert_eq!(f.records().await, 2);
    assert_eq!(f.state().await.watermark, Some(base() + minutes(75)));
}

#[tokio::test(start_paused = true)]
async fn a_login_that_cannot_see_transactions_reads_up_to_the_clock_and_says_so() {
    use crate::ports::OpenTransactions;
    let f = Fixture::new(config(QUERY)).await;
    f.db.show_transactions(OpenTransactions::Unseen(
        "the login cannot see other sessions' transactions; grant it pg_read_all_stats".into(),
    ));
    let run = f.run().await;
    assert_eq!(
        f.db.queried(),
        [Window {
            from: DateTime::UNIX_EPOCH,
            to: base()
        }]
    );
    assert_eq!(
        run.window_bound.as_deref(),
        Some("database clock: the login cannot see other sessions' transactions; grant it pg_read_all_stats")
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_lease_skips_the_run_until_it_expires() {
    let f = Fixture::new(config(QUERY)).await;
    f.sale(1, base() - minutes(30));
    let held_until = base() + minutes(16);
    f.store
        .acquire_lease("sales", "another", base(), held_until)
        .await
        .unwrap();
    let run = f.run().await;
    assert_eq!(run.status, RunStatus::Skipped);
    assert!(
        run.message
            .as_deref()
            .unwrap()
            .contains("another run of this source is in progress")
    );
    assert_eq!(f.state().await.watermark, None);
    assert!(f.db.queried().is_empty(), "a skipped run does not query");
    // The other run died; its lease expires and the next run takes it.
    tokio::time::advance(Duration::from_secs(17 * 60)).await;
    let run = f.run().await;
    assert_eq!((run.status, run.rows_written), (RunStatus::Succeeded, 1));
}

#[tokio::test(start_paused = true)]
async fn a_disabled_source_and_one_not_started_yet_are_skipped() {
    let mut c = config(QUERY);
    c.enabled = false;
    let f = Fixture::new(c.clone()).await;
    assert_eq!(f.run().await.message.as_deref(), Some("the source is disabled"));
    c.enabled = true;
    c.start_at = Some(base() + minutes(5));
    f.store.put_source(&c).await.unwrap();
    let run = f.run().await;
    assert_eq!(run.status, RunStatus::Skipped);
    assert!(run.message.unwrap().starts_with("the source starts at"));
    tokio::time::advance(Duration::from_secs(6 * 60)).await;
    assert_eq!(f.run().await.status, RunStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn catch_up_moves_the_watermark_window_by_window_while_the_budget_lasts() {
    let mut c = config(QUERY);
    c.max_window_seconds = Some(3600);
    c.initial_watermark = Some(base() - chrono::Duration::hours(5));
    let f = Fixture::new(c).await;
    for h in 0..5 {
        f.sale(h, base() - chrono::Duration::hours(5 - h) + minutes(30));
    }
    f.db.answer_slowly(Duration::from_secs(10));
    // The first window takes 10 s; 25 s does not clearly cover two more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    let run = f.service.run("sales", Trigger::Schedule, Some(deadline)).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.rows_written, 1);
    assert_eq!(f.state().await.watermark, Some(base() - chrono::Duration::hours(4)));
    // Without a deadline the rest is caught up, an hour at a time.
    f.db.queried();
    let run = f.run().await;
    assert_eq!(run.rows_written, 4);
    assert_eq!(f.db.queried().len(), 5, "four hours and the lookback's part");
    assert_eq!(
        f.state().await.watermark,
        Some(f.clock.now() - chrono::Duration::seconds(40))
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_over_the_row_limit_is_read_in_halves_until_each_part_fits() {
    let mut c = config(QUERY);
    c.max_rows_per_run = Some(2);
    c.initial_watermark = Some(base() - minutes(60));
    let f = Fixture::new(c).await;
    for (id, ago) in [(1, 55), (2, 50), (3, 40), (4, 20), (5, 10)] {
        f.sale(id, base() - minutes(ago));
    }
    let first = f.run().await;
    assert!(
        first
            .message
            .as_deref()
            .unwrap()
            .contains("read max_rows_per_run (2) rows before the end of the window"),
        "{first:?}"
    );
    assert_eq!(f.state().await.watermark, None, "the watermark stays");
    assert_eq!(f.state().await.narrowed_window_seconds, Some(1800));
    let mut runs = 1;
    while f.state().await.narrowed_window_seconds.is_some() || f.state().await.watermark != Some(f.clock.now()) {
        let run = f.run().await;
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
        assert!(run.rows_read <= 2, "a run reads at most the limit: {run:?}");
        runs += 1;
        assert!(runs < 12, "it converges");
    }
    assert_eq!(f.records().await, 5);
}

#[tokio::test(start_paused = true)]
async fn even_one_minute_over_the_row_limit_fails_with_the_fix() {
    let mut c = config(QUERY);
    c.max_rows_per_run = Some(1);
    c.initial_watermark = Some(base() - minutes(1));
    let f = Fixture::new(c).await;
    f.sale(1, base() - chrono::Duration::seconds(30));
    f.sale(2, base() - chrono::Duration::seconds(20));
    let run = f.run().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.message.unwrap().contains("raise max_rows_per_run"));
}

#[tokio::test(start_paused = true)]
async fn a_window_the_budget_cannot_finish_keeps_what_it_wrote_and_is_narrowed() {
    let mut c = config(QUERY);
    c.initial_watermark = Some(base() - minutes(60));
    let settings = SyncSettings {
        batch_size: 10,
        ..SyncSettings::default()
    };
    let f = Fixture::with_settings(c, settings).await;
    for id in 0..60 {
        f.sale(id, base() - minutes(60 - id));
    }
    f.db.answer_slowly(Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    let run = f.service.run("sales", Trigger::Schedule, Some(deadline)).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert!(
        run.message
            .as_deref()
            .unwrap()
            .starts_with("the time budget ran out before the end of the window")
    );
    assert_eq!(run.rows_written, 25, "every row read before the deadline is kept");
    let state = f.state().await;
    assert_eq!((state.watermark, state.narrowed_window_seconds), (None, Some(1800)));
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_fails_the_run_keeps_the_watermark_and_the_next_run_catches_up() {
    let f = Fixture::new(config(QUERY)).await;
    f.sale(1, base() - minutes(30));
    f.run().await;
    let watermark = f.state().await.watermark;
    tokio::time::advance(Duration::from_secs(60)).await;
    f.sale(2, base() + chrono::Duration::seconds(30));
    f.store.fail_writes(Some("the table is unavailable"));
    let run = f.run().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.message.as_deref().unwrap().contains("the table is unavailable"),
        "{run:?}"
    );
    assert_eq!(f.state().await.watermark, watermark);
    assert_eq!(f.state().await.lease, None, "a failed run releases its lease");
    f.store.fail_writes(None);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(f.run().await.rows_written, 1);
    assert_eq!(f.records().await, 2);
}

/// The run that dies after its last write and before its watermark (a SIGKILL lands
/// there in a few milliseconds of a run): the next run reads the same window again,
/// finds every record unchanged, writes nothing twice, and moves the watermark.
#[tokio::test(start_paused = true)]
async fn a_run_stopped_between_its_last_write_and_the_watermark_is_finished_by_the_next() {
    let f = Fixture::new(config(QUERY)).await;
    for id in 1..=5 {
        f.sale(id, base() - minutes(id));
    }
    f.store.fail_watermarks(Some("the process died"));
    let run = f.run().await;
    assert_eq!((run.status, run.rows_written), (RunStatus::Failed, 5), "{run:?}");
    assert_eq!(f.state().await.watermark, None);
    assert_eq!(f.records().await, 5, "the writes are there");
    f.store.fail_watermarks(None);
    tokio::time::advance(Duration::from_secs(60)).await;
    let next = f.run().await;
    assert_eq!(next.status, RunStatus::Succeeded);
    assert_eq!((next.rows_read, next.rows_written, next.rows_unchanged), (5, 0, 5));
    assert_eq!(f.records().await, 5);
    assert_eq!(f.state().await.watermark, next.watermark);
}

#[tokio::test(start_paused = true)]
async fn a_database_that_breaks_mid_stream_fails_the_run_with_its_message() {
    let f = Fixture::new(config(QUERY)).await;
    for id in 1..=5 {
        f.sale(id, base() - minutes(id));
    }
    f.db.break_after(
        3,
        SourceError::new(SourceErrorKind::Connect, "the connection was lost while reading rows"),
    );
    let run = f.run().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.message.as_deref(),
        Some(
            "source database: the connection was lost while reading rows, after 3 rows; what was read is kept and the watermark stays, so the next attempt reads the window again"
        )
    );
    assert_eq!(f.state().await.watermark, None);
    f.db.heal();
    assert_eq!(f.run().await.rows_read, 5);
}

#[tokio::test(start_paused = true)]
async fn without_an_upper_bound_there_is_one_window_up_to_the_run_start() {
    let mut c = config("SELECT * FROM sales WHERE updated_at >= {{ last_update_time }}");
    c.max_window_seconds = Some(60);
    c.max_rows_per_run = Some(1);
    let f = Fixture::new(c).await;
    f.sale(1, base() - minutes(30));
    f.sale(2, base() - minutes(20));
    let run = f.run().await;
    assert_eq!((run.status, run.rows_written), (RunStatus::Succeeded, 2));
    assert_eq!(f.db.queried().len(), 1);
    let state = f.state().await;
    assert_eq!((state.watermark, state.narrowed_window_seconds), (Some(base()), None));
}

#[tokio::test(start_paused = true)]
async fn a_query_without_a_required_column_fails_the_run_naming_it() {
    let f = Fixture::new(config(QUERY)).await;
    f.db.hide_columns();
    let run = f.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "no row, no column to check");
    let c = config("SELECT 1 AS reference WHERE d >= {{ last_update_time }} AND d < {{ upper_date_limit }}");
    let f = Fixture::new(c).await;
    let db = ScriptedDatabase::new(f.clock.clone(), &["reference"]);
    let service = SyncService::new(
        f.store.clone(),
        Arc::new(ScriptedReader(db)),
        Arc::new(MemorySecrets::with(
            "db",
            ConnectionSecret::from_json(r#"{"engine": "postgres", "database": "shop"}"#).unwrap(),
        )),
        Arc::new(RecordedEvents::default()),
        SyncSettings::default(),
    );
    let run = service.run("sales", Trigger::Manual, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.message.unwrap().contains("the query returns no `member_id` column"));
}

#[tokio::test(start_paused = true)]
async fn a_slow_scheduled_run_slows_its_schedule_and_fast_runs_bring_it_back() {
    let mut c = config(QUERY);
    c.frequency_minutes = 1;
    let f = Fixture::new(c).await;
    for id in 1..=4 {
        f.sale(id, base() - minutes(id));
    }
    f.db.answer_slowly(Duration::from_secs(10));
    f.run().await;
    assert_eq!(*f.schedules.rate_changes.lock().unwrap(), [("sales".to_string(), 5)]);
    assert_eq!(f.state().await.cadence.minutes(1), 5);
    f.db.answer_slowly(Duration::ZERO);
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(300)).await;
        f.run().await;
    }
    assert_eq!(
        f.schedules.rate_changes.lock().unwrap().last(),
        Some(&("sales".to_string(), 1))
    );
    // A manual run never changes the schedule.
    f.db.answer_slowly(Duration::from_secs(10));
    f.service.run("sales", Trigger::Manual, None).await.unwrap();
    assert_eq!(f.schedules.rate_changes.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_chunk_never_moves_the_watermark() {
    let f = Fixture::new(config(QUERY)).await;
    f.sale(1, base() - chrono::Duration::days(3));
    let state = f.state().await;
    let window = Window {
        from: base() - chrono::Duration::days(4),
        to: base() - chrono::Duration::days(2),
    };
    let (run, outcome) = f
        .service
        .run_chunk(&state, "token", "job", window, &Budget::default())
        .await
        .unwrap();
    assert_eq!(outcome, ChunkOutcome::Done);
    assert_eq!((run.trigger, run.rows_written), (Trigger::Backfill, 1));
    assert_eq!(run.backfill_id.as_deref(), Some("job"));
    assert_eq!(f.state().await.watermark, None);
    assert_eq!(f.store.list_runs("sales", 5, None).await.unwrap(), [run]);
}

#[test]
fn a_budget_stops_at_its_deadline_less_the_margin_and_when_interrupted() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let budget = Budget::until(Some(tokio::time::Instant::now() + Duration::from_secs(60)));
        assert_eq!(budget.stop(Duration::from_secs(30)), None);
        assert_eq!(
            budget.less(Duration::from_secs(30)).stop(Duration::from_secs(30)),
            Some(Stop::OutOfTime)
        );
        budget.interrupt();
        assert_eq!(budget.stop(Duration::ZERO), Some(Stop::Interrupted));
    });
}

#[tokio::test(start_paused = true)]
async fn members_go_to_the_namespace_the_source_names() {
    let mut c = config(QUERY);
    c.member_id_source = Some("crm".into());
    let f = Fixture::new(c).await;
    f.sale(1, base() - minutes(5));
    f.run().await;
    let (crm, _) = f.store.list_members("crm").await.unwrap();
    assert_eq!(crm.len(), 1);
    assert!(f.store.list_members("sales").await.unwrap().0.is_empty());
}

#[tokio::test(start_paused = true)]
async fn two_sources_share_one_secret_and_keep_their_own_watermarks() {
    let f = Fixture::new(config(QUERY)).await;
    let mut other = config(QUERY);
    other.id = "refunds".into();
    f.store.put_source(&other).await.unwrap();
    f.sale(1, base() - minutes(5));
    for id in ["sales", "refunds"] {
        let run = f.service.run(id, Trigger::Schedule, None).await.unwrap();
        assert_eq!((run.status, run.rows_written), (RunStatus::Succeeded, 1), "{id}");
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    assert_eq!(f.state().await.watermark, Some(base()));
    let refunds = f.store.get_source("refunds").await.unwrap().unwrap();
    assert_eq!(refunds.watermark, Some(base() + minutes(1)));
}

#[tokio::test(start_paused = true)]
async fn a_clock_ten_minutes_off_the_databases_loses_no_late_row() {
    for skew in [minutes(10), minutes(-10)] {
        let f = Fixture::skewed(config(QUERY), skew).await;
        let db_now = || f.clock.now() - skew;
        let mut id = 0;
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(60)).await;
            // A row stamped as it commits, and one stamped four minutes before its
            // commit (a long transaction), inside the five-minute lookback.
            for lag in [0, 4] {
                id += 1;
                f.sale(id, db_now() - minutes(lag));
            }
            let run = f.run().await;
            assert_eq!(run.status, RunStatus::Succeeded, "{skew}: {:?}", run.message);
        }
        // The rows stamped at the last run's upper bound are the next run's.
        tokio::time::advance(Duration::from_secs(60)).await;
        f.run().await;
        assert_eq!(f.records().await, id as u64, "skew {skew}: every row, once");
        let watermark = f.state().await.watermark.unwrap();
        assert!(
            (watermark - db_now()).num_seconds().abs() <= 60,
            "the watermark follows the database's clock: {watermark}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_login_is_checked_once_an_hour_and_a_writable_one_refused_when_required() {
    let f = Fixture::new(config(QUERY)).await;
    f.sale(1, base() - minutes(30));
    let revoke = "REVOKE INSERT ON public.sales FROM reader";
    f.db.login_is(LoginCheck::Writable {
        revoke: vec![revoke.into()],
    });
    // A warning by default: the run reads, and its log says what to drop.
    let run = f.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    assert!(run.login.as_deref().unwrap().contains(revoke), "{run:?}");
    tokio::time::advance(Duration::from_secs(600)).await;
    let again = f.run().await;
    assert_eq!(again.login, run.login, "every run says it");
    assert_eq!(f.db.login_checks(), 1, "from the check of the first run");
    tokio::time::advance(LOGIN_CHECK_TTL.to_std().unwrap()).await;
    f.run().await;
    assert_eq!(f.db.login_checks(), 2, "checked again after an hour");

    // Required: refused before the query, the watermark where it was.
    let mut strict = config(QUERY);
    strict.require_read_only_login = true;
    f.store.put_source(&strict).await.unwrap();
    let watermark = f.state().await.watermark;
    f.db.queried();
    tokio::time::advance(Duration::from_secs(60)).await;
    let refused = f.run().await;
    assert_eq!(refused.status, RunStatus::Failed);
    let message = refused.message.as_deref().unwrap();
    assert!(
        message.contains("require_read_only_login") && message.contains(revoke),
        "{message}"
    );
    assert_eq!((refused.rows_read, f.db.queried().len()), (0, 0), "nothing read");
    assert_eq!(f.state().await.watermark, watermark);

    // A check that fails is not remembered, and refuses too when required.
    f.db.login_is(LoginCheck::could_not_check("permission denied for table pg_roles"));
    tokio::time::advance(LOGIN_CHECK_TTL.to_std().unwrap()).await;
    let unchecked = f.run().await;
    assert_eq!(unchecked.status, RunStatus::Failed);
    assert!(
        unchecked.message.as_deref().unwrap().contains("could not check"),
        "{unchecked:?}"
    );
    f.db.login_is(LoginCheck::read_only("scripted"));
    let fine = f.run().await;
    assert_eq!(fine.status, RunStatus::Succeeded, "{:?}", fine.message);
    assert_eq!(f.db.login_checks(), 4);
}
