//! A destination URL cannot turn delivery into a way into the network Sluice runs in:
//! only https to public addresses (loopback only by an explicit setting), checked on
//! the address connected to, after DNS; no redirect followed; at most a few KB of an
//! answer read, and a short cut of it kept in `last_error`. Against a real HTTP
//! receiver on loopback; the private addresses are refused before any packet leaves.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use sluice_core::delivery::{CallSender, DeliverySettings};
use sluice_core::{Budget, Deliverer, DeliveryStatus, Outgoing, SystemClock, WriteKey};
use sluice_destinations::{AddressPolicy, HttpSender, MAX_ANSWER_BYTES};
use sluice_local::FileSecrets;
use sluice_tests::receiver::{Fault, Receiver};
use sluice_tests::*;

const LOOPBACK: AddressPolicy = AddressPolicy { allow_loopback: true };

fn sender(policy: AddressPolicy) -> HttpSender {
    HttpSender::new(policy).unwrap()
}

fn batch() -> Vec<u8> {
    json!({"batch": [{"type": "identify", "userId": "u1", "messageId": "m1"}]})
        .to_string()
        .into_bytes()
}

async fn post(policy: AddressPolicy, url: &str, receiver: &Receiver) -> Result<u16, String> {
    sender(policy)
        .post(url, &WriteKey(receiver.write_key().to_string()), batch())
        .await
        .map(|a| a.status)
        .map_err(|e| e.0)
}

#[tokio::test]
async fn loopback_and_plain_http_are_refused_unless_the_setting_allows_them() {
    let receiver = Receiver::start("wk-loopback").await;
    let port = receiver.addr.port();
    let by_address = format!("{}/v1/batch", receiver.base_url());
    let by_name = format!("http://localhost:{port}/v1/batch");

    // `localhost` is a name: what the resolver answers is what gets checked (over
    // https, so that the scheme is not what refuses it).
    for url in [by_address.clone(), format!("https://localhost:{port}/v1/batch")] {
        let e = post(AddressPolicy::default(), &url, &receiver).await.unwrap_err();
        assert!(
            e.contains("a loopback address") && e.contains("SLUICE_DESTINATIONS_ALLOW_LOOPBACK"),
            "{url}: {e}"
        );
    }
    let e = post(AddressPolicy::default(), &by_name, &receiver).await.unwrap_err();
    assert!(e.contains("https only"), "{e}");
    assert_eq!(receiver.requests(), 0, "nothing reached the receiver");

    // Allowed by the setting, over plain http, by address and by name.
    assert_eq!(post(LOOPBACK, &by_address, &receiver).await, Ok(200));
    assert_eq!(post(LOOPBACK, &by_name, &receiver).await, Ok(200));
    assert_eq!(receiver.requests(), 2);

    // Plain http anywhere else is refused, setting or not, before any lookup.
    let e = post(LOOPBACK, "http://api.segment.io/v1/batch", &receiver)
        .await
        .unwrap_err();
    assert!(e.contains("https only"), "{e}");
}

#[tokio::test]
async fn private_link_local_cgnat_and_metadata_addresses_are_refused_in_every_form() {
    let receiver = Receiver::start("wk-private").await;
    // Even with loopback allowed: none of these is ever connected to.
    for (url, says) in [
        ("https://10.0.0.8/v1/batch", "a private address"),
        ("https://172.20.1.1/v1/batch", "a private address"),
        ("https://192.168.1.1/v1/batch", "a private address"),
        ("https://100.64.0.1/v1/batch", "carrier-grade NAT"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "the cloud metadata service",
        ),
        ("https://169.254.10.1/v1/batch", "a link-local address"),
        (
            "https://[fd00:ec2::254]/latest/meta-data/",
            "the cloud metadata service",
        ),
        (
            "https://[::ffff:169.254.169.254]/v1/batch",
            "the cloud metadata service",
        ),
        ("https://[::ffff:a9fe:a9fe]/v1/batch", "the cloud metadata service"),
        ("https://[64:ff9b::a9fe:a9fe]/v1/batch", "the cloud metadata service"),
        // 169.254.169.254 as one decimal number, as a URL parser reads it.
        ("https://2852039166/v1/batch", "the cloud metadata service"),
        ("https://0.0.0.0/v1/batch", "the unspecified address"),
        ("https://[::]/v1/batch", "the unspecified address"),
        ("https://[fe80::1]/v1/batch", "a link-local address"),
        ("https://[fd12:3456::1]/v1/batch", "a private address"),
    ] {
        let e = post(LOOPBACK, url, &receiver).await.unwrap_err();
        assert!(
            e.contains(says) && e.contains("Sluice delivers only to public addresses"),
            "{url}: {e}"
        );
    }
    assert_eq!(receiver.requests(), 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let receiver = Receiver::start("wk-redirect").await;
    let elsewhere = Receiver::start("wk-redirect").await;
    receiver.inject([Fault::Redirect(format!("{}/v1/batch", elsewhere.base_url()))]);
    let e = post(LOOPBACK, &format!("{}/v1/batch", receiver.base_url()), &receiver)
        .await
        .unwrap_err();
    assert!(
        e.contains("HTTP 302") && e.contains("follows no redirect") && e.contains("base_url"),
        "{e}"
    );
    assert_eq!(receiver.requests(), 1);
    assert_eq!(elsewhere.requests(), 0, "the write key went nowhere else");
}

#[tokio::test]
async fn an_endless_answer_is_read_to_a_few_kilobytes_and_last_error_keeps_a_short_cut() {
    let receiver = Receiver::start("wk-endless").await;
    let url = format!("{}/v1/batch", receiver.base_url());
    receiver.inject([Fault::Endless(400)]);
    // The body never ends: a sender that read it whole would wait for its timeout.
    let answer = sender(LOOPBACK)
        .post(&url, &WriteKey("wk-endless".into()), batch())
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    assert!(
        !answer.body.is_empty() && answer.body.len() <= MAX_ANSWER_BYTES,
        "{}",
        answer.body.len()
    );

    // Through the delivery: the refused call's state keeps a short cut of the answer.
    receiver.inject([Fault::Endless(400)]);
    let store = store(StoreKind::Embedded).await;
    let db = Database::new(sluice_core::Engine::Sqlite).await;
    let mut source = source(&unique("ssrf"), &db, "SELECT 1");
    source.sync_type = sluice_core::SyncType::Identify;
    source.destination = Some(
        serde_json::from_value(json!({"kind": "http", "base_url": receiver.base_url(), "secret_id": "cio"})).unwrap(),
    );
    let deliverer = Deliverer {
        sender: Arc::new(sender(LOOPBACK)),
        secrets: Arc::new(FileSecrets::new(BTreeMap::from([(
            "cio".to_string(),
            json!({"write_key": "wk-endless"}),
        )]))),
        store: store.clone(),
        clock: Arc::new(SystemClock),
        settings: DeliverySettings::default(),
    };
    let call = Outgoing {
        key: "u1".into(),
        hash: "h1".into(),
        call: json!({"type": "identify", "userId": "u1", "messageId": "m1"})
            .as_object()
            .unwrap()
            .clone(),
        parked: 0,
    };
    let report = deliverer
        .deliver(&source, vec![call], &Budget::default())
        .await
        .unwrap();
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    let states = store
        .list_deliveries(&source.id, Some(DeliveryStatus::Failed), 10, None)
        .await
        .unwrap();
    let last_error = states[0].last_error.as_deref().unwrap();
    assert!(
        last_error.contains("HTTP 400") && last_error.contains("xxxx"),
        "{last_error}"
    );
    assert!(last_error.chars().count() <= 300, "{}", last_error.len());
}
