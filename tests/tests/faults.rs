//! The fault scenarios of tests/src/chaos.rs at the test command's size: AWS faults
//! behind the fault proxy, database sessions killed, servers crashed, locks held, the
//! sync process SIGKILLed, overlapping invocations, a backfill racing scheduled runs
//! and a skewed clock, each while late writers commit. After each the source's rows and
//! the stored records must match (nothing missing, stale, duplicated or extra), and
//! every failed run must have said why. The management API behind the same faults must
//! leave every source with its config, schedule and secret. `bash bench/faults.sh` runs them large.

use sluice_core::Engine;
use sluice_tests::chaos::{self, Scale};
use sluice_tests::faults::{Fault, FaultPlan, Rule};

const SCALE: Scale = Scale::TEST;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_faults_lose_duplicate_and_leave_stale_nothing() {
    let outcome = chaos::aws(SCALE).await;
    outcome.assert_clean();
    assert!(outcome.faults > 20 && outcome.failed < outcome.runs, "{outcome:?}");
}

/// A database fault of `outcome`'s kind: nothing lost, and at least `failed` runs
/// failed, each saying why (and, for a statement timeout, what to raise).
fn assert_database_fault(outcome: chaos::Outcome, failed: usize) {
    outcome.assert_clean();
    assert!(outcome.failed >= failed as u32, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_session_killed_mid_stream_loses_nothing() {
    assert_database_fault(chaos::session_killed(Engine::Postgres, SCALE).await, SCALE.rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_session_killed_mid_stream_loses_nothing() {
    assert_database_fault(chaos::session_killed(Engine::Mysql, SCALE).await, SCALE.rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_server_crashed_mid_stream_loses_nothing() {
    // The run cut off, and the run while the server is down.
    assert_database_fault(chaos::server_restarted(Engine::Postgres, SCALE).await, 2 * SCALE.rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_server_crashed_mid_stream_loses_nothing() {
    assert_database_fault(chaos::server_restarted(Engine::Mysql, SCALE).await, 2 * SCALE.rounds);
}

async fn a_lock_past_the_statement_timeout(engine: Engine) {
    let outcome = chaos::lock_held(engine, SCALE).await;
    // MariaDB's timeout was once reported without its fix (its SQLSTATE 70100 was
    // taken for its error number).
    assert!(
        outcome
            .reasons
            .iter()
            .all(|r| r.contains("raise query_timeout_seconds")),
        "{outcome:?}"
    );
    assert_database_fault(outcome, SCALE.rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_lock_past_the_statement_timeout_fails_the_run_and_loses_nothing() {
    a_lock_past_the_statement_timeout(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_lock_past_the_statement_timeout_fails_the_run_and_loses_nothing() {
    a_lock_past_the_statement_timeout(Engine::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_sync_sigkilled_at_random_points_loses_and_duplicates_nothing() {
    let outcome = chaos::sigkill(SCALE).await;
    outcome.assert_clean();
    assert!(outcome.faults > 0, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_overlapping_invocations_behind_faults_run_once() {
    chaos::overlapping(2, SCALE).await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_overlapping_invocations_behind_faults_run_once() {
    chaos::overlapping(3, SCALE).await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_racing_scheduled_runs_behind_faults_loses_nothing() {
    chaos::backfill_race(SCALE).await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_clock_ten_minutes_ahead_loses_no_late_row() {
    chaos::clock_skew(10, SCALE).await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_clock_ten_minutes_behind_loses_no_late_row() {
    chaos::clock_skew(-10, SCALE).await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_behind_faults_leaves_every_source_with_its_schedule_and_secret() {
    let outcome = chaos::management_api(8, chaos::aws_faults()).await;
    outcome.assert_clean();
    assert!(outcome.faults > 20, "{outcome:?}");
}

/// The SDK sends a create again when its answer was lost. Secrets Manager knows the
/// retry by its request token; Scheduler answers ConflictException. That was a 502
/// ("Schedule ... already exists"), and a 409 to the client sending the create again,
/// with the source stored and never scheduled; now the create finds its own work and
/// finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_whose_answers_were_lost_find_their_own_work() {
    let plan = FaultPlan(vec![
        Rule::every(1, Fault::LostResponse).at_most(1).only("CreateSecret"),
        Rule::every(1, Fault::LostResponse).at_most(1).only("POST /schedules"),
    ]);
    let outcome = chaos::management_api(2, plan).await;
    outcome.assert_clean();
    assert_eq!(outcome.faults, 2, "{outcome:?}");
    assert_eq!(outcome.failed, 0, "no request needed sending again: {outcome:?}");
    assert!(
        outcome.detail.contains(r#""CreateSecret": 1"#) && outcome.detail.contains(r#""POST /schedules": 1"#),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_rows_are_rejected_one_by_one_and_every_good_row_arrives() {
    // Fewer sales than the other scenarios: the point is the bad rows, and moto's
    // Query of wide records is slow on a busy machine.
    let outcome = chaos::poison_rows(Scale { rows: 500, ..SCALE }).await;
    outcome.assert_clean();
    assert!(
        outcome.scenario.contains("12 rejected with their reason"),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_on_one_stream_one_destination_down_deliver_every_call_once() {
    // Fewer rows than the others: each round is two syncs, a stream drained and a
    // retry, on a moto every worker shares.
    let outcome = chaos::one_destination_down(Scale { rows: 400, ..SCALE }).await;
    outcome.assert_clean();
    assert!(outcome.faults > 0, "{outcome:?}");
    assert!(
        outcome
            .detail
            .starts_with("calls of the source whose destination was up delivered late: 0;"),
        "{outcome:?}"
    );
}
