//! The management API fuzzed through its OpenAPI document: schemathesis (PyPI) sends
//! generated requests (odd ids, unicode, huge bodies and templates, extreme dates and
//! numbers, wrong types) to the API and backfill handlers served on loopback as API
//! Gateway serves them (tests/src/gateway.rs), over moto. No answer may be a 5xx,
//! every 400 must name its field, answers must match the document, and none may hold
//! the secret a source was created with.

use std::path::Path;
use std::process::Command;

use serde_json::Value as Json;
use sluice_tests::gateway::LocalGateway;
use sluice_tests::*;

const PASSWORD: &str = "pw-fuzz-never-in-an-answer-7d1e";

/// The functions are built with `panic = "abort"` (Cargo.toml's release profile): a
/// panic ends the process, and with it every request in flight. The tests' build
/// unwinds instead (libtest needs it), and a panic in a handler's task would only
/// drop one connection; this hook makes any panic end the test process as it ends a
/// function, so that one panicking request fails the test, whatever answered it.
/// The test's own assertions (on its own thread) still fail it the usual way.
fn abort_on_panic_as_deployed() {
    let report = std::panic::take_hook();
    let test_thread = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        if std::thread::current().id() != test_thread {
            eprintln!("a panic ends a function built with panic = \"abort\": aborting");
            std::process::abort();
        }
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_generated_requests_get_no_5xx_and_every_400_names_its_field() {
    abort_on_panic_as_deployed();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schemathesis = root.join(".venv-fuzz/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "schemathesis is not in .venv-fuzz: run the tests with `bash infra/test.sh`, which installs it"
    );
    let (gateway, _) = LocalGateway::functions_over(&sdk().await).await;

    // One real source, so that generated requests also reach existing resources.
    let db = Database::new(sluice_core::Engine::Postgres).await;
    db.create_sales(10).await;
    let mut connection = db.secret.clone();
    connection["password"] = PASSWORD.into();
    let body = serde_json::json!({"id": "fuzz-source", "name": "Sales", "engine": "postgres",
        "sync_type": "registration", "query": SALES_QUERY, "connection": connection});
    let created = reqwest::Client::new()
        .post(format!("{}/sources", gateway.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        [201, 409].contains(&created.status().as_u16()),
        "{:?}",
        created.text().await
    );

    let url = gateway.url();
    let report = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            .current_dir(&root)
            .args([
                "run",
                "openapi.yaml",
                "--url",
                &url,
                "--workers",
                "2",
                "--max-examples",
                "90",
            ])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args([
                "--phases",
                "examples,coverage,fuzzing",
                "--suppress-health-check",
                "all",
            ])
            .args(["--seed", "15", "--generation-database", "none"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let output = String::from_utf8_lossy(&report.stdout).into_owned() + &String::from_utf8_lossy(&report.stderr);

    let exchanges = gateway.exchanges();
    let server_errors: Vec<_> = exchanges.iter().filter(|(s, _, _)| *s >= 500).collect();
    let unnamed: Vec<_> = exchanges
        .iter()
        .filter(|(s, _, body)| {
            *s == 400
                && serde_json::from_str::<Json>(body)
                    .ok()
                    .and_then(|b| b["error"]["field"].as_str().map(|f| !f.is_empty()))
                    != Some(true)
        })
        .collect();
    let leaked: Vec<_> = exchanges.iter().filter(|(_, _, b)| b.contains(PASSWORD)).collect();
    let by_status = exchanges
        .iter()
        .fold(std::collections::BTreeMap::new(), |mut m, (s, _, _)| {
            *m.entry(*s).or_insert(0) += 1;
            m
        });
    println!("schemathesis: {} requests, by status {by_status:?}", exchanges.len());
    assert!(
        exchanges.len() >= 1_000,
        "at least 1,000 requests: {}\n{output}",
        exchanges.len()
    );
    assert!(server_errors.is_empty(), "5xx answers: {server_errors:#?}");
    assert!(unnamed.is_empty(), "400s that name no field: {unnamed:#?}");
    assert!(leaked.is_empty(), "answers holding the password: {leaked:#?}");
    assert!(report.status.success(), "schemathesis found failures:\n{output}");
}

/// The hostile requests a fuzzer may not happen on, each sent as API Gateway sends it:
/// odd ids (path separators, unicode, 1 KB), a body of megabytes, an enormous template,
/// a backfill of 1970 to 9999 in one-minute chunks, negative and zero numbers. Each gets
/// a 4xx naming the field, and nothing stored changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_4xx_naming_the_field_and_change_nothing() {
    abort_on_panic_as_deployed();
    let (gateway, config) = LocalGateway::functions_over(&sdk().await).await;
    let db = Database::new(sluice_core::Engine::Postgres).await;
    db.create_sales(10).await;
    let http = reqwest::Client::new();
    let id = unique("hostile");
    let source = |change: &dyn Fn(&mut Json)| {
        let mut body = serde_json::json!({"id": id, "name": "Sales", "engine": "postgres",
            "sync_type": "registration", "query": SALES_QUERY, "connection": db.secret});
        change(&mut body);
        body
    };
    let send = |method: reqwest::Method, path: String, body: Option<Json>| {
        let mut request = http.request(method, format!("{}{path}", gateway.url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<Json>().await.unwrap_or(Json::Null))
        }
    };
    let (status, created) = send(reqwest::Method::POST, "/sources".into(), Some(source(&|_| {}))).await;
    assert_eq!(status, 201, "{created}");

    let long_id = "x".repeat(1024);
    // A new source each (the id of one that exists would be a conflict first).
    let with = |field: &'static str, value: Json| {
        source(&move |b| {
            b["id"] = unique("hostile").into();
            b[field] = value.clone();
        })
    };
    let post = reqwest::Method::POST;
    let cases: Vec<(reqwest::Method, String, Option<Json>, u16, &str)> = vec![
        (
            post.clone(),
            "/sources".into(),
            Some(with("id", "a/b".into())),
            400,
            "id",
        ),
        (
            post.clone(),
            "/sources".into(),
            Some(with("id", "ñandú-☃".into())),
            400,
            "id",
        ),
        (
            post.clone(),
            "/sources".into(),
            Some(with("id", long_id.clone().into())),
            400,
            "id",
        ),
        (reqwest::Method::GET, "/sources/a%2Fb".into(), None, 404, ""),
        (reqwest::Method::GET, "/sources/%C3%B1and%C3%BA".into(), None, 404, ""),
        (reqwest::Method::GET, format!("/sources/{long_id}"), None, 404, ""),
        (reqwest::Method::DELETE, "/sources/..%2F..%2Fetc".into(), None, 404, ""),
        (
            post.clone(),
            "/sources".into(),
            Some(with("name", "n".repeat(6_000_000).into())),
            400,
            "body",
        ),
        (
            post.clone(),
            "/sources".into(),
            Some(with(
                "query",
                format!("{SALES_QUERY} -- {}", "x".repeat(200_000)).into(),
            )),
            400,
            "query",
        ),
        (
            post.clone(),
            format!("/sources/{id}/backfills"),
            Some(serde_json::json!({"start": "1970-01-01", "end": "9999-12-31", "chunk": "1m"})),
            400,
            "end",
        ),
        (
            post.clone(),
            format!("/sources/{id}/backfills"),
            Some(serde_json::json!({"start": "1970-01-01", "end": "2026-01-01", "chunk": "1m"})),
            400,
            "chunk",
        ),
        (
            post.clone(),
            "/sources".into(),
            Some(with("frequency_minutes", 0.into())),
            400,
            "frequency_minutes",
        ),
        (
            post.clone(),
            "/sources".into(),
            Some(with("frequency_minutes", (-5).into())),
            400,
            "frequency_minutes",
        ),
        (
            post.clone(),
            "/sources".into(),
            Some(with("lookback_seconds", (-1).into())),
            400,
            "lookback_seconds",
        ),
        (
            post.clone(),
            "/sources".into(),
            Some(with("max_rows_per_run", 0.into())),
            400,
            "max_rows_per_run",
        ),
        (
            post.clone(),
            "/sources".into(),
            Some(with("query_timeout_seconds", 0.into())),
            400,
            "query_timeout_seconds",
        ),
        (
            post.clone(),
            "/sources".into(),
            Some(source(&|b| {
                b["id"] = unique("hostile").into();
                b["connection"]["password"] = "p".repeat(100_000).into();
            })),
            400,
            "connection",
        ),
        // The same config under the id of a source that exists, with another password:
        // not the same create sent again, so nothing is overwritten.
        (
            post.clone(),
            "/sources".into(),
            Some(source(&|b| b["connection"]["password"] = "another".into())),
            409,
            "",
        ),
        (
            reqwest::Method::GET,
            format!("/sources/{id}/runs?limit=0"),
            None,
            400,
            "limit",
        ),
        (
            reqwest::Method::GET,
            format!("/sources/{id}/runs?limit=-1"),
            None,
            400,
            "limit",
        ),
        (
            post.clone(),
            format!("/sources/{id}/backfills"),
            Some(serde_json::json!({"start": "2024-01-01", "end": "2024-02-01", "chunk": "0d"})),
            400,
            "chunk",
        ),
        (
            post.clone(),
            format!("/sources/{id}/backfills"),
            Some(serde_json::json!({"start": "2024-01-01", "end": "2024-02-01", "chunk": "-1d"})),
            400,
            "chunk",
        ),
        (
            reqwest::Method::PATCH,
            format!("/sources/{id}"),
            Some(serde_json::json!({"frequency_minutes": -1})),
            400,
            "frequency_minutes",
        ),
        // Each of these once panicked, which ends a function built with panic = "abort".
        (
            post.clone(),
            format!("/sources/{id}/backfills"),
            Some(serde_json::json!({"start": "2024-01-01", "end": "2024-02-01", "chunk": "1€"})),
            400,
            "chunk",
        ),
    ];
    let cases = cases.into_iter().chain(
        [
            "SELECT '\u{E000}' AS reference, user_id AS member_id FROM sales WHERE updated_at >= {{ last_update_time }}",
            "SELECT id AS reference FROM sales WHERE updated_at >= {{ last_update_time|replace(\"0\",\"9\") }}",
            "SELECT id AS reference FROM sales WHERE updated_at >= {{ last_update_time[1:3] }}",
            "SELECT id AS reference FROM sales WHERE updated_at >= {{ upper_date_limit|first }}",
            "SELECT 1 {% for a in 'x' * 99999 %}{% for b in 'x' * 99999 %}{% endfor %}{% endfor %} WHERE d >= {{ last_update_time }}",
        ]
        .into_iter()
        .flat_map(|query| {
            [
                (post.clone(), "/sources".to_string(), Some(with("query", query.into())), 400, "query"),
                (
                    post.clone(),
                    format!("/sources/{id}/test-query"),
                    Some(serde_json::json!({"source": source(&|b| b["query"] = query.into())})),
                    400,
                    "query",
                ),
            ]
        }),
    );
    let mut wrong = Vec::new();
    for (method, path, body, status, field) in cases {
        let shown = format!("{method} {}", &path[..path.len().min(60)]);
        let (got, answer) = send(method, path, body).await;
        let named = answer["error"]["field"].as_str().unwrap_or("");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        println!("{shown} -> {got} {named}: {}", &message[..message.len().min(160)]);
        if got != status || named != field || message.is_empty() {
            wrong.push(format!("{shown}: expected {status} {field:?}, got {got} {answer}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // Nothing stored changed: the one source, as created, and no other secret.
    let (status, listed) = send(reqwest::Method::GET, "/sources".into(), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = listed["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()], "{listed}");
    let (_, now) = send(reqwest::Method::GET, format!("/sources/{id}"), None).await;
    assert_eq!(now["frequency_minutes"], created["frequency_minutes"], "{now}");
    assert_eq!(now["query"], created["query"], "{now}");
    let (_, backfills) = send(reqwest::Method::GET, format!("/sources/{id}/backfills"), None).await;
    assert_eq!(backfills["backfills"], serde_json::json!([]), "{backfills}");
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk().await)
        .list_secrets()
        .filters(
            aws_sdk_secretsmanager::types::Filter::builder()
                .key("name".into())
                .values(config.secrets_prefix.clone())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let names: Vec<_> = secrets.secret_list().iter().filter_map(|s| s.name()).collect();
    assert_eq!(
        names,
        [format!("{}{id}", config.secrets_prefix)],
        "only the source's own secret"
    );
}
