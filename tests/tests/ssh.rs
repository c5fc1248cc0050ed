//! SSH tunnels through a real OpenSSH server on loopback (infra/ssh.sh) to PostgreSQL
//! and MariaDB: each key format, host-key verification, and the errors a user meets.

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

    // A host key other than the bastion's: refused, naming the key it showed.
    let message = fails(
        through_bastion(&db, "ed25519", &ssh_file("ed25519.pub")),
        "showed a host key other than the secret's ssh_tunnel.host_key",
    )
    .await;
    let real = host_key();
    let real: Vec<&str> = real.split_whitespace().take(2).collect();
    assert!(message.contains(&real.join(" ")), "{message}");

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
