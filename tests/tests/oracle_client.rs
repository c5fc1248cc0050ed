//! Oracle up to the client library. No Oracle server runs here (README, "Engines"),
//! and no Instant Client is installed by default, which is the first thing a user
//! meets: the error must say how to ship the library with the function.

use std::time::Duration;

use sluice_core::{ConnectionSecret, SourceErrorKind, SourceReader};
use sluice_sources::SqlReader;

fn instant_client_installed() -> bool {
    let ldconfig = std::process::Command::new("ldconfig").arg("-p").output();
    let in_cache = ldconfig.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libclntsh"));
    in_cache || std::env::var("LD_LIBRARY_PATH").is_ok_and(|p| p.contains("instantclient"))
}

#[tokio::test]
async fn a_missing_instant_client_or_an_absent_server_is_named() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret: ConnectionSecret = serde_json::from_value(serde_json::json!({
        "engine": "oracle", "host": "127.0.0.1", "port": closed, "database": "FREEPDB1",
        "username": "sluice", "password": "oracle-Pw1", "tls": "disable"
    }))
    .unwrap();
    let e = SqlReader.open(&secret, Duration::from_secs(30)).await.err().unwrap();
    assert!(!e.message.contains("oracle-Pw1"), "{e}");
    if instant_client_installed() {
        assert_eq!(e.kind, SourceErrorKind::Connect, "{e}");
        assert!(e.message.contains("check host and port"), "{e}");
    } else {
        assert_eq!(e.kind, SourceErrorKind::Config, "{e}");
        assert!(e.message.contains("Instant Client layer"), "{e}");
        assert!(e.message.contains("LD_LIBRARY_PATH"), "{e}");
    }
}

#[tokio::test]
async fn oracle_through_an_ssh_tunnel_uses_the_listener_port() {
    // The tunnel's far end defaults to Oracle's listener port, which the test bastion
    // (infra/ssh.sh: PermitOpen 5432 and 3306 only) refuses to forward to.
    let port: u16 = std::env::var("SLUICE_TEST_SSH_PORT").map_or(2222, |p| p.parse().unwrap());
    let dir = std::env::var("SLUICE_TEST_SSH_DIR").unwrap_or_else(|_| "/var/lib/sluice-tests/ssh".into());
    let key = std::fs::read_to_string(format!("{dir}/ed25519")).expect("the test SSH keys (infra/services.sh)");
    let host_key = std::fs::read_to_string(format!("{dir}/host_ed25519.pub")).unwrap();
    let secret: ConnectionSecret = serde_json::from_value(serde_json::json!({
        "engine": "oracle", "host": "127.0.0.1", "database": "FREEPDB1", "username": "u", "password": "p",
        "tls": "disable",
        "ssh_tunnel": {"host": "127.0.0.1", "port": port, "username": "sluicetunnel",
                       "private_key": key, "host_key": host_key.trim()}
    }))
    .unwrap();
    let e = SqlReader.open(&secret, Duration::from_secs(30)).await.err().unwrap();
    assert!(e.message.contains("refused to forward to 127.0.0.1:1521"), "{e}");
}
