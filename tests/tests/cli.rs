//! The `sluice` command as a user runs it.

use std::process::Command;

use sluice_tests::*;

#[test]
fn demo_syncs_changes_and_leaves_the_rest_alone() {
    let dir = std::env::temp_dir().join(unique("demo"));
    let out = Command::new(sluice_bin())
        .arg("demo")
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("First sync:  read 1000 rows, imported 1000 records"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "Second sync: read 41 rows: 25 new records, 10 updated, 5 unchanged (not written again), 1 rejected"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("rejected sale 1026: member_name is null; it is required"),
        "{stdout}"
    );
    assert!(
        stdout.contains("The store holds 1025 records, 16 members in 4 teams."),
        "{stdout}"
    );

    // The config it wrote is a working example: syncing again finds nothing new to write.
    let out = Command::new(sluice_bin())
        .args(["sync", "--json", "--config"])
        .arg(dir.join("sluice.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run: sluice_core::Run = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((run.rows_written, run.rows_rejected), (0, 1), "{run:?}");
    assert_eq!(run.rows_unchanged, run.rows_read - 1);

    let out = Command::new(sluice_bin())
        .args(["runs", "--source", "sales", "--config"])
        .arg(dir.join("sluice.yaml"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches(" succeeded: ").count(), 3);
}

#[test]
fn a_bad_config_file_is_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(unique("badcfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.yaml");
    let cases = [
        (
            "sources:\n  - id: s\n    name: S\n    engine: postgres\n    secret_id: db\n    sync_type: registration\n    query: SELECT 1\n    frequncy_minutes: 5\n",
            "unknown field `frequncy_minutes`",
        ),
        (
            "sources:\n  - id: s\n    name: S\n    engine: oracle9\n    secret_id: db\n    sync_type: registration\n    query: SELECT 1\n",
            "unknown variant `oracle9`",
        ),
        (
            "sources:\n  - id: s\n    name: S\n    engine: postgres\n    secret_id: db\n    sync_type: registration\n    query: SELECT {{ nope }}\n",
            "source `s`: invalid `query`: unknown template variable `nope`",
        ),
        (
            "secrets:\n  db:\n    engine: postgres\n    database: x\n    password: ${SLUICE_UNSET_FOR_TEST}\nsources: []\n",
            "SLUICE_UNSET_FOR_TEST",
        ),
    ];
    for (yaml, expected) in cases {
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(sluice_bin())
            .args(["sync", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expected), "expected {expected:?} in {stderr}");
    }
    let out = Command::new(sluice_bin())
        .args(["sync", "--config"])
        .arg(dir.join("missing.yaml"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_listed_added_shown_and_removed() {
    let db = Database::new(sluice_core::Engine::Postgres).await;
    db.create_sales(20).await;
    let first = unique("first");
    let config = local_config(&db, StoreKind::Embedded, &first, SALES_QUERY);
    let run = |args: &[&str]| {
        let out = sluice_cmd(args, &config, 60).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };

    let (ok, text) = run(&["sources", "list"]);
    assert!(
        ok && text.contains(&format!("{first} (postgres): every 1 min, enabled, not synced yet")),
        "{text}"
    );

    // Add a second source from a file; the config file keeps what was there.
    let second = unique("second");
    let file = config.with_file_name("second.yaml");
    let definition = format!(
        "id: {second}\nname: Second\ndescription: Sales of the second shop\nengine: postgres\nsecret_id: db\nsync_type: registration\nfrequency_minutes: 15\nquery: {}\n",
        serde_json::to_string(SALES_QUERY).unwrap()
    );
    std::fs::write(&file, definition).unwrap();
    let (ok, text) = run(&["sources", "add", "--file", file.to_str().unwrap()]);
    assert!(ok, "{text}");
    let loaded = sluice_local::LocalConfig::load(&config).unwrap();
    assert_eq!(loaded.sources.len(), 2);
    assert_eq!(loaded.source(&second).unwrap().frequency_minutes, 15);
    let (ok, text) = run(&["sources", "list"]);
    assert!(
        ok && text.contains(&format!(
            "{second} (postgres): every 15 min, enabled, not synced yet\n  Sales of the second shop"
        )),
        "{text}"
    );
    let (ok, text) = run(&["sources", "add", "--file", file.to_str().unwrap()]);
    assert!(!ok && text.contains("already has a source"), "{text}");
    let other = config.with_file_name("other.yaml");
    std::fs::write(
        &other,
        format!(
            "id: {}\nname: x\nengine: postgres\nsecret_id: nope\nsync_type: registration\nquery: SELECT 1\n",
            unique("x")
        ),
    )
    .unwrap();
    let (ok, text) = run(&["sources", "add", "--file", other.to_str().unwrap()]);
    assert!(!ok && text.contains("no secret `nope`"), "{text}");

    // Synced, it shows its watermark and runs.
    let (ok, text) = run(&["sync", "--source", &second]);
    assert!(ok, "{text}");
    let (ok, text) = run(&["sources", "show", "--source", &second, "--json"]);
    assert!(ok, "{text}");
    let shown: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(shown["source"]["watermark"].is_string());
    assert_eq!(shown["runs"][0]["rows_written"], 20);
    let (_, text) = run(&["sources", "list"]);
    assert!(
        text.contains(&format!("{second} (postgres): every 15 min, enabled, watermark "))
            && text.contains("last run succeeded"),
        "{text}"
    );

    // Removed with its records; the other source stays.
    let (ok, text) = run(&["sources", "rm", "--source", &second, "--purge"]);
    assert!(ok && text.contains("and its 20 records"), "{text}");
    let loaded = sluice_local::LocalConfig::load(&config).unwrap();
    assert_eq!(
        loaded.sources.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [first.as_str()]
    );
    assert_eq!(open_local_store(&config).await.count_records(&second).await.unwrap(), 0);
}

/// `sluice sync --deliver`, `sluice deliver` and `sluice deliveries` on the embedded
/// store, against a Segment-compatible receiver on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_delivers_what_changed_from_the_embedded_store() {
    use sluice_tests::receiver::{Fault, Receiver};
    let db = Database::new(sluice_core::Engine::Postgres).await;
    db.exec(
        "CREATE TABLE people (id int, user_id text, plan text, updated_at timestamptz DEFAULT now());
         INSERT INTO people SELECT g, 'u' || g, 'free' FROM generate_series(1, 1500) g",
    )
    .await;
    let write_key = format!("wk-{}", unique("cli"));
    let receiver = Receiver::start(&write_key).await;
    let dir = std::env::temp_dir().join(unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sluice.yaml");
    let query = "SELECT user_id, plan FROM people WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}";
    std::fs::write(
        &config,
        format!(
            "store: {{kind: embedded, path: store.db}}
secrets:
  db: {db}
  cio: {{write_key: \"${{SLUICE_TEST_WRITE_KEY}}\"}}
sources:
  - id: people
    name: People
    engine: postgres
    secret_id: db
    sync_type: identify
    query: {query}
    destination: {{kind: http, base_url: \"{base}\", secret_id: cio}}
",
            db = db.secret,
            query = serde_json::to_string(query).unwrap(),
            base = receiver.base_url()
        ),
    )
    .unwrap();
    let sluice = |args: &[&str]| {
        let out = sluice_cmd(args, &config, 60)
            .env("SLUICE_TEST_WRITE_KEY", &write_key)
            .env("SLUICE_DESTINATIONS_ALLOW_LOOPBACK", "true")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(&write_key), "the output holds the write key: {text}");
        (out.status.success(), text)
    };
    let (ok, out) = sluice(&["sync", "--deliver"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("people: delivered 1500, refused 0, left undelivered 0"),
        "{out}"
    );
    assert_eq!(receiver.by_message_id().len(), 1500);
    let (ok, out) = sluice(&["deliver"]);
    assert!(ok && out.contains("people: delivered 0,"), "nothing changed: {out}");

    // Changed rows while the destination is down: the command fails, says why, and
    // the waiting ones are listed; `--replay-failed` sends them.
    db.exec("UPDATE people SET plan = 'pro', updated_at = now() WHERE id <= 3")
        .await;
    receiver.inject((0..5).map(|_| Fault::Status(500, None)));
    let (ok, out) = sluice(&["sync", "--deliver"]);
    assert!(
        !ok && out.contains("left undelivered 3") && out.contains("HTTP 500"),
        "{out}"
    );
    let (ok, out) = sluice(&["deliveries", "--source", "people", "--status", "waiting"]);
    assert!(ok && out.matches(" waiting, ").count() == 3, "{out}");
    let (ok, out) = sluice(&["deliver", "--replay-failed"]);
    assert!(ok && out.contains("people: delivered 3,"), "{out}");
    let plans: Vec<_> = receiver
        .calls()
        .iter()
        .rev()
        .take(3)
        .map(|c| c["traits"]["plan"].clone())
        .collect();
    assert_eq!(plans, ["pro", "pro", "pro"]);
    let (_, out) = sluice(&["deliver", "--source", "nope"]);
    assert!(out.contains("the config has no source `nope`"), "{out}");
}

/// Every command, at the most verbose log level, with credentials that can be found
/// again: a database password, an SSH private key and a write key. None of them may
/// appear in any output line, error or run-log entry, whether the command works or
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_shows_a_credential_even_at_trace_level() {
    use sluice_core::{DeliveryLog, RunLog};
    use sluice_tests::receiver::{Fault, Receiver};
    let db = Database::new(sluice_core::Engine::Postgres).await;
    db.create_sales(30).await;
    let role = unique("leak");
    let password = format!("pw-LEAK-{role}");
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT SELECT ON sales TO {role}"
    ))
    .await;
    let ssh_dir = std::env::var("SLUICE_TEST_SSH_DIR").unwrap_or_else(|_| "/var/lib/sluice-tests/ssh".into());
    let private_key = std::fs::read_to_string(format!("{ssh_dir}/ed25519")).unwrap();
    let host_key = std::fs::read_to_string(format!("{ssh_dir}/host_ed25519.pub")).unwrap();
    let ssh_port: u16 = std::env::var("SLUICE_TEST_SSH_PORT").map_or(2222, |p| p.parse().unwrap());
    let write_key = format!("wk-LEAK-{}", unique("k"));
    let receiver = Receiver::start(&write_key).await;

    let mut secret = db.secret.clone();
    secret["username"] = role.clone().into();
    secret["password"] = password.clone().into();
    secret["ssh_tunnel"] = serde_json::json!({"host": "127.0.0.1", "port": ssh_port, "username": "sluicetunnel",
                                              "private_key": private_key, "host_key": host_key});
    // The test server trusts loopback logins, so the failing source names a database
    // that is not there; its error still passes through the code that writes errors.
    let mut wrong = secret.clone();
    wrong["database"] = format!("{}_absent", db.name).into();
    let dir = std::env::temp_dir().join(unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sluice.yaml");
    let query = serde_json::to_string(
        "SELECT id AS user_id, amount FROM sales WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "store: {{kind: embedded, path: store.db}}
secrets:
  db: {secret}
  wrong: {wrong}
  cio: {{write_key: \"{write_key}\"}}
sources:
  - {{id: people, name: People, engine: postgres, secret_id: db, sync_type: identify, query: {query},
     destination: {{kind: http, base_url: \"{base}\", secret_id: cio}}}}
  - {{id: refused, name: Refused, engine: postgres, secret_id: wrong, sync_type: identify, query: {query}}}
",
            base = receiver.base_url()
        ),
    )
    .unwrap();
    // The key's base64 lines, each recognisable on its own.
    let key_lines: Vec<&str> = private_key.lines().filter(|l| !l.starts_with("-----")).collect();
    let credentials: Vec<&str> = [password.as_str(), write_key.as_str()]
        .into_iter()
        .chain(key_lines)
        .collect();
    let leaks = |text: &str| credentials.iter().find(|c| text.contains(*c)).map(|c| c.to_string());

    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["sync", "--deliver"],
        vec!["sync", "--json", "--deliver"],
        vec!["deliver", "--replay-failed"],
        vec!["deliveries", "--source", "people"],
        vec!["preview", "--source", "people"],
        vec!["preview", "--source", "refused", "--json"],
        vec!["backfill", "--source", "people", "--start", &yesterday, "--end", &today],
        vec![
            "backfill", "--source", "refused", "--start", &yesterday, "--end", &today,
        ],
        vec!["runs", "--source", "people"],
        vec!["runs", "--source", "refused"],
        vec!["sources", "list"],
        vec!["sources", "show", "--source", "people"],
    ];
    let mut outcomes = Vec::new();
    for (i, args) in commands.iter().enumerate() {
        if i == 1 {
            // Changed rows, and a destination that refuses the key.
            db.exec("UPDATE sales SET amount = amount + 1, updated_at = now() WHERE id <= 5")
                .await;
            receiver.inject((0..20).map(|_| Fault::Status(401, None)));
        }
        let out = sluice_cmd(args, &config, 60)
            .env("SLUICE_LOG", "trace")
            .env("SLUICE_DESTINATIONS_ALLOW_LOOPBACK", "true")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            leaks(&text).is_none(),
            "`sluice {}` shows {:?}:\n{text}",
            args.join(" "),
            leaks(&text)
        );
        outcomes.push((args.join(" "), out.status.success(), text));
    }
    // The paths ran: a sync through the tunnel and its delivery, a database that is not
    // there, a destination that refuses the key.
    let (_, ok, text) = &outcomes[0];
    assert!(
        !ok && text.contains("people: delivered 30") && text.contains("does not exist"),
        "{text}"
    );
    assert!(outcomes[1].2.contains("401"), "{}", outcomes[1].2);
    assert_eq!(receiver.by_message_id().len(), 30, "the calls reached the destination");
    assert!(
        outcomes[0].2.contains("TRACE"),
        "the most verbose logs were searched too"
    );

    let store = sluice_local::EmbeddedStore::open(&dir.join("store.db")).await.unwrap();
    for id in ["people", "refused"] {
        let runs = store.list_runs(id, 50, None).await.unwrap();
        assert!(!runs.is_empty(), "{id} ran");
        let log = serde_json::to_string(&runs).unwrap();
        assert!(leaks(&log).is_none(), "the run log of {id} holds {:?}", leaks(&log));
    }
    let deliveries = store.list_deliveries("people", None, 100, None).await.unwrap();
    let log = serde_json::to_string(&deliveries).unwrap();
    assert!(leaks(&log).is_none(), "the delivery log holds {:?}", leaks(&log));
}

/// Secrets of every wrong shape, each holding text to find again: a password that is a
/// number, a fraction or a list, an SSH tunnel given as a JSON string (whole or cut
/// short), a truncated PEM key, a port, TLS mode or user name of the wrong type, a
/// BigQuery service account whose key is not a key or not a string, a Snowflake key cut
/// short, a write key that is not a string. No command shows any of that text, whether
/// its source works or fails, and neither does the run log. What the Secrets Manager
/// console and YAML store is accepted: a whole-number password is its text, and an
/// `ssh_tunnel` holding JSON in a string is the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_shows_any_part_of_a_malformed_secret() {
    use sluice_core::RunLog;
    use sluice_tests::receiver::Receiver;
    let db = Database::new(sluice_core::Engine::Postgres).await;
    db.create_sales(10).await;
    let u = unique("m");
    let leak = |what: &str| format!("LEAK-{what}-{u}");
    let ssh_dir = std::env::var("SLUICE_TEST_SSH_DIR").unwrap_or_else(|_| "/var/lib/sluice-tests/ssh".into());
    let private_key = std::fs::read_to_string(format!("{ssh_dir}/ed25519")).unwrap();
    let host_key = std::fs::read_to_string(format!("{ssh_dir}/host_ed25519.pub")).unwrap();
    let ssh_port: u16 = std::env::var("SLUICE_TEST_SSH_PORT").map_or(2222, |p| p.parse().unwrap());
    let tunnel = serde_json::json!({"host": "127.0.0.1", "port": ssh_port, "username": "sluicetunnel",
                                    "private_key": private_key, "host_key": host_key});
    let key_lines: Vec<&str> = private_key.lines().filter(|l| !l.starts_with("-----")).collect();
    let half_pem = |body: &str| format!("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC{body}\n");
    let receiver = Receiver::start("wk-right").await;

    let with = |patch: serde_json::Value| {
        let mut secret = db.secret.clone();
        for (k, v) in patch.as_object().unwrap() {
            secret[k] = v.clone();
        }
        secret
    };
    let tunnel_with = |field: &str, value: serde_json::Value| {
        let mut t = tunnel.clone();
        t[field] = value;
        t
    };
    let service_account = |key: serde_json::Value| serde_json::json!({"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", "private_key": key});
    let bigquery = |account: serde_json::Value| {
        serde_json::json!({"engine": "bigquery", "host": "127.0.0.1", "port": bigquery_port(), "tls": "disable",
                           "database": BIGQUERY_PROJECT, "schema": "none", "service_account": account})
    };
    // The tunnel as the console's key/value editor stores it: its JSON in a string.
    let tunnel_json = serde_json::to_string(&tunnel).unwrap();
    // (source id, engine, secret, whether it works)
    let secrets: Vec<(&str, &str, serde_json::Value, bool)> = vec![
        (
            "numeric_pw",
            "postgres",
            with(serde_json::json!({"password": 98765432101_u64})),
            true,
        ),
        (
            "fraction_pw",
            "postgres",
            with(serde_json::json!({"password": 9876.54321})),
            false,
        ),
        (
            "list_pw",
            "postgres",
            with(serde_json::json!({"password": [leak("list")]})),
            false,
        ),
        (
            "object_user",
            "postgres",
            with(serde_json::json!({"username": {"name": leak("user")}})),
            false,
        ),
        (
            "port_text",
            "postgres",
            with(serde_json::json!({"port": leak("port")})),
            false,
        ),
        (
            "tls_text",
            "postgres",
            with(serde_json::json!({"tls": leak("tls")})),
            false,
        ),
        (
            "tunnel_string",
            "postgres",
            with(serde_json::json!({"ssh_tunnel": tunnel_json.clone()})),
            true,
        ),
        (
            "tunnel_cut",
            "postgres",
            with(serde_json::json!({"ssh_tunnel": &tunnel_json[..tunnel_json.len() / 2]})),
            false,
        ),
        (
            "tunnel_pem_cut",
            "postgres",
            with(serde_json::json!({"ssh_tunnel": tunnel_with("private_key", half_pem(&leak("pem")).into())})),
            false,
        ),
        (
            "tunnel_port_text",
            "postgres",
            with(serde_json::json!({"ssh_tunnel": tunnel_with("port", leak("sshport").into())})),
            false,
        ),
        (
            "tunnel_pass_list",
            "postgres",
            with(serde_json::json!({"ssh_tunnel": tunnel_with("passphrase", serde_json::json!([leak("pass")]))})),
            false,
        ),
        (
            "sa_bad_key",
            "bigquery",
            bigquery(
                serde_json::to_string(&service_account(half_pem(&leak("sa")).into()))
                    .unwrap()
                    .into(),
            ),
            false,
        ),
        (
            "sa_key_number",
            "bigquery",
            bigquery(service_account(serde_json::json!(12345678987654321_u64))),
            false,
        ),
        (
            "sa_not_json",
            "bigquery",
            bigquery(format!("{{\"private_key\": \"{}", leak("sajson")).into()),
            false,
        ),
        (
            "sf_key_cut",
            "snowflake",
            serde_json::json!({"engine": "snowflake", "account": "sluicetest", "host": "127.0.0.1",
                               "port": snowflake_port(), "tls": "disable", "database": "d", "username": "u",
                               "private_key": half_pem(&leak("sf"))}),
            false,
        ),
    ];
    let query = serde_json::to_string(
        "SELECT id AS user_id, amount FROM sales WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}",
    )
    .unwrap();
    let mut yaml = format!(
        "store: {{kind: embedded, path: store.db}}\nsecrets:\n  cio_bad: {{write_key: {{key: \"{}\"}}}}\n",
        leak("wk")
    );
    for (id, _, secret, _) in &secrets {
        yaml += &format!("  {id}: {secret}\n");
    }
    yaml += "sources:\n";
    for (id, engine, _, _) in &secrets {
        let destination = match *id {
            "numeric_pw" => format!(
                ",\n     destination: {{kind: http, base_url: \"{}\", secret_id: cio_bad}}",
                receiver.base_url()
            ),
            _ => String::new(),
        };
        yaml += &format!(
            "  - {{id: {id}, name: {id}, engine: {engine}, secret_id: {id}, sync_type: identify, query: {query}{destination}}}\n"
        );
    }
    let dir = std::env::temp_dir().join(unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sluice.yaml");
    std::fs::write(&config, &yaml).unwrap();

    let credentials: Vec<String> = [
        "98765432101",
        "9876.54321",
        "12345678987654321",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    ]
    .into_iter()
    .map(String::from)
    .chain(
        [
            "list", "user", "port", "tls", "pem", "sshport", "pass", "sa", "sajson", "sf", "wk",
        ]
        .map(leak),
    )
    .chain(key_lines.iter().map(|l| l.to_string()))
    .collect();
    let leaks = |text: &str| credentials.iter().find(|c| text.contains(c.as_str())).cloned();

    let mut commands: Vec<Vec<&str>> = vec![
        vec!["sync", "--deliver"],
        vec!["sync", "--json"],
        vec!["deliver", "--replay-failed"],
        vec!["sources", "list"],
    ];
    for (id, ..) in &secrets {
        commands.push(vec!["preview", "--source", id, "--json"]);
        commands.push(vec!["preview", "--source", id]);
        commands.push(vec!["runs", "--source", id]);
        commands.push(vec!["sources", "show", "--source", id]);
    }
    let mut outputs = Vec::new();
    for args in &commands {
        let out = sluice_cmd(args, &config, 60)
            .env("SLUICE_LOG", "trace")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            leaks(&text).is_none(),
            "`sluice {}` shows {:?}:\n{text}",
            args.join(" "),
            leaks(&text)
        );
        outputs.push(text);
    }
    assert!(outputs[0].contains("DEBUG"), "the verbose logs were searched too");

    // Each source ran: the console's shapes worked, the others failed naming the field.
    let store = sluice_local::EmbeddedStore::open(&dir.join("store.db")).await.unwrap();
    let expected_field = |id: &str| match id {
        "fraction_pw" => "`password`: expected a string, got a number with a fraction",
        "list_pw" => "`password`: expected a string",
        "object_user" => "`username`: expected a string",
        "port_text" => "`port`: expected u16",
        "tls_text" => "`tls`: expected one of",
        "tunnel_cut" => "`ssh_tunnel`: expected an object, or the object's JSON in a string; the string is not JSON",
        "tunnel_pem_cut" => "ssh_tunnel.private_key cannot be read",
        "tunnel_port_text" => "`ssh_tunnel`: expected an object; in it, `port`: expected u16",
        "tunnel_pass_list" => "`ssh_tunnel`: expected an object; in it, `passphrase`: expected a string",
        "sa_bad_key" => "service_account.private_key is not",
        "sa_key_number" => "`service_account.private_key`: expected a string",
        "sa_not_json" => {
            "`service_account`: expected an object, or the object's JSON in a string; the string is not JSON"
        }
        "sf_key_cut" => "private_key is not",
        other => panic!("{other} works"),
    };
    for (id, _, _, works) in &secrets {
        let runs = store.list_runs(id, 50, None).await.unwrap();
        assert!(!runs.is_empty(), "{id} ran");
        let log = serde_json::to_string(&runs).unwrap();
        assert!(leaks(&log).is_none(), "the run log of {id} holds {:?}", leaks(&log));
        let message = runs[0].message.clone().unwrap_or_default();
        if *works {
            assert_eq!(runs[0].status, sluice_core::RunStatus::Succeeded, "{id}: {message}");
        } else {
            assert_eq!(runs[0].status, sluice_core::RunStatus::Failed, "{id}");
            assert!(message.contains(expected_field(id)), "{id}: {message}");
        }
    }
    // The destination's write key is not a string: the delivery says so, and nothing was
    // sent with it.
    assert!(
        outputs[0].contains("secret `cio_bad`") && outputs[0].contains("write_key"),
        "{}",
        outputs[0]
    );
    assert!(
        receiver.by_message_id().is_empty(),
        "nothing was delivered with a malformed key"
    );
    let deliveries = store.list_deliveries("numeric_pw", None, 100, None).await.unwrap();
    let log = serde_json::to_string(&deliveries).unwrap();
    assert!(leaks(&log).is_none(), "the delivery log holds {:?}", leaks(&log));
}
