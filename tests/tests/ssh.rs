//! SSH tunnels through a real OpenSSH server on loopback (infra/ssh.sh) to PostgreSQL
//! and MariaDB: each key format, host-key verification (pinned, or trusted on first
//! use), and the errors a user meets.

use serde_json::json;
use sluice_core::{Engine, RunStatus, Trigger};
use sluice_tests::*;

fn ssh_file(name: &str) -> String {
    let dir = std::env::var("SLUICE_TEST_SSH_DIR").unwrap_or_else(|_| "/var/lib/sluice-tests/ssh".into());
    std::fs::read_to_string(format!("{dir}/{name}")).expect("the SSH test keys (start infra/services.sh)")
}

fn ssh_port() -> u16 {
    std::env::var("SLUICE_TEST_SSH_PORT").map_or(2222, |p| p.parse().unwrap())
}

/// `db`'s secret reached through the test bastion with the client key `key`.
fn through_bastion(db: &Database, key: &str, host_key: &str) -> serde_json::Value {
    let mut secret = db.secret.clone();
    secret["ssh_tunnel"] = json!({
        "host": "127.0.0.1",
        "port": ssh_port(),
        "username": "sluicetunnel",
        "private_key": ssh_file(key),
        "host_key": host_key,
    });
    secret
}

fn host_key() -> String {
    ssh_file("host_ed25519.pub")
}

/// A key as its type and base64, the way Sluice records it.
fn key_line(file: &str) -> String {
    ssh_file(file).split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// Syncs `db`'s sales through `secret`; the run as it ended.
async fn sync_with(db: &Database, secret: serde_json::Value) -> sluice_core::Run {
    let store = store(StoreKind::Embedded).await;
    let src = source(&unique("ssh"), db, SALES_QUERY);
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), [(src.secret_id.clone(), secret)].into());
    let run = svc.run(&src.id, Trigger::Manual, None).await.unwrap();
    if run.status == RunStatus::Succeeded {
        assert_eq!(store.count_records(&src.id).await.unwrap(), run.rows_written);
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_through_the_tunnel_with_each_key_format() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(300).await;
    for key in ["rsa_pem", "rsa_openssh", "ed25519"] {
        let run = sync_with(&db, through_bastion(&db, key, &host_key())).await;
        assert_eq!(
            (run.status, run.rows_written),
            (RunStatus::Succeeded, 300),
            "{key}: {:?}",
            run.message
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_through_the_tunnel() {
    let db = Database::new(Engine::Mysql).await;
    db.create_sales(300).await;
    let run = sync_with(&db, through_bastion(&db, "ed25519", &host_key())).await;
    assert_eq!(
        (run.status, run.rows_written),
        (RunStatus::Succeeded, 300),
        "{:?}",
        run.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_failures_name_the_cause_and_the_fix() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(10).await;
    let fails = |secret: serde_json::Value, expected: &'static str| {
        let db = &db;
        async move {
            let run = sync_with(db, secret).await;
            assert_eq!(run.status, RunStatus::Failed);
            let message = run.message.unwrap();
            assert!(message.contains(expected), "expected {expected:?} in: {message}");
            assert!(!message.contains("PRIVATE KEY"), "{message}");
            message
        }
    };

    // A key the bastion does not know.
    fails(
        through_bastion(&db, "stranger", &host_key()),
        "refused the key for user sluicetunnel",
    )
    .await;

    // A host key other than the bastion's: refused, naming both keys.
    let message = fails(
        through_bastion(&db, "ed25519", &ssh_file("ed25519.pub")),
        "set ssh_tunnel.host_key in the secret to the new key",
    )
    .await;
    assert!(
        message.contains(&format!("showed the host key {}", key_line("host_ed25519.pub")))
            && message.contains(&format!("pinned to {}", key_line("ed25519.pub"))),
        "{message}"
    );

    // An unreachable bastion.
    let mut secret = through_bastion(&db, "ed25519", &host_key());
    secret["ssh_tunnel"]["port"] = json!(1);
    fails(secret, "cannot reach the SSH bastion 127.0.0.1:1").await;

    // A database the bastion may not forward to.
    let mut secret = through_bastion(&db, "ed25519", &host_key());
    secret["port"] = json!(5433);
    fails(secret, "refused to forward to 127.0.0.1:5433").await;

    // Unreadable key and host key.
    let mut secret = through_bastion(&db, "ed25519", &host_key());
    secret["ssh_tunnel"]["private_key"] = json!("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n");
    fails(secret, "ssh_tunnel.private_key cannot be read").await;
    fails(
        through_bastion(&db, "ed25519", "ssh-ed25519 nonsense"),
        "ssh_tunnel.host_key is not an OpenSSH public key line",
    )
    .await;

    // verify-full cannot hold through a tunnel, and says what to use.
    let mut secret = through_bastion(&db, "ed25519", &host_key());
    secret["tls"] = json!("verify-full");
    fails(secret, "use require").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_host_key_the_first_tunnel_records_it_and_a_changed_key_is_refused() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(20).await;
    let id = unique("tofu");
    let config = local_config(&db, StoreKind::Embedded, &id, SALES_QUERY);
    // As Plecto asks for it: no host key in the secret.
    let mut secret = through_bastion(&db, "ed25519", "");
    secret["ssh_tunnel"].as_object_mut().unwrap().remove("host_key");
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, yaml.replace(&db.secret.to_string(), &secret.to_string())).unwrap();
    let run = |args: &[&str]| {
        let out = sluice_cmd(args, &config, 60).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };

    // First contact: trusted, recorded, shown.
    let (ok, text) = run(&["sync", "--source", &id]);
    assert!(ok && text.contains("written 20"), "{text}");
    let store = open_local_store(&config).await;
    let state = store.get_source(&id).await.unwrap().unwrap();
    assert_eq!(state.ssh_host_key, Some(key_line("host_ed25519.pub")));
    let (ok, text) = run(&["sources", "show", "--source", &id]);
    assert!(
        ok && text.contains(&format!("ssh_host_key: {}", key_line("host_ed25519.pub"))),
        "{text}"
    );
    let (ok, text) = run(&["sync", "--source", &id]);
    assert!(ok && text.contains("succeeded"), "the recorded key is met: {text}");

    // The bastion's key is not the one recorded (the server was replaced, or worse).
    store.record_ssh_host_key(&id, &key_line("ed25519.pub")).await.unwrap();
    let (_, text) = run(&["sync", "--source", &id]);
    assert!(
        text.contains(&format!("showed the host key {}", key_line("host_ed25519.pub")))
            && text.contains(&format!("pinned to {}", key_line("ed25519.pub")))
            && text.contains("failed"),
        "{text}"
    );
    assert_eq!(store.count_records(&id).await.unwrap(), 20, "nothing stored is touched");

    // Pinning the new key in the secret accepts it, and it is recorded.
    let yaml = std::fs::read_to_string(&config).unwrap();
    let mut pinned = secret.clone();
    pinned["ssh_tunnel"]["host_key"] = json!(host_key());
    std::fs::write(&config, yaml.replace(&secret.to_string(), &pinned.to_string())).unwrap();
    let (ok, text) = run(&["sync", "--source", &id]);
    assert!(ok && text.contains("succeeded"), "{text}");
    let state = store.get_source(&id).await.unwrap().unwrap();
    assert_eq!(state.ssh_host_key, Some(key_line("host_ed25519.pub")));
}
