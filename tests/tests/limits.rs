//! DynamoDB's limits (issue 21): one row DynamoDB would refuse, among 50 good ones, is
//! rejected alone with its reason; the 50 arrive, the watermark moves, and the next run
//! is clean. Each limit runs against DynamoDB (moto) and the embedded store, which
//! reject alike. moto is laxer than AWS (it checks neither nesting, precision nor empty
//! names): those rows would reach moto and be stored, so these tests prove that mapping
//! rejects them. The last test makes moto itself refuse a batch, to prove that the
//! store splits it down to the row and goes on.

use sluice_core::{Engine, RunStatus, SyncType, Trigger};
use sluice_tests::*;

/// 50 good sales and the bad one in their middle.
const ROWS: usize = 51;
const BAD: usize = 26;

/// A registration query whose row `BAD` has `bad` (column, SQL expression) instead of
/// its usual value; a column not in the usual query is NULL in the good rows.
fn registration(bad: (&str, &str)) -> String {
    let mut columns: Vec<(String, String)> = [
        ("reference", "id::text"),
        ("member_id", "user_id::text"),
        ("member_name", "user_name"),
        ("team_name", "team"),
        ("date", "date"),
        ("amount", "amount"),
    ]
    .map(|(c, e)| (c.to_string(), e.to_string()))
    .into();
    let (column, expression) = bad;
    match columns.iter_mut().find(|(c, _)| c == column) {
        Some((_, good)) => *good = format!("CASE WHEN id = {BAD} THEN {expression} ELSE {good} END"),
        None => columns.push((column.into(), format!("CASE WHEN id = {BAD} THEN {expression} END"))),
    }
    query(&columns)
}

fn query(columns: &[(String, String)]) -> String {
    let select: Vec<String> = columns.iter().map(|(c, e)| format!("{e} AS \"{c}\"")).collect();
    format!(
        "SELECT {} FROM sales WHERE updated_at >= {{{{ last_update_time }}}} AND updated_at < {{{{ upper_date_limit }}}}",
        select.join(", ")
    )
}

/// Syncs `query` over the sales into `kind`: one row rejected with `reason` in its
/// reason and a reference that starts with `reference`, the others written, the
/// watermark moved; then 5 new sales go through a clean run.
async fn one_bad_row(kind: StoreKind, sync_type: SyncType, query: &str, reference: &str, reason: &str) {
    let what = format!("{kind:?}, {reason}");
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(ROWS).await;
    let store = store(kind).await;
    let mut src = source(&unique("limits"), &db, query);
    src.sync_type = sync_type;
    store.put_source(&src).await.unwrap();
    let sync = service(store.clone(), secrets_for(&src, &db));
    let run = sync.run(&src.id, Trigger::Manual, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{what}: {:?}", run.message);
    assert_eq!(
        (run.rows_read, run.rows_written, run.rows_rejected),
        (ROWS as u64, ROWS as u64 - 1, 1),
        "{what}: {:?}",
        run.rejects
    );
    let reject = &run.rejects[0];
    assert!(reject.reason.contains(reason), "{what}: {reject:?}");
    let kept = reject.reference.as_deref().unwrap_or_default();
    assert!(kept.starts_with(reference), "{what}: {kept}");
    assert!(
        kept.len() < 300,
        "{what}: a long reference is cut: {} bytes",
        kept.len()
    );
    assert_eq!(store.count_records(&src.id).await.unwrap(), ROWS as u64 - 1, "{what}");
    let logged = &store.list_runs(&src.id, 1, None).await.unwrap()[0];
    assert_eq!(logged.rejects, run.rejects, "{what}: the run's log keeps the reject");
    let state = store.get_source(&src.id).await.unwrap().unwrap();
    assert!(
        run.watermark.is_some() && state.watermark == run.watermark,
        "{what}: the watermark moved"
    );

    db.insert_sales(ROWS + 1, 5, "0 seconds").await;
    let next = sync.run(&src.id, Trigger::Manual, None).await.unwrap();
    assert_eq!(
        (next.status, next.rows_written, next.rows_rejected),
        (RunStatus::Succeeded, 5, 0),
        "{what}: the next run is clean: {:?}",
        next.message
    );
    assert_eq!(store.count_records(&src.id).await.unwrap(), ROWS as u64 + 4, "{what}");
}

async fn on_both(sync_type: SyncType, query: &str, reference: &str, reason: &str) {
    for kind in [StoreKind::Dynamo, StoreKind::Embedded] {
        one_bad_row(kind, sync_type, query, reference, reason).await;
    }
}

#[tokio::test]
async fn a_reference_over_1024_bytes() {
    // The issue's own case: moto refused the whole batch, for ever.
    let query = registration(("reference", "repeat('r', 1500)"));
    on_both(
        SyncType::Registration,
        &query,
        "rrrr",
        "reference is 1500 bytes, over DynamoDB's 1,024-byte limit",
    )
    .await;
}

#[tokio::test]
async fn a_member_id_over_1024_bytes() {
    let query = registration(("member_id", "repeat('m', 1100)"));
    on_both(SyncType::Registration, &query, "26", "member_id is 1100 bytes").await;
}

#[tokio::test]
async fn a_team_name_over_1024_bytes() {
    let query = registration(("team_name", "repeat('t', 1025)"));
    on_both(SyncType::Registration, &query, "26", "team_name is 1025 bytes").await;
}

#[tokio::test]
async fn a_user_id_over_1024_bytes() {
    let columns = [
        (
            "userId",
            format!("CASE WHEN id = {BAD} THEN repeat('u', 1200) ELSE 'user-' || id END"),
        ),
        ("plan", "team".into()),
        ("amount", "amount".into()),
    ]
    .map(|(c, e)| (c.to_string(), e));
    on_both(
        SyncType::Identify,
        &query(&columns),
        "uuuu",
        "userId (or anonymousId, or email) is 1200 bytes",
    )
    .await;
}

#[tokio::test]
async fn a_message_id_over_1024_bytes() {
    let columns = [
        ("userId", "'user-' || user_id".to_string()),
        ("event", "'Order Completed'".into()),
        (
            "messageId",
            format!("CASE WHEN id = {BAD} THEN repeat('m', 1100) ELSE 'm-' || id END"),
        ),
        ("amount", "amount".into()),
    ]
    .map(|(c, e)| (c.to_string(), e));
    on_both(SyncType::Track, &query(&columns), "mmmm", "messageId is 1100 bytes").await;
}

#[tokio::test]
async fn a_float_past_dynamodbs_largest_number() {
    // moto refuses it too (number overflow), and failed the batch.
    let query = registration(("score", "1e300::float8"));
    on_both(SyncType::Registration, &query, "26", "score holds 1e300, too large").await;
}

#[tokio::test]
async fn a_float_below_dynamodbs_smallest_number() {
    let query = registration(("score", "1e-200::float8"));
    on_both(SyncType::Registration, &query, "26", "score holds 1e-200, too small").await;
}

#[tokio::test]
async fn a_float_that_is_not_a_number() {
    let query = registration(("score", "'NaN'::float8"));
    on_both(SyncType::Registration, &query, "26", "column score holds NaN").await;
}

#[tokio::test]
async fn a_decimal_of_39_significant_digits() {
    // moto reads numbers as floats and stores this one; DynamoDB refuses it.
    let query = registration(("amount", &format!("1.{}::numeric", "3".repeat(38))));
    on_both(SyncType::Registration, &query, "26", "more than 38 significant digits").await;
}

#[tokio::test]
async fn a_number_past_the_range_inside_json() {
    let query = registration((
        "props",
        r#"jsonb_build_object('nested', jsonb_build_object('x', 1e300::float8))"#,
    ));
    on_both(
        SyncType::Registration,
        &query,
        "26",
        "props.nested.x holds 1e300, too large",
    )
    .await;
}

#[tokio::test]
async fn json_nested_deeper_than_32_levels() {
    // 32 objects around a value: with the item, 33 levels. moto stores it.
    let query = registration(("props", "(repeat('{\"a\":', 32) || '1' || repeat('}', 32))::jsonb"));
    on_both(
        SyncType::Registration,
        &query,
        "26",
        "nested deeper than DynamoDB's 32 levels",
    )
    .await;
}

#[tokio::test]
async fn json_with_an_empty_key() {
    // moto stores it; DynamoDB refuses an empty name at any depth.
    let query = registration(("props", r#"'{"ok": {"": 1}}'::jsonb"#));
    on_both(SyncType::Registration, &query, "26", "props.ok has an empty key").await;
}

#[tokio::test]
async fn a_call_with_an_empty_key_in_its_properties() {
    let columns = [
        ("userId", "'user-' || user_id".to_string()),
        ("event", "'Order Completed'".into()),
        ("messageId", "'m-' || id".into()),
        (
            "properties",
            format!(r#"CASE WHEN id = {BAD} THEN '{{"": 1}}'::jsonb ELSE '{{"a": 1}}'::jsonb END"#),
        ),
    ]
    .map(|(c, e)| (c.to_string(), e));
    on_both(SyncType::Track, &query(&columns), "m-26", "properties has an empty key").await;
}

#[tokio::test]
async fn a_record_over_400_kb() {
    let query = registration(("note", "repeat('x', 410000)"));
    on_both(SyncType::Registration, &query, "26", "over its 400 KB item limit").await;
}

#[tokio::test]
async fn a_batch_dynamodb_refuses_is_split_down_to_its_row() {
    // 406,000 bytes are under DynamoDB's 409,600 (400 KB), so mapping lets the row
    // through; moto's own limit is 405,000 bytes and it refuses the batch as invalid:
    // a real refusal of a limit mapping does not know.
    let query = registration(("note", "repeat('x', 406000)"));
    one_bad_row(
        StoreKind::Dynamo,
        SyncType::Registration,
        &query,
        "26",
        "DynamoDB refused the record: Item size has exceeded the maximum allowed size",
    )
    .await;
}
