//! The built sync function run by cargo-lambda's local Lambda runtime (`cargo lambda
//! watch`, no Docker) and invoked with `cargo lambda invoke`, against moto and
//! PostgreSQL: the bootstrap talks to a Lambda runtime API as it does in AWS. Its stdout
//! is what CloudWatch Logs would receive, and is checked line by line: JSON logs that
//! carry source_id and run_id, and one Embedded Metric Format document per run.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sluice_core::Engine;
use sluice_tests::*;

/// The source database's password, to be found nowhere the function writes.
const PASSWORD: &str = "pw-lambda-never-written-5b2c";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `cargo` with cargo-lambda on its PATH: infra/test.sh installs it into .venv-sam.
fn cargo_lambda() -> Command {
    let bin = repo_root().join(".venv-sam/bin");
    assert!(
        bin.join("cargo-lambda").exists(),
        "cargo-lambda is not in {}: run the tests with `bash infra/test.sh`, which installs it (infra/sam-tools.sh)",
        bin.display()
    );
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    command.env("PATH", path).current_dir(repo_root()).arg("lambda");
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The local runtime API and the function polling it; both stopped on drop.
struct LocalLambda {
    port: u16,
    runtime: Child,
    function: Child,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl LocalLambda {
    fn start(env: &[(&str, String)]) -> Self {
        let port = free_port();
        let runtime = cargo_lambda()
            .args([
                "watch",
                "--only-lambda-apis",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cargo lambda watch starts");
        wait_for_port(port, "cargo lambda watch");
        // The binary `cargo build --workspace --bins` made, as sam build makes `bootstrap`.
        let bootstrap = sluice_bin().with_file_name("sluice-sync");
        let mut function = Command::new(&bootstrap)
            .env_clear()
            // What `cargo lambda watch --only-lambda-apis` asks of the function it serves:
            // its runtime API, and the name `_` that `cargo lambda invoke` calls by default.
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_ENDPOINT_URL", aws_endpoint())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", bootstrap.display()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(function.stdout.take().unwrap()).lines();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        LocalLambda {
            port,
            runtime,
            function,
            stdout,
        }
    }

    /// `cargo lambda invoke` with `data` (`--data-ascii JSON` or `--data-file PATH`).
    fn invoke(&self, data: [&str; 2]) -> Output {
        cargo_lambda()
            .args(["invoke", "--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(self.port.to_string())
            .args(["--output-format", "json"])
            .args(data)
            .output()
            .expect("cargo lambda invoke runs")
    }

    /// The function's stdout lines that are JSON, once `done` holds for them.
    fn lines_until(&self, done: impl Fn(&[Json]) -> bool) -> Vec<Json> {
        let start = Instant::now();
        loop {
            let lines: Vec<Json> = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {l}")))
                .collect();
            if done(&lines) {
                return lines;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "stdout so far: {lines:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LocalLambda {
    fn drop(&mut self) {
        let _ = self.function.kill();
        let _ = self.runtime.kill();
        let _ = self.function.wait();
        let _ = self.runtime.wait();
    }
}

fn metrics_of<'a>(lines: &'a [Json], source_id: &str) -> Vec<&'a Json> {
    lines
        .iter()
        .filter(|l| l.get("_aws").is_some() && l["SourceId"] == source_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_sync_function_runs_in_the_local_lambda_runtime_and_reports_metrics() {
    let sdk = sdk().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(300).await;
    // A password that can be searched for (the test server trusts loopback logins).
    let mut connection = db.secret.clone();
    connection["password"] = PASSWORD.into();
    let secret_id = secrets_manager_secret(&connection).await;
    let store = dynamo_store().await;
    let bus = unique("bus");
    let (sqs, queue_url) = event_queue(&sdk, &bus, "sluice.run.completed").await;
    let mut src = source(&unique("local"), &db, SALES_QUERY);
    src.secret_id = secret_id;
    store.put_source(&src).await.unwrap();
    // A second source whose server refuses the connection: the failure path, with the
    // same password in its secret.
    connection["port"] = 1.into();
    let mut unreachable = source(&unique("refused"), &db, SALES_QUERY);
    unreachable.secret_id = secrets_manager_secret(&connection).await;
    store.put_source(&unreachable).await.unwrap();

    let tables = store.tables();
    let lambda = LocalLambda::start(&[
        ("SLUICE_SOURCES_TABLE", tables.sources.clone()),
        ("SLUICE_RECORDS_TABLE", tables.records.clone()),
        ("SLUICE_RUNS_TABLE", tables.runs.clone()),
        ("SLUICE_MEMBERS_TABLE", tables.members.clone()),
        ("SLUICE_EVENT_BUS", bus),
        ("SLUICE_METRICS_NAMESPACE", "Sluice/local".into()),
    ]);

    // The scheduler's input, as `cargo lambda invoke` sends it.
    let payload = serde_json::json!({ "source_id": src.id }).to_string();
    let out = lambda.invoke(["--data-ascii", &payload]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run: Json = serde_json::from_slice(&out.stdout).expect("the invocation answers the run as JSON");
    assert_eq!(
        (run["status"].as_str(), run["rows_written"].as_u64()),
        (Some("succeeded"), Some(300)),
        "{run}"
    );
    assert_eq!(store.count_records(&src.id).await.unwrap(), 300);
    let run_id = run["id"].as_str().unwrap().to_string();

    // The event fixture names the source `sales`, which this deployment lacks: the
    // invocation fails with the run's error, so Lambda's failure destination gets it.
    let fixture = repo_root().join("tests/fixtures/scheduled-sync.json");
    let failed = lambda.invoke(["--data-file", fixture.to_str().unwrap()]);
    // cargo-lambda draws the error in a box, wrapped: compare its words.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&failed.stdout),
        String::from_utf8_lossy(&failed.stderr)
    )
    .split_whitespace()
    .filter(|word| *word != "│")
    .collect::<Vec<_>>()
    .join(" ");
    assert!(!failed.status.success(), "{said}");
    assert!(
        said.contains("Sluice.RunFailed") && said.contains("source `sales` does not exist"),
        "{said}"
    );

    let payload = serde_json::json!({ "source_id": unreachable.id }).to_string();
    let refused = lambda.invoke(["--data-ascii", &payload]);
    assert!(!refused.status.success());

    let lines = lambda
        .lines_until(|lines| metrics_of(lines, "sales").len() == 1 && metrics_of(lines, &unreachable.id).len() == 1);

    // No secret anywhere the function writes: its log and metric lines, its answers and
    // errors, the run log, and the events it published.
    let mut written: Vec<String> = lambda.stdout.lock().unwrap().clone();
    for output in [&out, &failed, &refused] {
        written.push(String::from_utf8_lossy(&output.stdout).into_owned());
        written.push(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    for id in [&src.id, &unreachable.id] {
        for run in store.list_runs(id, 10, None).await.unwrap() {
            written.push(serde_json::to_string(&run).unwrap());
        }
    }
    let events = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert!(!events.is_empty(), "sluice.run.completed was published");
    written.extend(events.into_iter().filter_map(|m| m.body));
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("cannot reach")
            || String::from_utf8_lossy(&refused.stderr).contains("cannot reach"),
        "the refused run says why"
    );
    for text in &written {
        assert!(!text.contains(PASSWORD), "the password was written out: {text}");
    }

    // Init: the clients were built once, and it says how long that took.
    let init: Vec<&Json> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "clients built; serving invocations")
        .collect();
    assert_eq!(init.len(), 1, "{lines:#?}");
    assert!(init[0]["fields"]["init_ms"].as_f64().unwrap() > 0.0);

    // Logs: JSON, with the run's source_id and run_id on every line of the run.
    let finished: Vec<&Json> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "run finished" && l["span"]["source_id"] == src.id.as_str())
        .collect();
    assert_eq!(finished.len(), 1, "{lines:#?}");
    assert_eq!(finished[0]["span"]["run_id"], run_id.as_str());
    assert_eq!(finished[0]["level"], "INFO");
    assert_eq!(finished[0]["fields"]["rows_written"], 300);

    // Metrics: one EMF document per run, each declared metric present and numeric.
    let emf = metrics_of(&lines, &src.id);
    assert_eq!(emf.len(), 1, "{lines:#?}");
    let doc = emf[0];
    let directive = &doc["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Sluice/local");
    assert_eq!(
        directive["Dimensions"],
        serde_json::json!([["SourceId", "Trigger"], ["Trigger"]])
    );
    let declared: Vec<&str> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    for name in &declared {
        assert!(doc[*name].is_number(), "{name} is declared but absent: {doc}");
    }
    for name in [
        "RowsRead",
        "RowsWritten",
        "RowsUnchanged",
        "RowsRejected",
        "Duration",
        "WatermarkLag",
        "FailedRuns",
    ] {
        assert!(declared.contains(&name), "{name} is not declared: {doc}");
    }
    assert_eq!(doc["RunId"], run_id.as_str());
    assert_eq!(doc["Trigger"], "schedule");
    assert_eq!(
        (
            &doc["RowsRead"],
            &doc["RowsWritten"],
            &doc["RowsUnchanged"],
            &doc["RowsRejected"],
            &doc["FailedRuns"]
        ),
        (&300.into(), &300.into(), &0.into(), &0.into(), &0.into())
    );
    // The watermark is the database's clock at the run: seconds behind, not hours.
    let lag = doc["WatermarkLag"].as_i64().unwrap();
    assert!((0..120).contains(&lag), "{doc}");
    let timestamp = doc["_aws"]["Timestamp"].as_i64().unwrap();
    assert!(
        (chrono::Utc::now().timestamp_millis() - timestamp).abs() < 300_000,
        "{doc}"
    );

    // The failed run counts as failed, and has no lag to report (it never read a watermark).
    let failed_doc = metrics_of(&lines, "sales")[0];
    assert_eq!(failed_doc["FailedRuns"], 1, "{failed_doc}");
    assert!(failed_doc.get("WatermarkLag").is_none(), "{failed_doc}");
}
