//! The management API through its real handler, fed API Gateway fixtures, against moto
//! (Secrets Manager, EventBridge Scheduler, DynamoDB) and PostgreSQL; the scheduled
//! invocation uses the input of the schedule the API created.

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use serde_json::{Value as Json, json};
use sluice_api::handle;
use sluice_aws::DynamoStore;
use sluice_core::{Engine, RunStatus};
use sluice_lambda::{ApiConfig, deliverer, source_admin, sync_service};
use sluice_tests::*;

/// Loopback PostgreSQL trusts the login, so this password is only a marker to search for.
const PASSWORD: &str = "pw-api-never-in-a-response-41c9";

struct Api {
    api: sluice_api::Api,
    config: ApiConfig,
    store: DynamoStore,
    scheduler: aws_sdk_scheduler::Client,
    secrets: aws_sdk_secretsmanager::Client,
    /// Every response body, to search for the password at the end.
    seen: std::sync::Mutex<Vec<String>>,
}

impl Api {
    async fn new() -> Self {
        let sdk = sdk().await;
        let dead_letters = "arn:aws:sqs:us-east-1:123456789012:sluice-failed-invocations";
        let (config, store) = api_config(Some(dead_letters.into())).await;
        let scheduler = aws_sdk_scheduler::Client::new(&sdk);
        Api {
            api: sluice_api::Api {
                admin: source_admin(&sdk, &config),
                deliverer: deliverer(&sdk, &config.function).unwrap(),
            },
            config,
            store,
            scheduler,
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            seen: Default::default(),
        }
    }

    async fn call(&self, event: Json) -> (i64, Json) {
        let request: ApiGatewayProxyRequest = serde_json::from_value(event).unwrap();
        let out = handle(&self.api, &request).await;
        let body = match out.body {
            Some(aws_lambda_events::encodings::Body::Text(t)) => t,
            other => panic!("a text body: {other:?}"),
        };
        self.seen.lock().unwrap().push(body.clone());
        (out.status_code, serde_json::from_str(&body).unwrap())
    }

    async fn schedule(&self, id: &str) -> Option<aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput> {
        match self
            .scheduler
            .get_schedule()
            .name(id)
            .group_name(&self.config.schedules.group)
            .send()
            .await
        {
            Ok(s) => Some(s),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                None
            }
            Err(e) => panic!("{e:?}"),
        }
    }

    fn assert_no_secret_was_shown(&self) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty());
        for body in seen.iter() {
            assert!(!body.contains(PASSWORD), "a response holds the password: {body}");
        }
    }
}

fn new_source(id: &str, db: &Database) -> Json {
    let mut connection = db.secret.clone();
    connection["password"] = PASSWORD.into();
    json!({
        "id": id,
        "name": "Sales",
        "engine": "postgres",
        "sync_type": "registration",
        "query": SALES_QUERY,
        "frequency_minutes": 5,
        "connection": connection,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_test_schedule_sync_read_patch_and_delete_a_source() {
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(120).await;
    let id = unique("api");

    // Create: the source, its secret and its schedule.
    let (status, created) = api
        .call(api_request("sources-create.json", &[], &[], Some(new_source(&id, &db))))
        .await;
    assert_eq!(status, 201, "{created}");
    let secret_id = format!("{}{id}", api.config.secrets_prefix);
    assert_eq!(created["secret_id"], json!(secret_id));
    assert_eq!(
        (created["watermark"].clone(), created["running"].clone()),
        (Json::Null, json!(false))
    );
    let stored = api
        .secrets
        .get_secret_value()
        .secret_id(&secret_id)
        .send()
        .await
        .unwrap();
    assert!(stored.secret_string().unwrap().contains(PASSWORD));
    let schedule = api.schedule(&id).await.expect("the schedule exists");
    assert_eq!(schedule.schedule_expression(), Some("rate(5 minutes)"));
    assert_eq!(schedule.state().map(|s| s.as_str()), Some("ENABLED"));
    let target = schedule.target().unwrap();
    assert_eq!(target.arn(), api.config.schedules.function_arn);
    assert_eq!(target.role_arn(), api.config.schedules.role_arn);
    assert_eq!(
        target.dead_letter_config().and_then(|d| d.arn()),
        api.config.schedules.dead_letter_arn.as_deref()
    );
    let retry = target.retry_policy().unwrap();
    assert_eq!(
        (retry.maximum_retry_attempts(), retry.maximum_event_age_in_seconds()),
        (Some(2), Some(300))
    );
    let input: Json = serde_json::from_str(target.input().unwrap()).unwrap();
    assert_eq!(input, json!({ "source_id": id }));

    // The test query: the records the next run would write; nothing written.
    let (status, preview) = api
        .call(api_request("sources-test-query.json", &[("id", &id)], &[], None))
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        (preview["row_count"].as_u64(), preview["errors"].clone()),
        (Some(120), json!([]))
    );
    assert_eq!(preview["records"].as_array().unwrap().len(), 20);
    assert_eq!(preview["binds"][0], "1970-01-01T00:00:00Z");
    assert_eq!(api.store.count_records(&id).await.unwrap(), 0);
    // An unsaved config with its own connection, and a given window.
    let mut unsaved = new_source("draft", &db);
    let connection = unsaved.as_object_mut().unwrap().remove("connection").unwrap();
    let body = json!({ "source": unsaved, "connection": connection,
                       "window": { "last_update_time": "2000-01-01", "upper_date_limit": "2000-01-02" } });
    let (status, preview) = api
        .call(api_request(
            "sources-test-query.json",
            &[("id", "draft")],
            &[],
            Some(body),
        ))
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["row_count"], 0);
    assert_eq!(preview["window"]["last_update_time"], "2000-01-01T00:00:00Z");
    assert_eq!(preview["columns"].as_array().unwrap().len(), 6);

    // The scheduled invocation, with the schedule's own input: rows synced, run logged.
    let sync = sync_service(&sdk().await, &api.config.function);
    let event: sluice_sync::SyncEvent = serde_json::from_value(input).unwrap();
    let run = sluice_sync::handle(&sync, lambda_event(event)).await.unwrap();
    assert_eq!((run.status, run.rows_written), (RunStatus::Succeeded, 120));
    for _ in 0..2 {
        sync.run(&id, sluice_core::Trigger::Manual, None).await.unwrap();
    }
    let (status, page) = api
        .call(api_request("runs-list.json", &[("id", &id)], &[("limit", "2")], None))
        .await;
    assert_eq!(status, 200, "{page}");
    let runs = page["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let next = page["next"].as_str().unwrap();
    assert_eq!(runs[1]["id"], json!(next));
    let (_, rest) = api
        .call(api_request(
            "runs-list.json",
            &[("id", &id)],
            &[("limit", "2"), ("before", next)],
            None,
        ))
        .await;
    assert_eq!(rest["runs"].as_array().unwrap().len(), 1);
    assert_eq!(rest["runs"][0]["id"], json!(run.id));
    assert_eq!(rest["next"], Json::Null);
    let (status, one) = api
        .call(api_request(
            "runs-get.json",
            &[("id", &id), ("run", &run.id)],
            &[],
            None,
        ))
        .await;
    assert_eq!((status, one["rows_written"].as_u64()), (200, Some(120)));

    // Read back, list.
    let (status, got) = api
        .call(api_request("sources-get.json", &[("id", &id)], &[], None))
        .await;
    assert_eq!(status, 200);
    let watermark: chrono::DateTime<chrono::Utc> = serde_json::from_value(got["watermark"].clone()).unwrap();
    assert_eq!(
        Some(watermark),
        api.store.get_source(&id).await.unwrap().unwrap().watermark
    );
    let (_, list) = api.call(api_request("sources-list.json", &[], &[], None)).await;
    assert!(list["sources"].as_array().unwrap().iter().any(|s| s["id"] == json!(id)));

    // Patch: a new frequency, disabled, a start date; the schedule follows each.
    let watermark = api.store.get_source(&id).await.unwrap().unwrap().watermark;
    let (status, patched) = api
        .call(api_request(
            "sources-patch.json",
            &[("id", &id)],
            &[],
            Some(json!({ "frequency_minutes": 15 })),
        ))
        .await;
    assert_eq!(
        (status, patched["frequency_minutes"].as_u64()),
        (200, Some(15)),
        "{patched}"
    );
    assert_eq!(
        api.schedule(&id).await.unwrap().schedule_expression(),
        Some("rate(15 minutes)")
    );
    let start_at = "2031-01-01T00:00:00Z";
    let (status, _) = api
        .call(api_request(
            "sources-patch.json",
            &[("id", &id)],
            &[],
            Some(json!({ "enabled": false, "start_at": start_at })),
        ))
        .await;
    assert_eq!(status, 200);
    let schedule = api.schedule(&id).await.unwrap();
    assert_eq!(schedule.state().map(|s| s.as_str()), Some("DISABLED"));
    assert_eq!(schedule.start_date().map(|d| d.secs()), Some(1_924_992_000));
    assert_eq!(
        api.store.get_source(&id).await.unwrap().unwrap().watermark,
        watermark,
        "the watermark stays"
    );
    // A disabled source's run is skipped.
    let skipped = sync.run(&id, sluice_core::Trigger::Schedule, None).await.unwrap();
    assert_eq!(skipped.status, RunStatus::Skipped);

    // Delete: schedule and secret removed, records kept; with purge, records removed too.
    let (status, deleted) = api
        .call(api_request("sources-delete.json", &[("id", &id)], &[], None))
        .await;
    assert_eq!(
        (status, deleted["records_purged"].as_u64()),
        (200, Some(0)),
        "{deleted}"
    );
    assert!(api.schedule(&id).await.is_none());
    assert!(
        api.secrets
            .get_secret_value()
            .secret_id(&secret_id)
            .send()
            .await
            .is_err()
    );
    assert_eq!(api.store.count_records(&id).await.unwrap(), 120);
    let (status, _) = api
        .call(api_request("sources-get.json", &[("id", &id)], &[], None))
        .await;
    assert_eq!(status, 404);
    let other = unique("api");
    let (status, _) = api
        .call(api_request(
            "sources-create.json",
            &[],
            &[],
            Some(new_source(&other, &db)),
        ))
        .await;
    assert_eq!(status, 201);
    sync.run(&other, sluice_core::Trigger::Manual, None).await.unwrap();
    let (status, deleted) = api
        .call(api_request(
            "sources-delete.json",
            &[("id", &other)],
            &[("purge", "true")],
            None,
        ))
        .await;
    assert_eq!((status, deleted["records_purged"].as_u64()), (200, Some(120)));
    assert_eq!(api.store.count_records(&other).await.unwrap(), 0);

    api.assert_no_secret_was_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_unknown_ids_and_conflicts_are_named() {
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(3).await;
    let id = unique("api");
    let (status, _) = api
        .call(api_request("sources-create.json", &[], &[], Some(new_source(&id, &db))))
        .await;
    assert_eq!(status, 201);

    let with = |change: &dyn Fn(&mut Json)| {
        let mut body = new_source(&unique("bad"), &db);
        change(&mut body);
        body
    };
    let cases: Vec<(Json, &str, &str)> = vec![
        (
            with(&|b| drop(b.as_object_mut().unwrap().remove("query"))),
            "query",
            "missing field",
        ),
        (with(&|b| b["colour"] = json!("blue")), "colour", "unknown field"),
        (
            with(&|b| b["frequency_minutes"] = json!(1441)),
            "frequency_minutes",
            "from 1 (every minute) to 1440 (once a day)",
        ),
        (with(&|b| b["engine"] = json!("db2")), "engine", "unknown variant `db2`"),
        (
            with(&|b| b["query"] = json!("SELECT * FROM t WHERE d > {{ since }}")),
            "query",
            "since",
        ),
        (
            with(&|b| b["query"] = json!("SELECT * FROM t WHERE d > '{{ last_update_time }}'")),
            "query",
            "quot",
        ),
        (with(&|b| b["id"] = json!("has space")), "id", "letters, digits"),
        (
            with(&|b| drop(b["connection"].as_object_mut().unwrap().remove("database"))),
            "connection",
            "database",
        ),
        (
            with(&|b| b["connection"]["engine"] = json!("mysql")),
            "connection.engine",
            "postgres",
        ),
        (with(&|b| b["secret_id"] = json!("elsewhere")), "secret_id", "not both"),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("connection");
                b["secret_id"] = json!("no/such/secret");
            }),
            "secret_id",
            "not this source's secret",
        ),
    ];
    for (body, field, reason) in cases {
        let (status, answer) = api
            .call(api_request("sources-create.json", &[], &[], Some(body.clone())))
            .await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{field}: {message}");
    }
    let mut event = api_request("sources-create.json", &[], &[], None);
    event["body"] = json!("{\"id\": ");
    let (status, answer) = api.call(event).await;
    assert_eq!((status, answer["error"]["field"].as_str()), (400, Some("body")));
    let (status, _) = api
        .call(api_request("sources-create.json", &[], &[], Some(json!([1]))))
        .await;
    assert_eq!(status, 400);

    // Patches that make no sense, and query parameters out of range.
    let patch = |body: Json| api_request("sources-patch.json", &[("id", &id)], &[], Some(body));
    let (status, answer) = api.call(patch(json!({ "id": "other" }))).await;
    assert_eq!((status, answer["error"]["field"].as_str()), (400, Some("id")));
    let (status, answer) = api.call(patch(json!({ "lookback_seconds": "ten" }))).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("lookback_seconds")),
        "{answer}"
    );
    let (status, answer) = api
        .call(api_request("runs-list.json", &[("id", &id)], &[("limit", "0")], None))
        .await;
    assert_eq!((status, answer["error"]["field"].as_str()), (400, Some("limit")));
    // Found by the fuzz test: an empty cursor reached DynamoDB as an empty key (500).
    let (status, answer) = api
        .call(api_request("runs-list.json", &[("id", &id)], &[("before", "")], None))
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("before")),
        "{answer}"
    );
    // And a key named "" was answered with the field "".
    let (status, answer) = api.call(patch(json!({ "": 1 }))).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("body")),
        "{answer}"
    );
    let (status, answer) = api
        .call(api_request(
            "sources-delete.json",
            &[("id", &id)],
            &[("purge", "maybe")],
            None,
        ))
        .await;
    assert_eq!((status, answer["error"]["field"].as_str()), (400, Some("purge")));
    let body = json!({ "window": { "last_update_time": "2001-01-02", "upper_date_limit": "2001-01-01" } });
    let (status, answer) = api
        .call(api_request("sources-test-query.json", &[("id", &id)], &[], Some(body)))
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("window.upper_date_limit"))
    );

    // Unknown ids: 404 everywhere; a taken id: 409; a wrong method: 405.
    for fixture in [
        "sources-get.json",
        "sources-patch.json",
        "sources-delete.json",
        "sources-test-query.json",
        "runs-list.json",
    ] {
        let body = (fixture == "sources-patch.json").then(|| json!({ "name": "x" }));
        let (status, answer) = api
            .call(api_request(fixture, &[("id", "no-such-source")], &[], body))
            .await;
        assert_eq!(status, 404, "{fixture}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("no-such-source"));
    }
    let (status, _) = api
        .call(api_request(
            "runs-get.json",
            &[("id", &id), ("run", "no-such-run")],
            &[],
            None,
        ))
        .await;
    assert_eq!(status, 404);
    // The same create sent again (its answer lost, a client retrying) finishes it; another
    // config under the id, or the same once the source has run, is a conflict.
    let create = |body: Json| api_request("sources-create.json", &[], &[], Some(body));
    let (status, answer) = api.call(create(new_source(&id, &db))).await;
    assert_eq!((status, &answer["id"]), (201, &json!(id)), "{answer}");
    let mut other = new_source(&id, &db);
    other["frequency_minutes"] = json!(10);
    let (status, answer) = api.call(create(other)).await;
    assert_eq!(status, 409, "{answer}");
    let now = chrono::Utc::now();
    let taken = api
        .store
        .acquire_lease(&id, "t", now, now + chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert!(matches!(taken, sluice_core::LeaseOutcome::Acquired(_)));
    api.store.advance_watermark(&id, "t", now).await.unwrap();
    api.store.release_lease(&id, "t").await.unwrap();
    let (status, answer) = api.call(create(new_source(&id, &db))).await;
    assert_eq!(status, 409, "{answer}");
    assert!(api.store.get_source(&id).await.unwrap().unwrap().watermark.is_some());
    let mut event = api_request("sources-get.json", &[("id", &id)], &[], None);
    event["httpMethod"] = json!("PUT");
    let (status, _) = api.call(event).await;
    assert_eq!(status, 405);

    // Nothing bad was stored: only the one source, its config unchanged.
    let sources = api.store.list_sources().await.unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].config.frequency_minutes, 5);
    api.assert_no_secret_was_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_import_slows_the_schedule_and_fast_ones_bring_it_back() {
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(10).await;
    let id = unique("slow");
    let mut body = new_source(&id, &db);
    body["frequency_minutes"] = json!(1);
    // The first import (from the epoch) takes just over 30 s; later ones are instant.
    body["query"] = json!(SALES_QUERY.replace(
        "FROM sales\nWHERE",
        "FROM sales\nWHERE (id <> 3 OR {{ last_update_time }} > timestamptz '2000-01-01' OR pg_sleep(30.5)::text IS NOT NULL) AND"
    ));
    let (status, created) = api.call(api_request("sources-create.json", &[], &[], Some(body))).await;
    assert_eq!(status, 201, "{created}");
    let rate = |s: Option<aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput>| {
        s.unwrap().schedule_expression().unwrap().to_string()
    };
    assert_eq!(rate(api.schedule(&id).await), "rate(1 minute)");

    // A configured 1-minute source whose import takes 30-120 s runs every 5 minutes.
    let sync = sync_service(&sdk().await, &api.config.function);
    let input = json!({ "source_id": id });
    let scheduled = || sluice_sync::handle(&sync, lambda_event(serde_json::from_value(input.clone()).unwrap()));
    let run = scheduled().await.unwrap();
    assert!(run.duration_ms >= 30_000, "{}", run.duration_ms);
    assert_eq!(rate(api.schedule(&id).await), "rate(5 minutes)");
    let (_, got) = api
        .call(api_request("sources-get.json", &[("id", &id)], &[], None))
        .await;
    assert_eq!(
        (
            got["frequency_minutes"].as_u64(),
            got["effective_frequency_minutes"].as_u64()
        ),
        (Some(1), Some(5))
    );
    // The rest of the schedule is as the API made it.
    let schedule = api.schedule(&id).await.unwrap();
    assert_eq!(schedule.target().unwrap().arn(), api.config.schedules.function_arn);
    assert_eq!(schedule.state().map(|s| s.as_str()), Some("ENABLED"));

    // Three fast runs in a row bring it back; two are not enough.
    for _ in 0..2 {
        scheduled().await.unwrap();
        assert_eq!(rate(api.schedule(&id).await), "rate(5 minutes)");
    }
    scheduled().await.unwrap();
    assert_eq!(rate(api.schedule(&id).await), "rate(1 minute)");
    let state = api.store.get_source(&id).await.unwrap().unwrap();
    assert_eq!(state.cadence, sluice_core::Cadence::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_server_source_is_created_tested_and_synced_through_the_api() {
    let api = Api::new().await;
    let db = Database::new(Engine::Sqlserver).await;
    db.create_sales(50).await;
    let id = unique("mssql");
    let body = json!({
        "id": id, "name": "Sales (SQL Server)", "engine": "sqlserver", "sync_type": "registration",
        "query": SALES_QUERY, "connection": db.secret,
    });
    let (status, created) = api.call(api_request("sources-create.json", &[], &[], Some(body))).await;
    assert_eq!(status, 201, "{created}");
    let (status, preview) = api
        .call(api_request("sources-test-query.json", &[("id", &id)], &[], None))
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        (preview["row_count"].as_u64(), preview["errors"].clone()),
        (Some(50), json!([]))
    );
    assert!(
        preview["sql"]
            .as_str()
            .unwrap()
            .contains("updated_at >= @P1 AND updated_at < @P2"),
        "{preview}"
    );
    assert_eq!(preview["records"][0]["fields"]["team_name"], "team 1");
    let sync = sync_service(&sdk().await, &api.config.function);
    let run = sync.run(&id, sluice_core::Trigger::Manual, None).await.unwrap();
    assert_eq!(
        (run.status, run.rows_written),
        (RunStatus::Succeeded, 50),
        "{:?}",
        run.message
    );
    for body in api.seen.lock().unwrap().iter() {
        assert!(!body.contains(sluice_tests::sqlserver::PASSWORD), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_keeps_its_write_key_secret_and_failed_deliveries_are_listed_and_replayed() {
    use sluice_tests::receiver::{Fault, Receiver};
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.exec(
        "CREATE TABLE people (id int, user_id text, plan text, updated_at timestamptz DEFAULT now());
         INSERT INTO people SELECT g, 'u' || g, 'free' FROM generate_series(1, 12) g",
    )
    .await;
    let write_key = format!("wk-{}", unique("api"));
    let receiver = Receiver::start(&write_key).await;
    let id = unique("cio");
    let mut body = new_source(&id, &db);
    body["sync_type"] = "identify".into();
    body["query"] = "SELECT user_id, plan FROM people WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}".into();
    body["destination"] = json!({"kind": "http", "base_url": receiver.base_url(), "write_key": write_key});
    let (status, created) = api
        .call(api_request("sources-create.json", &[], &[], Some(body.clone())))
        .await;
    assert_eq!(status, 201, "{created}");
    let key_secret = format!("{}{id}/write-key", api.config.secrets_prefix);
    assert_eq!(
        created["destination"],
        json!({"kind": "http", "base_url": receiver.base_url(), "secret_id": key_secret})
    );
    let stored = api
        .secrets
        .get_secret_value()
        .secret_id(&key_secret)
        .send()
        .await
        .unwrap();
    assert!(stored.secret_string().unwrap().contains(&write_key));

    // A registration source cannot have a destination; a write key needs one.
    let mut bad = body.clone();
    bad["id"] = unique("bad").into();
    bad["sync_type"] = "registration".into();
    let (status, answer) = api.call(api_request("sources-create.json", &[], &[], Some(bad))).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("destination")),
        "{answer}"
    );

    // The destination is down for the first delivery: every call is parked (waiting),
    // and is listed.
    let sync = sync_service(&sdk().await, &api.config.function);
    sync.run(&id, sluice_core::Trigger::Manual, None).await.unwrap();
    let config = api.api.admin.get(&id).await.unwrap().config;
    receiver.inject((0..5).map(|_| Fault::Status(503, None)));
    let report = api
        .api
        .deliverer
        .deliver_undelivered(&config, 100, &sluice_core::Budget::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.undelivered.len(), 12);
    let (status, page) = api
        .call(api_request(
            "deliveries-list.json",
            &[("id", &id)],
            &[("status", "waiting")],
            None,
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 12);
    assert_eq!(page["deliveries"][0]["status"], "waiting");
    assert!(
        page["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("HTTP 503"),
        "{page}"
    );

    // A replay sends them: none is left failed.
    let (status, replayed) = api
        .call(api_request("deliveries-replay.json", &[("id", &id)], &[], None))
        .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(
        (
            replayed["report"]["delivered"].as_u64(),
            replayed["failed_left"].as_bool()
        ),
        (Some(12), Some(false))
    );
    assert_eq!(receiver.by_message_id().len(), 12);
    let (_, page) = api
        .call(api_request(
            "deliveries-list.json",
            &[("id", &id)],
            &[("status", "failed")],
            None,
        ))
        .await;
    assert_eq!(page["deliveries"], json!([]));
    let (status, page) = api
        .call(api_request(
            "deliveries-list.json",
            &[("id", &id)],
            &[("status", "lost")],
            None,
        ))
        .await;
    assert_eq!((status, page["error"]["field"].as_str()), (400, Some("status")));
    for seen in api.seen.lock().unwrap().iter() {
        assert!(!seen.contains(&write_key), "a response holds the write key: {seen}");
    }
    // Deleting the source deletes the secrets Sluice made for it.
    let (status, _) = api
        .call(api_request("sources-delete.json", &[("id", &id)], &[], None))
        .await;
    assert_eq!(status, 200);
    assert!(
        api.secrets
            .get_secret_value()
            .secret_id(&key_secret)
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_frequency_is_the_schedules_rate_and_every_minute_is_the_default() {
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(3).await;
    let id = unique("freq");
    let mut body = new_source(&id, &db);
    body.as_object_mut().unwrap().remove("frequency_minutes");
    body["description"] = json!("Sales of the Oslo shop, for the leaderboard");
    let (status, created) = api.call(api_request("sources-create.json", &[], &[], Some(body))).await;
    assert_eq!(
        (status, created["frequency_minutes"].as_u64()),
        (201, Some(1)),
        "{created}"
    );
    assert_eq!(created["description"], "Sales of the Oslo shop, for the leaderboard");
    assert_eq!(
        api.schedule(&id).await.unwrap().schedule_expression(),
        Some("rate(1 minute)")
    );
    let patch = |body: Json| api_request("sources-patch.json", &[("id", &id)], &[], Some(body));
    let (status, patched) = api.call(patch(json!({"frequency_minutes": 7}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        api.schedule(&id).await.unwrap().schedule_expression(),
        Some("rate(7 minutes)")
    );
    for (body, field) in [
        (json!({"frequency_minutes": 0}), "frequency_minutes"),
        (json!({"description": "x".repeat(1001)}), "description"),
    ] {
        let (status, refused) = api.call(patch(body)).await;
        assert_eq!(
            (status, refused["error"]["field"].as_str()),
            (400, Some(field)),
            "{refused}"
        );
    }
    let (_, shown) = api
        .call(api_request("sources-get.json", &[("id", &id)], &[], None))
        .await;
    assert_eq!(
        (shown["frequency_minutes"].as_u64(), shown["description"].as_str()),
        (Some(7), Some("Sales of the Oslo shop, for the leaderboard")),
        "a refused patch changes nothing: {shown}"
    );
}

/// A request to the connection routes: `POST /connections` with a body, or the
/// fixture of the method named, for the connection `id`.
fn connection_request(fixture: &str, id: Option<&str>, body: Option<Json>) -> Json {
    let params: Vec<(&str, &str)> = id.map(|id| ("id", id)).into_iter().collect();
    api_request(fixture, &params, &[], body)
}

/// A connection body holding the database's secret, with the marker password.
fn new_connection(id: &str, db: &Database) -> Json {
    let mut connection = db.secret.clone();
    connection["password"] = PASSWORD.into();
    json!({ "id": id, "name": "Shop replica", "connection": connection })
}

/// A source of `db`'s sales through the connection `connection_id`.
fn source_on(id: &str, connection_id: &str) -> Json {
    json!({
        "id": id, "name": "Sales", "engine": "postgres", "sync_type": "registration",
        "query": SALES_QUERY, "frequency_minutes": 5, "connection_id": connection_id,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_cannot_name_another_sources_secrets_whatever_the_id_looks_like() {
    use sluice_tests::receiver::Receiver;
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(5).await;
    let prefix = api.config.secrets_prefix.clone();
    let create = |body: Json| api_request("sources-create.json", &[], &[], Some(body));

    // The victim: its own connection and a destination's write key.
    let victim = unique("victim");
    let write_key = format!("wk-{}", unique("victim"));
    let mut body = new_source(&victim, &db);
    body["sync_type"] = "identify".into();
    body["query"] =
        "SELECT user_id FROM sales WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}"
            .into();
    body["destination"] = json!({"kind": "http", "base_url": "https://cdp.example.com", "write_key": write_key});
    let (status, answer) = api.call(create(body)).await;
    assert_eq!(status, 201, "{answer}");
    let victim_secret = format!("{prefix}{victim}");
    let victim_key = format!("{prefix}{victim}/write-key");

    // The attacker names the victim's secret, or its write key with its own base_url.
    let attacker = unique("attacker");
    let receiver = Receiver::start("wk-attacker").await;
    let mut reads_db = new_source(&attacker, &db);
    reads_db.as_object_mut().unwrap().remove("connection");
    reads_db["secret_id"] = victim_secret.clone().into();
    let (status, answer) = api.call(create(reads_db.clone())).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("secret_id")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not this source's secret")
    );
    let mut takes_key = new_source(&attacker, &db);
    takes_key["sync_type"] = "identify".into();
    takes_key["query"] = "SELECT user_id FROM sales".into();
    takes_key["destination"] = json!({"kind": "http", "base_url": receiver.base_url(), "secret_id": victim_key});
    let (status, answer) = api.call(create(takes_key)).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("destination.secret_id")),
        "{answer}"
    );
    assert!(api.store.get_source(&attacker).await.unwrap().is_none());
    // Nor through an unsaved test query: nothing is read.
    let (status, answer) = api
        .call(api_request(
            "sources-test-query.json",
            &[("id", &attacker)],
            &[],
            Some(json!({ "source": reads_db })),
        ))
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("secret_id")),
        "{answer}"
    );
    assert!(answer.get("rows").is_none() && answer.get("records").is_none());

    // Nor by a change of its own source.
    let (status, _) = api.call(create(new_source(&attacker, &db))).await;
    assert_eq!(status, 201);
    let patch = |body: Json| api_request("sources-patch.json", &[("id", &attacker)], &[], Some(body));
    let (status, answer) = api.call(patch(json!({ "secret_id": victim_secret }))).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("secret_id")),
        "{answer}"
    );
    let (status, answer) = api
        .call(patch(json!({
            "sync_type": "identify", "query": "SELECT user_id FROM sales",
            "destination": {"kind": "http", "base_url": receiver.base_url(), "secret_id": victim_key},
        })))
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("destination.secret_id")),
        "{answer}"
    );
    assert_eq!(
        api.store.get_source(&attacker).await.unwrap().unwrap().config.secret_id,
        format!("{prefix}{attacker}")
    );

    // Ids an attacker would try for a connection: each names no connection.
    let long = "x".repeat(1024);
    for connection_id in [
        "../".to_string() + &victim,
        format!("a/{victim}"),
        "..".into(),
        "é".into(),
        long,
        victim_secret.clone(),
        format!("{victim}/write-key"),
    ] {
        let (status, answer) = api.call(create(source_on(&unique("probe"), &connection_id))).await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some("connection_id")),
            "{connection_id}: {answer}"
        );
    }
    // A secret_id that climbs out of the connections' folder is no connection either.
    let mut climbs = new_source(&unique("probe"), &db);
    climbs.as_object_mut().unwrap().remove("connection");
    climbs["secret_id"] = format!("{prefix}connections/../{victim}").into();
    let (status, answer) = api.call(create(climbs)).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("connection_id")),
        "{answer}"
    );
    for id in ["../x", "a%2Fb", "é", &"y".repeat(1024)] {
        let (status, _) = api
            .call(connection_request("connections-get.json", Some(id), None))
            .await;
        assert_eq!(status, 404, "{id}");
        let (status, answer) = api
            .call(connection_request(
                "connections-create.json",
                None,
                Some(new_connection(id, &db)),
            ))
            .await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some("id")),
            "{id}: {answer}"
        );
    }
    // A connection named like the victim gets its own secret; the victim's stays.
    let (status, answer) = api
        .call(connection_request(
            "connections-create.json",
            None,
            Some(new_connection(&victim, &db)),
        ))
        .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["secret_id"], json!(format!("{prefix}connections/{victim}")));
    let stored = api
        .secrets
        .get_secret_value()
        .secret_id(&victim_key)
        .send()
        .await
        .unwrap();
    assert!(stored.secret_string().unwrap().contains(&write_key));
    // No source may be called `connections`: its write key would sit among them.
    let (status, answer) = api.call(create(new_source("connections", &db))).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("id")),
        "{answer}"
    );

    assert_eq!(receiver.requests(), 0);
    for body in api.seen.lock().unwrap().iter() {
        assert!(!body.contains(&write_key), "{body}");
    }
    api.assert_no_secret_was_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_share_a_connection_whose_secret_is_never_shown_and_which_is_not_deleted_in_use() {
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(40).await;
    let prefix = api.config.secrets_prefix.clone();
    let connection_id = unique("shop");
    let secret_id = format!("{prefix}connections/{connection_id}");
    let get = || connection_request("connections-get.json", Some(&connection_id), None);

    let (status, created) = api
        .call(connection_request(
            "connections-create.json",
            None,
            Some(new_connection(&connection_id, &db)),
        ))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created,
        json!({"id": connection_id, "name": "Shop replica", "engine": "postgres", "secret_id": secret_id, "sources": []})
    );
    let stored = api
        .secrets
        .get_secret_value()
        .secret_id(&secret_id)
        .send()
        .await
        .unwrap();
    assert!(stored.secret_string().unwrap().contains(PASSWORD));
    // Sent again (a lost answer): done. With another password: refused, the first kept.
    let (status, _) = api
        .call(connection_request(
            "connections-create.json",
            None,
            Some(new_connection(&connection_id, &db)),
        ))
        .await;
    assert_eq!(status, 201);
    let mut other = new_connection(&connection_id, &db);
    other["connection"]["password"] = "another".into();
    let (status, answer) = api
        .call(connection_request("connections-create.json", None, Some(other)))
        .await;
    assert_eq!(status, 409, "{answer}");
    let stored = api
        .secrets
        .get_secret_value()
        .secret_id(&secret_id)
        .send()
        .await
        .unwrap();
    assert!(stored.secret_string().unwrap().contains(PASSWORD));

    // Two sources of the database use it; a MySQL source may not.
    let (a, b) = (unique("a"), unique("b"));
    for id in [&a, &b] {
        let (status, answer) = api
            .call(api_request(
                "sources-create.json",
                &[],
                &[],
                Some(source_on(id, &connection_id)),
            ))
            .await;
        assert_eq!(status, 201, "{answer}");
        assert_eq!(
            (&answer["connection_id"], &answer["secret_id"]),
            (&json!(connection_id), &json!(secret_id))
        );
    }
    let mut mysql = source_on(&unique("m"), &connection_id);
    mysql["engine"] = "mysql".into();
    let (status, answer) = api
        .call(api_request("sources-create.json", &[], &[], Some(mysql)))
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("connection_id")),
        "{answer}"
    );
    let mut both = source_on(&unique("m"), &connection_id);
    both["connection"] = db.secret.clone();
    let (status, answer) = api.call(api_request("sources-create.json", &[], &[], Some(both))).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("connection_id")),
        "{answer}"
    );
    let (status, got) = api.call(get()).await;
    assert_eq!((status, got["sources"].clone()), (200, json!([a, b])), "{got}");
    let (_, list) = api.call(connection_request("connections-list.json", None, None)).await;
    assert!(list["connections"].as_array().unwrap().contains(&got), "{list}");

    // End to end: the test query and a sync of each, through the one secret.
    let sync = sync_service(&sdk().await, &api.config.function);
    for id in [&a, &b] {
        let (status, preview) = api
            .call(api_request("sources-test-query.json", &[("id", id)], &[], None))
            .await;
        assert_eq!((status, preview["row_count"].as_u64()), (200, Some(40)), "{preview}");
        let run = sync.run(id, sluice_core::Trigger::Manual, None).await.unwrap();
        assert_eq!(
            (run.status, run.rows_written),
            (RunStatus::Succeeded, 40),
            "{:?}",
            run.message
        );
    }

    // A new name, and a new secret value; the engine stays while sources use it.
    let patch = |body: Json| connection_request("connections-patch.json", Some(&connection_id), Some(body));
    let (status, answer) = api
        .call(patch(
            json!({ "name": "Shop (eu)", "connection": new_connection("x", &db)["connection"] }),
        ))
        .await;
    assert_eq!((status, &answer["name"]), (200, &json!("Shop (eu)")), "{answer}");
    let (status, answer) = api.call(patch(json!({ "engine": "mysql" }))).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("engine")),
        "{answer}"
    );
    let (status, answer) = api.call(patch(json!({ "id": "other" }))).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("id")),
        "{answer}"
    );

    // Deleting it in use is refused, naming the sources; nothing goes.
    let delete = || connection_request("connections-delete.json", Some(&connection_id), None);
    let (status, answer) = api.call(delete()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("in_use")),
        "{answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains(&a) && message.contains(&b), "{message}");
    assert!(
        api.secrets
            .get_secret_value()
            .secret_id(&secret_id)
            .send()
            .await
            .is_ok()
    );

    // B moves to its own connection, A is deleted: the connection can go.
    let (status, answer) = api
        .call(api_request(
            "sources-patch.json",
            &[("id", &b)],
            &[],
            Some(json!({ "connection": new_connection("x", &db)["connection"] })),
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["secret_id"], json!(format!("{prefix}{b}")));
    assert!(answer.get("connection_id").is_none());
    let (_, got) = api.call(get()).await;
    assert_eq!(got["sources"], json!([a]));
    // And back: its own secret goes, the connection's stays.
    let (status, answer) = api
        .call(api_request(
            "sources-patch.json",
            &[("id", &b)],
            &[],
            Some(json!({ "connection_id": connection_id })),
        ))
        .await;
    assert_eq!(
        (status, &answer["connection_id"]),
        (200, &json!(connection_id)),
        "{answer}"
    );
    assert!(
        api.secrets
            .get_secret_value()
            .secret_id(format!("{prefix}{b}"))
            .send()
            .await
            .is_err()
    );
    let (status, _) = api
        .call(api_request("sources-delete.json", &[("id", &b)], &[], None))
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(api_request("sources-delete.json", &[("id", &a)], &[], None))
        .await;
    assert_eq!(status, 200);
    assert!(
        api.secrets
            .get_secret_value()
            .secret_id(&secret_id)
            .send()
            .await
            .is_ok(),
        "a source's delete leaves the connection's secret"
    );
    let (status, answer) = api.call(delete()).await;
    assert_eq!((status, &answer["deleted"]), (200, &json!(connection_id)), "{answer}");
    assert!(
        api.secrets
            .get_secret_value()
            .secret_id(&secret_id)
            .send()
            .await
            .is_err()
    );
    let (status, _) = api.call(get()).await;
    assert_eq!(status, 404);
    let (status, answer) = api
        .call(api_request(
            "sources-create.json",
            &[],
            &[],
            Some(source_on(&unique("late"), &connection_id)),
        ))
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("connection_id")),
        "{answer}"
    );

    api.assert_no_secret_was_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_of_one_id_at_once_never_mix_their_config_and_secret() {
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(3).await;
    let prefix = api.config.secrets_prefix.clone();

    // Sources: each request its own name and password.
    let id = unique("race");
    let requests = (0..6).map(|i| {
        let mut body = new_source(&id, &db);
        body["name"] = format!("create {i}").into();
        body["connection"]["password"] = format!("pw-{i}").into();
        api.call(api_request("sources-create.json", &[], &[], Some(body)))
    });
    let answers = futures::future::join_all(requests).await;
    let won: Vec<_> = answers.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 201 || *s == 409), "{answers:?}");
    let name = won[0].1["name"].as_str().unwrap().to_string();
    let stored = api.store.get_source(&id).await.unwrap().unwrap().config;
    assert_eq!(stored.name, name);
    let secret = api
        .secrets
        .get_secret_value()
        .secret_id(format!("{prefix}{id}"))
        .send()
        .await
        .unwrap();
    let password: Json = serde_json::from_str(secret.secret_string().unwrap()).unwrap();
    assert_eq!(
        password["password"],
        json!(name.replace("create ", "pw-")),
        "the stored secret is the winner's"
    );

    // The same body sent several times at once (a client retrying): all finish it.
    let same = unique("same");
    let answers = futures::future::join_all((0..4).map(|_| {
        api.call(api_request(
            "sources-create.json",
            &[],
            &[],
            Some(new_source(&same, &db)),
        ))
    }))
    .await;
    assert!(answers.iter().all(|(s, _)| *s == 201), "{answers:?}");

    // Connections: one name, each request its own password.
    let connection_id = unique("race");
    let requests = (0..6).map(|i| {
        let mut body = new_connection(&connection_id, &db);
        body["connection"]["password"] = format!("pw-{i}").into();
        api.call(connection_request("connections-create.json", None, Some(body)))
    });
    let answers = futures::future::join_all(requests).await;
    assert_eq!(answers.iter().filter(|(s, _)| *s == 201).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 201 || *s == 409), "{answers:?}");
    let secret = api
        .secrets
        .get_secret_value()
        .secret_id(format!("{prefix}connections/{connection_id}"))
        .send()
        .await
        .unwrap();
    let stored: Json = serde_json::from_str(secret.secret_string().unwrap()).unwrap();
    assert!(stored["password"].as_str().unwrap().starts_with("pw-"));
    for (_, answer) in &answers {
        assert!(!answer.to_string().contains("pw-"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_namespace_is_one_sources_unless_shared_on_purpose() {
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(10).await;
    let create = |id: &str, namespace: Option<&str>| {
        let mut body = new_source(id, &db);
        if let Some(ns) = namespace {
            body["member_id_source"] = ns.into();
        }
        api_request("sources-create.json", &[], &[], Some(body))
    };
    let refused = |answer: &Json, holder: &str| {
        assert_eq!(answer["error"]["field"], "member_id_source", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(holder) && message.contains("shared:"), "{message}");
    };

    // A's default namespace is its id: B may not write there.
    let (a, b, c) = (unique("a"), unique("b"), unique("c"));
    assert_eq!(api.call(create(&a, None)).await.0, 201);
    let (status, answer) = api.call(create(&b, Some(&a))).await;
    assert_eq!(status, 400);
    refused(&answer, &a);
    // An explicit namespace: the first holds it, the next is refused.
    let crm = unique("crm");
    assert_eq!(api.call(create(&b, Some(&crm))).await.0, 201);
    let (status, answer) = api.call(create(&c, Some(&crm))).await;
    assert_eq!(status, 400);
    refused(&answer, &b);
    assert!(
        api.store.get_source(&c).await.unwrap().is_none(),
        "the refused create left nothing"
    );
    // B moves on: the namespace is free for C; deleting C frees it again.
    let (status, _) = api
        .call(api_request(
            "sources-patch.json",
            &[("id", &b)],
            &[],
            Some(json!({ "member_id_source": unique("crm") })),
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.call(create(&c, Some(&crm))).await.0, 201);
    assert_eq!(
        api.call(api_request("sources-delete.json", &[("id", &c)], &[], None))
            .await
            .0,
        200
    );
    let d = unique("d");
    assert_eq!(api.call(create(&d, Some(&crm))).await.0, 201);

    // Shared on purpose: both sync into one namespace.
    let shared = format!("shared:{}", unique("team"));
    let (e, f) = (unique("e"), unique("f"));
    let sync = sync_service(&sdk().await, &api.config.function);
    for id in [&e, &f] {
        let (status, answer) = api.call(create(id, Some(&shared))).await;
        assert_eq!(status, 201, "{answer}");
        let run = sync.run(id, sluice_core::Trigger::Manual, None).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    }
    let (members, _) = api.store.list_members(&shared).await.unwrap();
    assert!(!members.is_empty());

    // A source saved before claims existed holds its namespace all the same.
    let legacy_ns = unique("legacy");
    let mut legacy = sluice_core::SourceConfig::clone(&api.store.get_source(&d).await.unwrap().unwrap().config);
    legacy.id = unique("legacy");
    legacy.member_id_source = Some(legacy_ns.clone());
    api.store.put_source(&legacy).await.unwrap();
    let (status, answer) = api.call(create(&unique("g"), Some(&legacy_ns))).await;
    assert_eq!(status, 400);
    refused(&answer, &legacy.id);

    // Namespaces that are no name.
    for bad in ["a/b", "shared:", "mémé", "a#b", "shared:a:b", &"n".repeat(65)] {
        let (status, answer) = api.call(create(&unique("h"), Some(bad))).await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some("member_id_source")),
            "{bad}: {answer}"
        );
    }
    api.assert_no_secret_was_shown();
}

/// An answer for a failed AWS call says which call failed and its error code; AWS's
/// own message, which on AWS names role ARNs and the account id, stays in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_names_the_failed_call_but_not_what_aws_said() {
    let leaks = |body: &Json| {
        let text = body.to_string();
        [
            "arn:",
            "123456789012",
            "Requested resource not found",
            "does not exist.",
            // moto answers a missing schedule group with an HTML error page.
            "<html",
            "<title>",
        ]
        .iter()
        .find(|s| text.contains(*s))
        .map(|s| s.to_string())
    };

    // DynamoDB: the Sources table is not there.
    let mut api = Api::new().await;
    let mut missing = api.config.clone();
    missing.function.tables.sources = unique("no-such-table");
    api.api.admin = source_admin(&sdk().await, &missing);
    let (status, answer) = api.call(api_request("sources-list.json", &[], &[], None)).await;
    assert_eq!(status, 502, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("DynamoDB") && message.contains("ResourceNotFoundException") && message.contains("again"),
        "{answer}"
    );
    assert_eq!(leaks(&answer), None, "{answer}");

    // EventBridge Scheduler: the schedule group is gone, so creating the schedule fails.
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    api.scheduler
        .delete_schedule_group()
        .name(&api.config.schedules.group)
        .send()
        .await
        .unwrap();
    let id = unique("upstream");
    let (status, answer) = api
        .call(api_request("sources-create.json", &[], &[], Some(new_source(&id, &db))))
        .await;
    assert_eq!(status, 502, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("EventBridge Scheduler") && message.contains(&id),
        "{answer}"
    );
    assert_eq!(leaks(&answer), None, "{answer}");
}

/// The deliver function may read write keys only (template.yaml), so a destination
/// naming any other secret, such as a database's connection, is refused up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_may_name_only_a_write_key_secret() {
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    let first = unique("owner");
    let (status, answer) = api
        .call(api_request(
            "sources-create.json",
            &[],
            &[],
            Some(new_source(&first, &db)),
        ))
        .await;
    assert_eq!(status, 201, "{answer}");

    let mut body = new_source(&unique("thief"), &db);
    body["sync_type"] = "identify".into();
    body["query"] = "SELECT 'u1' AS user_id".into();
    let connection_secret = answer["secret_id"].as_str().unwrap().to_string();
    body["destination"] = json!({"kind": "segment", "secret_id": connection_secret});
    let (status, answer) = api.call(api_request("sources-create.json", &[], &[], Some(body))).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["field"], "destination.secret_id", "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("/write-key"),
        "{answer}"
    );
}

/// A write key goes only where it was given for: changing where a destination points
/// without giving the key again is refused, so a caller who may change a source but
/// never saw its key cannot have it sent to a host of theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_moved_elsewhere_needs_its_write_key_again() {
    let api = Api::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(5).await;
    let id = unique("moved");
    let mut body = new_source(&id, &db);
    body["sync_type"] = "identify".into();
    body["query"] =
        "SELECT user_id FROM sales WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}"
            .into();
    body["destination"] = json!({"kind": "http", "base_url": "https://cdp.example.com", "write_key": "wk-moved-1"});
    let (status, answer) = api.call(api_request("sources-create.json", &[], &[], Some(body))).await;
    assert_eq!(status, 201, "{answer}");
    let own_key = format!("{}{id}/write-key", api.config.secrets_prefix);
    let patch = |body: Json| api_request("sources-patch.json", &[("id", &id)], &[], Some(body));

    let (status, answer) = api
        .call(patch(json!({"destination": {
            "kind": "http", "base_url": "https://collector.attacker.example", "secret_id": own_key,
        }})))
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("destination.write_key")),
        "{answer}"
    );
    let stored = api.store.get_source(&id).await.unwrap().unwrap().config;
    assert_eq!(
        stored.destination.unwrap().base_url.as_deref(),
        Some("https://cdp.example.com"),
        "a refused change changes nothing"
    );

    // With the key given again, the move is the owner's.
    let (status, answer) = api
        .call(patch(json!({"destination": {
            "kind": "http", "base_url": "https://collector.example.org", "write_key": "wk-moved-2",
        }})))
        .await;
    assert_eq!(status, 200, "{answer}");
    api.assert_no_secret_was_shown();
}
