//! SQL Server up to the wire. No SQL Server runs here (README, "Engines"), so these
//! tests stand at the far end of a loopback socket and read what Sluice's driver sends:
//! the TDS PRELOGIN packet (the encryption the secret's `tls` asks for) and the LOGIN7
//! record (the Azure `user@server` login name, the password, the database, the
//! application name and read-only intent). Then the socket closes, and the error the
//! user sees must name the cause.

use std::time::Duration;

use sluice_core::{ConnectionSecret, SourceErrorKind, SourceReader};
use sluice_sources::SqlReader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One TDS packet: its type and payload.
async fn read_packet(socket: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 8];
    socket.read_exact(&mut header).await.unwrap();
    let length = u16::from_be_bytes([header[2], header[3]]) as usize;
    let mut payload = vec![0u8; length - 8];
    socket.read_exact(&mut payload).await.unwrap();
    (header[0], payload)
}

/// The value of PRELOGIN option `token`.
fn prelogin_option(payload: &[u8], token: u8) -> Vec<u8> {
    let mut at = 0;
    while payload[at] != 0xff {
        let offset = u16::from_be_bytes([payload[at + 1], payload[at + 2]]) as usize;
        let length = u16::from_be_bytes([payload[at + 3], payload[at + 4]]) as usize;
        if payload[at] == token {
            return payload[offset..offset + length].to_vec();
        }
        at += 5;
    }
    panic!("PRELOGIN has no option {token}");
}

/// A server's PRELOGIN answer: version 16.0, and `encryption`.
fn prelogin_reply(encryption: u8) -> Vec<u8> {
    let payload: Vec<u8> = [
        &[0x00, 0, 11, 0, 6][..],   // VERSION at 11, 6 bytes
        &[0x01, 0, 17, 0, 1],       // ENCRYPTION at 17, 1 byte
        &[0xff],                    // terminator
        &[16, 0, 0x07, 0xd0, 0, 0], // 16.0.2000
        &[encryption],
    ]
    .concat();
    let length = (payload.len() + 8) as u16;
    let mut packet = vec![0x04, 0x01, (length >> 8) as u8, length as u8, 0, 0, 1, 0];
    packet.extend(payload);
    packet
}

/// The UTF-16 string at LOGIN7's offset/length pair at `field`.
fn login_string(login: &[u8], field: usize) -> Vec<u16> {
    let offset = u16::from_le_bytes([login[field], login[field + 1]]) as usize;
    let chars = u16::from_le_bytes([login[field + 2], login[field + 3]]) as usize;
    login[offset..offset + 2 * chars]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn text(units: Vec<u16>) -> String {
    String::from_utf16(&units).unwrap()
}

/// LOGIN7 sends the password with each byte's nibbles swapped and XORed with 0xA5.
fn password(login: &[u8]) -> String {
    let offset = u16::from_le_bytes([login[44], login[45]]) as usize;
    let chars = u16::from_le_bytes([login[46], login[47]]) as usize;
    let bytes: Vec<u8> = login[offset..offset + 2 * chars]
        .iter()
        .map(|b| (b ^ 0xa5).rotate_left(4))
        .collect();
    text(bytes.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
}

fn secret(port: u16, tls: &str) -> ConnectionSecret {
    serde_json::from_value(serde_json::json!({
        "engine": "sqlserver", "host": "127.0.0.1", "port": port, "database": "sales",
        "username": "sluice_reader@myserver", "password": "s3cret-Pw", "tls": tls
    }))
    .unwrap()
}

#[tokio::test]
async fn login_carries_the_azure_user_the_database_and_read_only_intent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let (kind, prelogin) = read_packet(&mut socket).await;
        assert_eq!(kind, 0x12, "PRELOGIN first");
        assert_eq!(
            prelogin_option(&prelogin, 0x01),
            [0x02],
            "tls: disable offers no encryption"
        );
        socket.write_all(&prelogin_reply(0x02)).await.unwrap();
        let (kind, login) = read_packet(&mut socket).await;
        assert_eq!(kind, 0x10, "LOGIN7 next");
        // Closing here is what a server that drops the connection looks like.
        login
    });
    let e = SqlReader
        .open(&secret(port, "disable"), Duration::from_secs(30))
        .await
        .err()
        .expect("the server closed the connection");
    let login = server.await.unwrap();

    assert_eq!(text(login_string(&login, 40)), "sluice_reader@myserver");
    assert_eq!(password(&login), "s3cret-Pw");
    assert_eq!(text(login_string(&login, 48)), "sluice");
    assert_eq!(text(login_string(&login, 68)), "sales");
    assert_eq!(login[26] & 0x20, 0x20, "TypeFlags.fReadOnlyIntent: {:#x}", login[26]);
    let tds_version = u32::from_le_bytes(login[4..8].try_into().unwrap());
    assert!(
        tds_version >= 0x7300_000a,
        "TDS 7.3 or later for date/time types: {tds_version:#x}"
    );

    assert_eq!(e.kind, SourceErrorKind::Connect, "{e}");
    assert!(e.message.contains("closed the connection during login"), "{e}");
    assert!(!e.message.contains("s3cret-Pw"), "{e}");
}

#[tokio::test]
async fn require_and_verify_full_demand_encryption_and_say_so_when_the_server_has_none() {
    for tls in ["require", "verify-full"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (_, prelogin) = read_packet(&mut socket).await;
            socket.write_all(&prelogin_reply(0x02)).await.unwrap();
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
            (prelogin_option(&prelogin, 0x01), rest)
        });
        let e = SqlReader
            .open(&secret(port, tls), Duration::from_secs(30))
            .await
            .err()
            .expect("a server without encryption is refused");
        let (encryption, after) = server.await.unwrap();
        assert_eq!(encryption, [0x03], "tls: {tls} sends ENCRYPT_REQ");
        assert!(after.is_empty(), "tls: {tls}: no login is sent in the clear");
        assert_eq!(e.kind, SourceErrorKind::Tls, "{e}");
        assert!(
            e.message
                .contains(&format!("does not offer encryption, and the secret's tls is {tls}")),
            "{e}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_and_a_missing_host_are_named() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = SqlReader
        .open(&secret(closed, "disable"), Duration::from_secs(30))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind, SourceErrorKind::Connect, "{e}");
    assert!(e.message.contains("cannot reach sqlserver at 127.0.0.1"), "{e}");

    let mut no_host = secret(closed, "disable");
    no_host.host = None;
    let e = SqlReader.open(&no_host, Duration::from_secs(30)).await.err().unwrap();
    assert_eq!(e.kind, SourceErrorKind::Config, "{e}");
    assert!(e.message.contains("database.windows.net"), "{e}");
}
