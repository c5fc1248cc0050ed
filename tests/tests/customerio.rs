//! Customer.io-style sync types end to end: PostgreSQL and SQL Server (Babelfish) rows
//! become identify, track, group, page, screen and alias calls in DynamoDB (moto), from
//! queries written as each engine's users write them. For each type: the stored
//! calls have the spec's shape, a second sync of the same rows writes nothing, an
//! update changes the call in place, and rows missing a required value are rejected
//! with the reason while the others go through.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value as Json, json};
use sluice_core::{Engine, Run, RunStatus, Store, SyncService, SyncType, Trigger};
use sluice_tests::*;

struct Scenario {
    db: Database,
    store: Arc<dyn Store>,
    svc: SyncService,
    id: String,
}

impl Scenario {
    /// A table made by `ddl` (its rows stamped now, so every sync reads them again
    /// through the lookback) and a source of `sync_type` over `query`.
    async fn new(engine: Engine, sync_type: SyncType, ddl: &str, query: &str) -> Self {
        let db = Database::new(engine).await;
        db.exec(ddl).await;
        let store = store(StoreKind::Dynamo).await;
        let mut src = source(&unique("cio"), &db, query);
        src.sync_type = sync_type;
        store.put_source(&src).await.unwrap();
        let svc = service(store.clone(), secrets_for(&src, &db));
        Scenario {
            db,
            store,
            svc,
            id: src.id,
        }
    }

    async fn sync(&self) -> Run {
        let run = self.svc.run(&self.id, Trigger::Schedule, None).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
        run
    }

    async fn call(&self, key: &str) -> BTreeMap<String, Json> {
        self.store
            .get_record(&self.id, key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no call with key {key}"))
            .fields
    }

    /// The first sync: `written` calls, and the rejects' reasons.
    async fn first_sync(&self, written: u64, reasons: &[&str]) -> Run {
        let run = self.sync().await;
        assert_eq!(
            (run.rows_written, run.rows_rejected),
            (written, reasons.len() as u64),
            "{run:?}"
        );
        let got: Vec<&str> = run.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(got, reasons);
        assert_eq!(self.store.count_records(&self.id).await.unwrap(), written);
        run
    }

    /// Syncing the same rows again adds and rewrites nothing; `update` then changes one
    /// call in place.
    async fn resync_then_update(&self, calls: u64, update: &str) {
        let again = self.sync().await;
        assert_eq!((again.rows_written, again.rows_unchanged), (0, calls), "{again:?}");
        self.db.exec(update).await;
        let changed = self.sync().await;
        assert_eq!(
            (changed.rows_written, changed.rows_unchanged),
            (1, calls - 1),
            "{changed:?}"
        );
        assert_eq!(self.store.count_records(&self.id).await.unwrap(), calls);
    }
}

fn is_message_id(v: &Json) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

const WINDOW: &str = "WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}";

/// The PostgreSQL or the T-SQL text of a statement.
fn sql<'a>(engine: Engine, postgres: &'a str, tsql: &'a str) -> &'a str {
    match engine {
        Engine::Postgres => postgres,
        _ => tsql,
    }
}

/// "Now" in an UPDATE.
fn now(engine: Engine) -> &'static str {
    sql(engine, "now()", "SYSUTCDATETIME()")
}

macro_rules! on_both_engines {
    ($($scenario:ident),*) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario(sluice_core::Engine::Postgres).await;
            })*
        }
        mod sqlserver {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario(sluice_core::Engine::Sqlserver).await;
            })*
        }
    };
}

on_both_engines!(identify, track, group, page, screen, alias);

async fn identify(e: Engine) {
    // Row 3 has an empty user id and an email: Customer.io identifies it by the email.
    let s = Scenario::new(
        e,
        SyncType::Identify,
        sql(
            e,
            "CREATE TABLE people (id int, user_id text, anonymous_id text, email text, plan text, ip text,
                                  active boolean, prefs jsonb, integrations jsonb,
                                  updated_at timestamptz DEFAULT now());
             INSERT INTO people (id, user_id, anonymous_id, email, plan, ip, active, prefs, integrations) VALUES
               (1, 'u1', NULL, 'ada@example.com', 'pro', '10.0.0.1', true, '{\"theme\": \"dark\"}',
                '{\"All\": false, \"Customer.io\": true}'),
               (2, NULL, 'anon-2', NULL, 'free', NULL, NULL, NULL, NULL),
               (3, '', NULL, 'cy@example.com', 'free', NULL, NULL, NULL, NULL),
               (4, NULL, NULL, NULL, 'free', NULL, NULL, NULL, NULL)",
            // SQL Server has no JSON type (JSON is text), and apps keep Unix times in
            // integer columns.
            "CREATE TABLE people (id int, login nvarchar(50), anonymous_id nvarchar(50), email nvarchar(200),
                                  [plan] nvarchar(20), ip varchar(45), active bit, integrations nvarchar(200),
                                  updated_epoch bigint, updated_at datetime2(6) DEFAULT SYSUTCDATETIME());
             INSERT INTO people (id, login, anonymous_id, email, [plan], ip, active, integrations, updated_epoch) VALUES
               (1, 'u1', NULL, 'ada@example.com', 'pro', '10.0.0.1', 1, '{\"All\": false, \"Customer.io\": true}',
                DATEDIFF_BIG(second, '1970-01-01', SYSUTCDATETIME())),
               (2, NULL, 'anon-2', NULL, 'free', NULL, NULL, NULL, DATEDIFF_BIG(second, '1970-01-01', SYSUTCDATETIME())),
               (3, '', NULL, 'cy@example.com', 'free', NULL, NULL, NULL, DATEDIFF_BIG(second, '1970-01-01', SYSUTCDATETIME())),
               (4, NULL, NULL, NULL, 'free', NULL, NULL, NULL, DATEDIFF_BIG(second, '1970-01-01', SYSUTCDATETIME()))",
        ),
        // Customer.io's variable: the window's start as Unix seconds.
        &match e {
            Engine::Postgres => format!(
                "SELECT user_id, anonymous_id, email, plan, ip, active, prefs, integrations FROM people {WINDOW}
                 AND extract(epoch FROM updated_at) >= {{{{ last_sync_time }}}}"
            ),
            _ => format!(
                "SELECT p.login AS userId, p.anonymous_id AS anonymousId, p.email, p.[plan], p.ip, p.active,
                        p.integrations FROM people p
                 {WINDOW} AND p.updated_epoch >= {{{{ last_sync_time }}}}"
            ),
        },
    )
    .await;
    s.first_sync(
        3,
        &["userId, anonymousId and email are all null or empty; identify calls require one"],
    )
    .await;
    let u1 = s.call("u1").await;
    assert_eq!(u1["type"], "identify");
    assert_eq!(u1["userId"], "u1");
    assert!(!u1.contains_key("anonymousId"));
    let traits = match e {
        Engine::Postgres => json!({"email": "ada@example.com", "plan": "pro", "prefs": {"theme": "dark"}}),
        _ => json!({"email": "ada@example.com", "plan": "pro"}),
    };
    assert_eq!(u1["traits"], traits, "JSON columns stay nested");
    assert_eq!(u1["context"], json!({"ip": "10.0.0.1", "active": true}));
    assert_eq!(u1["integrations"], json!({"All": false, "Customer.io": true}));
    assert!(
        !u1.contains_key("timestamp") && is_message_id(&u1["messageId"]),
        "no timestamp column, no timestamp (the destination stamps it): {u1:?}"
    );
    let anon = s.call("anon-2").await;
    assert_eq!(
        (anon["anonymousId"].as_str(), anon.get("userId")),
        (Some("anon-2"), None)
    );
    let by_email = s.call("cy@example.com").await;
    assert_eq!(by_email["userId"], "cy@example.com");

    s.resync_then_update(
        3,
        sql(
            e,
            "UPDATE people SET plan = 'enterprise', updated_at = now() WHERE id = 1",
            "UPDATE people SET [plan] = 'enterprise', updated_at = SYSUTCDATETIME() WHERE id = 1",
        ),
    )
    .await;
    assert_eq!(s.call("u1").await["traits"]["plan"], "enterprise");
}

async fn track(e: Engine) {
    let s = Scenario::new(
        e,
        SyncType::Track,
        &(sql(
            e,
            "CREATE TABLE orders (id int, user_id text, event text, amount numeric(10,2), message_id text,
                              occurred_at timestamptz, locale text, updated_at timestamptz DEFAULT now());",
            "CREATE TABLE orders (id int, user_id nvarchar(50), event nvarchar(100), amount decimal(10,2),
                              message_id nvarchar(50), occurred_at datetimeoffset, locale nvarchar(10),
                              updated_at datetime2(6) DEFAULT SYSUTCDATETIME());",
        )
        .to_string()
            + "
         INSERT INTO orders (id, user_id, event, amount, message_id, occurred_at, locale) VALUES
           (1, 'u1', 'Order Completed', 12.50, 'm-1', '2025-01-02 03:04:05+00', 'en-GB'),
           (2, 'u2', 'Signed Up', NULL, 'm-2', NULL, NULL),
           (3, 'u3', NULL, 1, 'm-3', NULL, NULL),
           (4, NULL, 'Order Completed', 2, 'm-4', NULL, NULL)"),
        &match e {
            Engine::Postgres => {
                format!(
                    "SELECT user_id, event, amount, message_id, occurred_at AS timestamp, locale FROM orders {WINDOW}"
                )
            }
            _ => format!(
                "SELECT o.user_id AS userId, o.event, o.amount, o.message_id AS messageId, o.occurred_at AS [timestamp],
                        o.locale FROM orders o {WINDOW}"
            ),
        },
    )
    .await;
    s.first_sync(
        2,
        &[
            "event is null; track calls require it",
            "userId and anonymousId are both null or empty; track calls require one",
        ],
    )
    .await;
    let m1 = s.call("m-1").await;
    assert_eq!(
        (
            m1["type"].as_str(),
            m1["event"].as_str(),
            m1["userId"].as_str(),
            m1["messageId"].as_str()
        ),
        (Some("track"), Some("Order Completed"), Some("u1"), Some("m-1"))
    );
    assert_eq!(m1["properties"], json!({"amount": 12.5}));
    assert_eq!(m1["context"], json!({"locale": "en-GB"}));
    assert_eq!(m1["timestamp"], "2025-01-02T03:04:05Z");
    let m2 = s.call("m-2").await;
    assert!(
        !m2.contains_key("timestamp"),
        "a row without a time has none, whenever it is read: {m2:?}"
    );

    s.resync_then_update(
        2,
        &format!("UPDATE orders SET amount = 99, updated_at = {} WHERE id = 1", now(e)),
    )
    .await;
    assert_eq!(s.call("m-1").await["properties"]["amount"], 99);
}

async fn group(e: Engine) {
    let s = Scenario::new(
        e,
        SyncType::Group,
        &(sql(
            e,
            "CREATE TABLE companies (id int, group_id text, user_id text, name text, object_type_id int,
                                 updated_at timestamptz DEFAULT now());",
            "CREATE TABLE companies (id int, group_id nvarchar(50), user_id nvarchar(50), name nvarchar(100),
                                 object_type_id int, updated_at datetime2(6) DEFAULT SYSUTCDATETIME());",
        )
        .to_string()
            + "
         INSERT INTO companies (id, group_id, user_id, name, object_type_id) VALUES
           (1, 'g1', 'u1', 'Acme', NULL),
           (2, 'g2', NULL, 'Beta', 2),
           (3, NULL, 'u3', 'Gamma', NULL)"),
        &match e {
            Engine::Postgres => format!("SELECT group_id, user_id, name, object_type_id FROM companies {WINDOW}"),
            _ => format!(
                "SELECT c.group_id AS groupId, c.user_id AS userId, c.name, c.object_type_id AS objectTypeId
                 FROM companies c {WINDOW}"
            ),
        },
    )
    .await;
    // The test query shows the calls the rows would become, and the warning.
    let config = s.store.get_source(&s.id).await.unwrap().unwrap().config;
    let preview = s.svc.preview(&config, None).await.unwrap();
    assert_eq!((preview.row_count, preview.rows_rejected), (3, 1));
    assert_eq!(preview.records[0].key, r#"["g1","u1"]"#);
    assert_eq!(preview.records[0].fields["type"], "group");
    assert_eq!(preview.records[0].fields["traits"], json!({"name": "Acme"}));
    assert!(
        preview.warnings.iter().any(|w| w.contains("without userId")),
        "{:?}",
        preview.warnings
    );
    assert_eq!(
        s.store.count_records(&s.id).await.unwrap(),
        0,
        "a preview writes nothing"
    );

    let run = s.first_sync(2, &["groupId is null; group calls require it"]).await;
    assert_eq!(run.warnings.len(), 1, "{run:?}");
    assert_eq!(run.warnings[0].rows, 1);
    assert!(run.warnings[0].message.contains("without userId"));
    let g1 = s.call(r#"["g1","u1"]"#).await;
    assert_eq!(
        (
            g1["type"].as_str(),
            g1["groupId"].as_str(),
            g1["userId"].as_str(),
            g1["objectTypeId"].as_str()
        ),
        (Some("group"), Some("g1"), Some("u1"), Some("1"))
    );
    assert_eq!(g1["traits"], json!({"name": "Acme"}));
    let g2 = s.call(r#"["g2",""]"#).await;
    assert_eq!(g2["objectTypeId"], "2", "objectTypeId is a stringified integer");

    s.resync_then_update(
        2,
        &format!(
            "UPDATE companies SET name = 'Acme Inc', updated_at = {} WHERE id = 1",
            now(e)
        ),
    )
    .await;
    assert_eq!(s.call(r#"["g1","u1"]"#).await["traits"]["name"], "Acme Inc");
}

/// Page and screen calls have the same rules.
async fn named_call(e: Engine, sync_type: SyncType, kind: &str) {
    let s = Scenario::new(
        e,
        sync_type,
        &(sql(
            e,
            "CREATE TABLE views (id int, user_id text, name text, path text, message_id text,
                             updated_at timestamptz DEFAULT now());",
            "CREATE TABLE views (id int, user_id nvarchar(50), name nvarchar(100), path nvarchar(400),
                             message_id nvarchar(50), updated_at datetime2(6) DEFAULT SYSUTCDATETIME());",
        )
        .to_string()
            + "
         INSERT INTO views (id, user_id, name, path, message_id) VALUES
           (1, 'u1', 'Home', '/', 'v-1'),
           (2, NULL, 'Pricing', '/pricing', 'v-2'),
           (3, 'u3', NULL, '/x', 'v-3'),
           (4, 'u4', 'Docs', '/docs', NULL)"),
        &match e {
            Engine::Postgres => format!("SELECT user_id, name, path, message_id FROM views {WINDOW}"),
            _ => format!("SELECT v.user_id AS userId, v.name, v.path, v.message_id AS messageId FROM views v {WINDOW}"),
        },
    )
    .await;
    s.first_sync(
        2,
        &[
            &format!("userId is null; {kind} calls require it"),
            &format!("name is null; {kind} calls require it"),
        ],
    )
    .await;
    let v1 = s.call("v-1").await;
    assert_eq!(
        (v1["type"].as_str(), v1["name"].as_str(), v1["userId"].as_str()),
        (Some(kind), Some("Home"), Some("u1"))
    );
    assert_eq!(v1["properties"], json!({"path": "/"}));
    s.resync_then_update(
        2,
        &format!("UPDATE views SET path = '/home', updated_at = {} WHERE id = 1", now(e)),
    )
    .await;
    assert_eq!(s.call("v-1").await["properties"]["path"], "/home");
}

async fn page(e: Engine) {
    named_call(e, SyncType::Page, "page").await;
}

async fn screen(e: Engine) {
    named_call(e, SyncType::Screen, "screen").await;
}

async fn alias(e: Engine) {
    let s = Scenario::new(
        e,
        SyncType::Alias,
        &(sql(
            e,
            "CREATE TABLE merges (id int, user_id text, previous_id text, origin text,
                              updated_at timestamptz DEFAULT now());",
            "CREATE TABLE merges (id int, user_id nvarchar(50), previous_id nvarchar(50), origin nvarchar(20),
                              updated_at datetime2(6) DEFAULT SYSUTCDATETIME());",
        )
        .to_string()
            + "
         INSERT INTO merges (id, user_id, previous_id, origin) VALUES
           (1, 'u1', 'anon-1', 'web'),
           (2, 'u2', NULL, 'web'),
           (3, NULL, 'anon-3', 'app')"),
        &match e {
            Engine::Postgres => format!("SELECT user_id, previous_id, origin FROM merges {WINDOW}"),
            _ => format!("SELECT m.user_id AS userId, m.previous_id AS previousId, m.origin FROM merges m {WINDOW}"),
        },
    )
    .await;
    s.first_sync(
        1,
        &[
            "previousId is null; alias calls require it",
            "userId is null; alias calls require it",
        ],
    )
    .await;
    let a = s.call(r#"["u1","anon-1"]"#).await;
    assert_eq!(
        (a["type"].as_str(), a["userId"].as_str(), a["previousId"].as_str()),
        (Some("alias"), Some("u1"), Some("anon-1"))
    );
    assert!(!a.contains_key("traits") && !a.contains_key("properties"), "{a:?}");
    assert_eq!(a["origin"], "web", "other columns are kept as fields");
    s.resync_then_update(
        1,
        &format!("UPDATE merges SET origin = 'app', updated_at = {} WHERE id = 1", now(e)),
    )
    .await;
    assert_eq!(s.call(r#"["u1","anon-1"]"#).await["origin"], "app");
}

/// A call's content never depends on when its row was read: track calls without a
/// `timestamp` column, re-read after more than the hash check's 1,000 new rows (so they
/// are rewritten without a check), are stored exactly as before: no changed call, so
/// nothing is delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_read_again_without_a_timestamp_column_is_the_same_call() {
    let s = Scenario::new(
        Engine::Postgres,
        SyncType::Track,
        "CREATE TABLE clicks (id int, user_id text, event text, updated_at timestamptz DEFAULT now());
         INSERT INTO clicks (id, user_id, event) SELECT i, 'u' || i, 'Clicked' FROM generate_series(1, 300) i;",
        // The newest rows first, so that the second run's 1,200 new rows switch its hash
        // check off before it reaches the 300 it read before.
        &format!("SELECT user_id, event, id::text AS message_id FROM clicks {WINDOW} ORDER BY id DESC"),
    )
    .await;
    s.first_sync(300, &[]).await;
    let keys = ["1", "150", "300"];
    let mut before = Vec::new();
    for key in keys {
        let call = s.store.get_record(&s.id, key).await.unwrap().unwrap();
        assert!(!call.fields.contains_key("timestamp"), "{:?}", call.fields);
        before.push(call);
    }

    s.db.exec(
        "INSERT INTO clicks (id, user_id, event) SELECT i, 'u' || i, 'Clicked' FROM generate_series(301, 1500) i",
    )
    .await;
    let again = s.sync().await;
    assert_eq!(again.rows_read, 1500, "{again:?}");
    for (key, before) in keys.iter().zip(before) {
        let after = s.store.get_record(&s.id, key).await.unwrap().unwrap();
        assert_eq!(
            (&after.hash, &after.fields),
            (&before.hash, &before.fields),
            "call {key}"
        );
    }
}
