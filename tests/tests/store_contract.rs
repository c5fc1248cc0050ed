//! One contract for the `Store` port, run against DynamoDB (moto) and the embedded store.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use sluice_core::{
    Backfill, BackfillCreated, BackfillRequest, IdSource, JobStatus, LeaseOutcome, Member, Record, RecordBatch, Row,
    Run, RunStatus, SaveOutcome, Store, StoreError, Trigger, UuidIds, Value,
};
use sluice_local::EmbeddedStore;
use sluice_tests::*;

fn record(key: &str, amount: i64) -> Record {
    let columns: Arc<[String]> = ["reference", "amount", "date", "note", "tags", "raw"]
        .map(String::from)
        .into();
    Record::new(
        key.to_string(),
        Row {
            columns,
            values: vec![
                Value::Text(key.into()),
                Value::Int(amount),
                Value::Timestamp(Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap()),
                Value::Null,
                Value::Array(vec![Value::Text("a".into()), Value::Int(2)]),
                Value::Bytes(vec![0xde, 0xad]),
            ],
        },
    )
}

async fn contract(store: Arc<dyn Store>) {
    let db = Database::new(sluice_core::Engine::Sqlite).await;
    let mut src = source(&unique("c"), &db, SALES_QUERY);
    let id = src.id.clone();
    let now = Utc::now();
    let later = now + Duration::minutes(10);

    // Sources: absent, created, config replaced without touching the watermark.
    assert!(store.get_source(&id).await.unwrap().is_none());
    assert_eq!(
        store.acquire_lease(&id, "t0", now, later).await.unwrap(),
        LeaseOutcome::NotFound
    );
    store.put_source(&src).await.unwrap();
    assert_eq!(store.get_source(&id).await.unwrap().unwrap().config, src);

    // The bastion's key: recorded, replaced, kept when the config is saved again, and
    // never recorded for a source that does not exist.
    assert_eq!(store.get_source(&id).await.unwrap().unwrap().ssh_host_key, None);
    store.record_ssh_host_key(&id, "ssh-ed25519 AAAAold").await.unwrap();
    store.record_ssh_host_key(&id, "ssh-ed25519 AAAAnew").await.unwrap();
    store.put_source(&src).await.unwrap();
    assert_eq!(
        store.get_source(&id).await.unwrap().unwrap().ssh_host_key.as_deref(),
        Some("ssh-ed25519 AAAAnew")
    );
    store
        .record_ssh_host_key(&unique("none"), "ssh-ed25519 AAAA")
        .await
        .unwrap();

    // Lease: taken, held for others, free again when released or expired.
    let LeaseOutcome::Acquired(state) = store.acquire_lease(&id, "t1", now, later).await.unwrap() else {
        panic!("a free lease is taken")
    };
    assert_eq!(state.lease.unwrap().token, "t1");
    match store.acquire_lease(&id, "t2", now, later).await.unwrap() {
        LeaseOutcome::Held { expires_at } => {
            assert_eq!(expires_at.timestamp_micros(), later.timestamp_micros())
        }
        other => panic!("a held lease is not taken: {other:?}"),
    }
    store.release_lease(&id, "t2").await.unwrap(); // not t2's: nothing happens
    assert!(matches!(
        store.acquire_lease(&id, "t3", now, later).await.unwrap(),
        LeaseOutcome::Held { .. }
    ));

    // Watermark: moves under the lease, never backwards, and not at all without the lease.
    let w1 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    store.advance_watermark(&id, "t1", w1).await.unwrap();
    store
        .advance_watermark(&id, "t1", w1 - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(store.get_source(&id).await.unwrap().unwrap().watermark, Some(w1));
    let lost = store
        .advance_watermark(&id, "t9", w1 + Duration::hours(1))
        .await
        .unwrap_err();
    assert!(matches!(lost, StoreError::LeaseLost { .. }), "{lost}");
    src.name = "renamed".into();
    store.put_source(&src).await.unwrap();
    let state = store.get_source(&id).await.unwrap().unwrap();
    assert_eq!((state.config.name.as_str(), state.watermark), ("renamed", Some(w1)));
    store.release_lease(&id, "t1").await.unwrap();
    assert!(store.get_source(&id).await.unwrap().unwrap().lease.is_none());
    // An expired lease is taken over, and the old holder can no longer move the watermark.
    assert!(matches!(
        store.acquire_lease(&id, "t4", now, now).await.unwrap(),
        LeaseOutcome::Acquired(_)
    ));
    assert!(matches!(
        store.acquire_lease(&id, "t5", now, later).await.unwrap(),
        LeaseOutcome::Acquired(_)
    ));
    assert!(matches!(
        store.advance_watermark(&id, "t4", later).await,
        Err(StoreError::LeaseLost { .. })
    ));
    // The holder extends its own lease.
    let LeaseOutcome::Acquired(state) = store
        .acquire_lease(&id, "t5", now, later + Duration::hours(1))
        .await
        .unwrap()
    else {
        panic!("the holder extends its lease")
    };
    assert_eq!(
        state.lease.unwrap().expires_at.timestamp(),
        (later + Duration::hours(1)).timestamp()
    );

    // Records: 60 records from 61 rows (a batch keeps the last of a key); then the
    // same records again are unchanged, a changed one is written.
    let mut rows: Vec<Record> = (0..60).map(|i| record(&format!("k{i}"), i)).collect();
    rows.push(record("k3", 333));
    let stats = store.write_records(&id, RecordBatch::new(rows), true).await.unwrap();
    assert_eq!((stats.written, stats.unchanged), (60, 0));
    assert_eq!(store.count_records(&id).await.unwrap(), 60);
    let again: Vec<Record> = (0..60)
        .map(|i| record(&format!("k{i}"), if i == 3 { 333 } else { i }))
        .collect();
    let stats = store.write_records(&id, RecordBatch::new(again), true).await.unwrap();
    assert_eq!((stats.written, stats.unchanged), (0, 60));
    let stats = store
        .write_records(&id, RecordBatch::new(vec![record("k5", 555)]), true)
        .await
        .unwrap();
    assert_eq!((stats.written, stats.unchanged), (1, 0));
    let k3 = store.get_record(&id, "k3").await.unwrap().unwrap();
    assert_eq!(k3.hash, record("k3", 333).hash_hex());
    assert_eq!(
        serde_json::to_value(&k3.fields).unwrap(),
        serde_json::json!({"reference": "k3", "amount": 333, "date": "2025-03-04T05:06:07Z", "note": null,
                           "tags": ["a", 2], "raw": "dead"})
    );
    assert!(store.get_record(&id, "nope").await.unwrap().is_none());

    // Members and teams: created, then updated in place.
    let m = |id: &str, name: &str, team: Option<&str>| Member {
        member_id: id.into(),
        name: name.into(),
        team: team.map(String::from),
    };
    store
        .upsert_members(&id, vec![m("1", "Ada", Some("North")), m("2", "Bo", None)])
        .await
        .unwrap();
    store
        .upsert_members(&id, vec![m("1", "Ada L.", Some("South"))])
        .await
        .unwrap();
    let (members, teams) = store.list_members(&id).await.unwrap();
    assert_eq!(members, vec![m("1", "Ada L.", Some("South")), m("2", "Bo", None)]);
    assert_eq!(teams, ["North", "South"]);

    // Runs: newest first, limited, every field kept.
    let ids = UuidIds;
    let mut first =
        Run::start(ids.sortable_id(now), &id, Trigger::Schedule, now).finish(RunStatus::Succeeded, None, now);
    first.rows_read = 5;
    let second = Run::start(ids.sortable_id(now), &id, Trigger::Manual, now).finish(
        RunStatus::Failed,
        Some("boom".into()),
        now + Duration::seconds(2),
    );
    store.put_run(&first).await.unwrap();
    store.put_run(&second).await.unwrap();
    assert_eq!(
        store.list_runs(&id, 10, None).await.unwrap(),
        vec![second.clone(), first]
    );
    assert_eq!(store.list_runs(&id, 1, None).await.unwrap(), vec![second.clone()]);

    backfill_contract(&*store, &id).await;
    delivery_contract(&*store, &id).await;
    creates_and_claims_contract(store.clone(), &src).await;
    connections_contract(&*store).await;
    // Backfill jobs share the Runs table but never show up as runs.
    let runs = store.list_runs(&id, 10, None).await.unwrap();
    assert_eq!(runs.len(), 2);

    // Pages of runs, one run by id, every source.
    assert_eq!(store.list_runs(&id, 10, Some(&runs[0].id)).await.unwrap(), runs[1..]);
    assert!(store.list_runs(&id, 10, Some(&runs[1].id)).await.unwrap().is_empty());
    assert_eq!(store.get_run(&id, &runs[1].id).await.unwrap().as_ref(), Some(&runs[1]));
    assert!(store.get_run(&id, "nope").await.unwrap().is_none());
    let listed = store.list_sources().await.unwrap();
    assert!(listed.iter().any(|s| s.config.id == id && s.watermark == Some(w1)));

    // Deleting a source keeps its records unless asked to purge them.
    let kept = source(
        &unique("c"),
        &Database::new(sluice_core::Engine::Sqlite).await,
        SALES_QUERY,
    );
    store.put_source(&kept).await.unwrap();
    store
        .write_records(&kept.id, RecordBatch::new(vec![record("a", 1)]), false)
        .await
        .unwrap();
    assert_eq!(store.delete_source(&kept.id, false).await.unwrap(), 0);
    assert_eq!(store.count_records(&kept.id).await.unwrap(), 1);
    assert!(store.get_source(&kept.id).await.unwrap().is_none());
    assert_eq!(store.delete_source(&id, true).await.unwrap(), 60);
    assert_eq!(store.count_records(&id).await.unwrap(), 0);
    assert!(store.get_source(&id).await.unwrap().is_none());
}

/// A create writes only where no source has the id, whoever else tries at once; a
/// member namespace has one holder at a time.
async fn creates_and_claims_contract(store: Arc<dyn Store>, existing: &sluice_core::SourceConfig) {
    let mut other = existing.clone();
    other.name = "Not written".into();
    assert!(!store.create_source(&other).await.unwrap());
    assert_eq!(store.get_source(&existing.id).await.unwrap().unwrap().config, *existing);

    // Eight creates of one new id at once: one wins, and the stored config is its own.
    let id = unique("race");
    let creates = (0..8).map(|i| {
        let store = store.clone();
        let mut config = existing.clone();
        config.id = id.clone();
        config.name = format!("create {i}");
        tokio::spawn(async move { (store.create_source(&config).await.unwrap(), config) })
    });
    let outcomes = futures::future::join_all(creates).await;
    let winners: Vec<_> = outcomes
        .into_iter()
        .map(Result::unwrap)
        .filter(|(won, _)| *won)
        .collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(store.get_source(&id).await.unwrap().unwrap().config, winners[0].1);
    store.delete_source(&id, false).await.unwrap();

    // Claims: the holder's again is fine, another's is refused, only the holder frees it.
    let namespace = unique("ns");
    assert_eq!(store.claim_member_namespace(&namespace, "a").await.unwrap(), None);
    assert_eq!(store.claim_member_namespace(&namespace, "a").await.unwrap(), None);
    assert_eq!(
        store.claim_member_namespace(&namespace, "b").await.unwrap().as_deref(),
        Some("a")
    );
    store.release_member_namespace(&namespace, "b").await.unwrap();
    assert_eq!(
        store.claim_member_namespace(&namespace, "b").await.unwrap().as_deref(),
        Some("a")
    );
    store.release_member_namespace(&namespace, "a").await.unwrap();
    assert_eq!(store.claim_member_namespace(&namespace, "b").await.unwrap(), None);
    // Six claims at once: one holder, named to every other.
    let namespace = unique("ns");
    let claims = (0..6).map(|i| {
        let (store, namespace) = (store.clone(), namespace.clone());
        tokio::spawn(async move {
            (
                i,
                store
                    .claim_member_namespace(&namespace, &format!("s{i}"))
                    .await
                    .unwrap(),
            )
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let holders: Vec<_> = outcomes
        .iter()
        .filter(|(_, h)| h.is_none())
        .map(|(i, _)| format!("s{i}"))
        .collect();
    assert_eq!(holders.len(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|(_, h)| h.is_none() || h.as_ref() == Some(&holders[0]))
    );
}

/// Connections: created where absent, replaced where present, listed by id, deleted.
async fn connections_contract(store: &dyn Store) {
    use sluice_core::{Connection, Engine};
    let id = unique("conn");
    let mut connection = Connection {
        id: id.clone(),
        name: "Shop".into(),
        description: None,
        engine: Engine::Postgres,
    };
    assert!(store.get_connection(&id).await.unwrap().is_none());
    assert!(store.create_connection(&connection).await.unwrap());
    let mut other = connection.clone();
    other.name = "Not written".into();
    assert!(!store.create_connection(&other).await.unwrap());
    assert_eq!(store.get_connection(&id).await.unwrap().as_ref(), Some(&connection));
    connection.description = Some("The replica, with a ☃ and \"quotes\"".into());
    assert!(store.update_connection(&connection).await.unwrap());
    assert_eq!(store.get_connection(&id).await.unwrap().as_ref(), Some(&connection));
    let absent = Connection {
        id: unique("conn"),
        ..connection.clone()
    };
    assert!(!store.update_connection(&absent).await.unwrap());
    assert!(store.get_connection(&absent.id).await.unwrap().is_none());
    let second = Connection {
        id: format!("{id}-2"),
        ..connection.clone()
    };
    assert!(store.create_connection(&second).await.unwrap());
    let listed: Vec<_> = store
        .list_connections()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.id.starts_with(&id))
        .collect();
    assert_eq!(listed, vec![connection.clone(), second.clone()]);
    // A connection is not a source, and a source's id is not a connection's.
    assert!(store.get_source(&id).await.unwrap().is_none());
    assert!(store.list_sources().await.unwrap().iter().all(|s| s.config.id != id));
    store.delete_connection(&id).await.unwrap();
    store.delete_connection(&id).await.unwrap();
    assert!(store.get_connection(&id).await.unwrap().is_none());
    assert_eq!(store.get_connection(&second.id).await.unwrap(), Some(second));
}

/// Delivery states: one per record, listed by key and status, the records whose
/// current version has none (or a waiting one) are the undelivered ones, and the
/// parked calls due by a time are found alone, the earliest first.
async fn delivery_contract(store: &dyn Store, id: &str) {
    use sluice_core::{DeliveryState, DeliveryStatus};
    let all = store.undelivered(id, None, 1_000).await.unwrap();
    assert_eq!(all.len(), 60, "nothing delivered yet");
    assert_eq!(all[0].key, "k0");
    let state = |key: &str, hash: &str, status| DeliveryState {
        record_key: key.into(),
        hash: hash.into(),
        message_id: Some(format!("m-{key}")),
        status,
        attempts: 1,
        updated_at: Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap(),
        delivered_at: None,
        last_error: (status == DeliveryStatus::Failed).then(|| "HTTP 503".to_string()),
        next_attempt_at: None,
        parked: 0,
    };
    let hash_of = |key: &str| all.iter().find(|r| r.key == key).unwrap().hash.clone();
    let mut states: Vec<_> = (0..50)
        .map(|i| state(&format!("k{i}"), &hash_of(&format!("k{i}")), DeliveryStatus::Delivered))
        .collect();
    states.push(state("k50", &hash_of("k50"), DeliveryStatus::Failed));
    // A state of an older version of k51: its current version is still undelivered.
    states.push(state("k51", "an-older-hash", DeliveryStatus::Delivered));
    store.put_deliveries(id, &states).await.unwrap();
    let left: Vec<String> = store
        .undelivered(id, None, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(left, ["k51", "k52", "k53", "k54", "k55", "k56", "k57", "k58", "k59"]);
    assert_eq!(store.undelivered(id, None, 2).await.unwrap().len(), 2);
    let later: Vec<String> = store
        .undelivered(id, Some("k55"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(later, ["k56", "k57", "k58", "k59"]);
    let failed = store
        .list_deliveries(id, Some(DeliveryStatus::Failed), 10, None)
        .await
        .unwrap();
    assert_eq!(failed, vec![states[50].clone()]);
    let page = store.list_deliveries(id, None, 20, None).await.unwrap();
    assert_eq!(page.len(), 20);
    let next = store
        .list_deliveries(id, None, 1_000, Some(&page[19].record_key))
        .await
        .unwrap();
    assert_eq!(page.len() + next.len(), 52);
    assert!(next.iter().all(|d| d.record_key > page[19].record_key));
    // A new state replaces the record's earlier one.
    store
        .put_deliveries(id, &[state("k50", &hash_of("k50"), DeliveryStatus::Delivered)])
        .await
        .unwrap();
    assert!(
        store
            .list_deliveries(id, Some(DeliveryStatus::Failed), 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    // Parked calls: k53 due first, then k52; k54 later.
    let t = |minute: u32| Utc.with_ymd_and_hms(2026, 3, 4, 6, minute, 0).unwrap();
    let waiting = |key: &str, at| DeliveryState {
        next_attempt_at: Some(at),
        parked: 1,
        last_error: Some("HTTP 401".into()),
        ..state(key, &hash_of(key), DeliveryStatus::Waiting)
    };
    let parked = [waiting("k52", t(2)), waiting("k53", t(1)), waiting("k54", t(9))];
    store.put_deliveries(id, &parked).await.unwrap();
    let due = store.parked(id, t(5), 10).await.unwrap();
    assert_eq!(due, vec![parked[1].clone(), parked[0].clone()]);
    assert_eq!(store.parked(id, t(5), 1).await.unwrap(), vec![parked[1].clone()]);
    assert!(store.parked(id, t(0), 10).await.unwrap().is_empty());
    assert!(store.parked("another-source", t(9), 10).await.unwrap().is_empty());
    let undelivered = store.undelivered(id, Some("k51"), 3).await.unwrap();
    assert_eq!(
        undelivered.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["k52", "k53", "k54"],
        "waiting calls are still undelivered"
    );
    // Delivered: no longer parked.
    store
        .put_deliveries(id, &[state("k53", &hash_of("k53"), DeliveryStatus::Delivered)])
        .await
        .unwrap();
    assert_eq!(
        store.parked(id, t(9), 10).await.unwrap(),
        vec![parked[0].clone(), parked[2].clone()]
    );
}

/// Backfill jobs: one active per source, optimistic saves, cancel kept apart, the
/// source's slot freed with the job's last save.
async fn backfill_contract(store: &dyn Store, id: &str) {
    let request = BackfillRequest {
        start: Some("2025-01-01".into()),
        end: Some("2025-01-04".into()),
        chunk: None,
    };
    let (ids, now) = (UuidIds, Utc::now());
    let mut job = Backfill::plan(ids.sortable_id(now), id, &request, now, true).unwrap();
    let other = Backfill::plan(ids.sortable_id(now), id, &request, now, true).unwrap();
    let orphan = Backfill::plan(ids.sortable_id(now), "no-such-source", &request, now, true).unwrap();
    assert_eq!(
        store.create_backfill(&orphan).await.unwrap(),
        BackfillCreated::SourceNotFound
    );
    assert_eq!(store.create_backfill(&job).await.unwrap(), BackfillCreated::Created);
    assert_eq!(
        store.create_backfill(&other).await.unwrap(),
        BackfillCreated::Conflict {
            existing: job.id.clone()
        }
    );
    assert_eq!(
        store.get_source(id).await.unwrap().unwrap().active_backfill,
        Some(job.id.clone())
    );
    assert!(
        store
            .active_backfills()
            .await
            .unwrap()
            .contains(&(id.to_string(), job.id.clone()))
    );
    assert_eq!(store.get_backfill(id, &job.id).await.unwrap().unwrap(), job);
    assert!(store.get_backfill(id, &other.id).await.unwrap().is_none());

    // Saves bump the version; a stale copy is refused.
    let mut stale = job.clone();
    job.start_chunk(0, Utc::now());
    assert_eq!(store.save_backfill(&mut job).await.unwrap(), SaveOutcome::Saved);
    assert_eq!(job.version, 1);
    stale.start_chunk(1, Utc::now());
    assert_eq!(store.save_backfill(&mut stale).await.unwrap(), SaveOutcome::Stale);
    assert_eq!(store.get_backfill(id, &job.id).await.unwrap().unwrap(), job);

    // A cancel request survives the worker's next save.
    let at = Utc.with_ymd_and_hms(2026, 2, 3, 4, 5, 6).unwrap();
    assert!(store.request_backfill_cancel(id, &job.id, at).await.unwrap());
    assert!(!store.request_backfill_cancel(id, "nope", at).await.unwrap());
    job.chunks[0].status = sluice_core::ChunkStatus::Done;
    assert_eq!(store.save_backfill(&mut job).await.unwrap(), SaveOutcome::Saved);
    let stored = store.get_backfill(id, &job.id).await.unwrap().unwrap();
    assert_eq!(stored.cancel_requested_at, Some(at));

    // The last save frees the slot; a new job can start.
    let mut job = stored;
    job.finish(Utc::now());
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(store.save_backfill(&mut job).await.unwrap(), SaveOutcome::Saved);
    assert_eq!(store.get_source(id).await.unwrap().unwrap().active_backfill, None);
    assert!(!store.active_backfills().await.unwrap().iter().any(|(s, _)| s == id));
    assert_eq!(store.create_backfill(&other).await.unwrap(), BackfillCreated::Created);
    let listed: Vec<String> = store
        .list_backfills(id, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![other.id.clone(), job.id.clone()]);
}

#[tokio::test]
async fn dynamodb_store_keeps_the_contract() {
    contract(store(StoreKind::Dynamo).await).await;
}

#[tokio::test]
async fn embedded_store_keeps_the_contract() {
    contract(store(StoreKind::Embedded).await).await;
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(Arc::new(sluice_core::testing::MemoryStore::new())).await;
}

#[tokio::test]
async fn an_embedded_store_from_before_host_keys_gains_the_column_and_keeps_its_sources() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("old")));
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE sources (id TEXT PRIMARY KEY, config TEXT NOT NULL, watermark_us INTEGER,
               lease_token TEXT, lease_expires_us INTEGER, effective_minutes INTEGER NOT NULL DEFAULT 0,
               fast_runs INTEGER NOT NULL DEFAULT 0, narrowed_window_s INTEGER)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let db = Database::new(sluice_core::Engine::Sqlite).await;
        let src = source("kept", &db, SALES_QUERY);
        sqlx::query("INSERT INTO sources (id, config, watermark_us) VALUES ('kept', ?, 1000000)")
            .bind(serde_json::to_string(&src).unwrap())
            .execute(&pool)
            .await
            .unwrap();
    }
    let store = EmbeddedStore::open(&path).await.unwrap();
    let state = store.get_source("kept").await.unwrap().unwrap();
    assert_eq!(
        (state.watermark.map(|w| w.timestamp()), state.ssh_host_key),
        (Some(1), None)
    );
    store.record_ssh_host_key("kept", "ssh-ed25519 AAAA").await.unwrap();
    drop(store);
    let reopened = EmbeddedStore::open(&path).await.unwrap();
    let state = reopened.get_source("kept").await.unwrap().unwrap();
    assert_eq!(state.ssh_host_key.as_deref(), Some("ssh-ed25519 AAAA"));
}
