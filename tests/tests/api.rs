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
            "does not exist",
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
