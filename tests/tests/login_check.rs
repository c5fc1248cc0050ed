//! The login check (issue 20 item 2), with real logins: a role or user that can only
//! read, and one that can write, made for each test with unique names on PostgreSQL,
//! MariaDB and SQL Server (Babelfish); SQLite's read-only file; Snowflake (fakesnow),
//! which cannot list grants. The test query names the exact grant to drop, every run's
//! log says it, and `require_read_only_login` refuses a writable login before reading.

use serde_json::json;
use sluice_core::{Engine, LoginCheck, Preview, Run, RunStatus, SourceConfig, Trigger};
use sluice_tests::*;

/// A login made for a test: its name as the engine quotes it, and its secret.
struct Login {
    name: String,
    password: String,
    secret: serde_json::Value,
}

impl Login {
    fn new(db: &Database, prefix: &str) -> Self {
        let name = unique(prefix);
        // Mixed case and a symbol: SQL Server's password policy.
        let password = format!("Pw-{}-x1", uuid::Uuid::new_v4().simple());
        let mut secret = db.secret.clone();
        secret["username"] = json!(name);
        secret["password"] = json!(password);
        Login { name, password, secret }
    }
}

/// A source over `db`'s sales table.
fn sales_source(db: &Database, require_read_only_login: bool) -> SourceConfig {
    let mut src = source(&unique("login"), db, SALES_QUERY);
    src.require_read_only_login = require_read_only_login;
    src
}

async fn preview(db: &Database, login: &Login) -> Preview {
    let src = sales_source(db, false);
    let svc = service(
        store(StoreKind::Embedded).await,
        [(src.secret_id.clone(), login.secret.clone())].into(),
    );
    let preview = svc.preview(&src, None).await.unwrap();
    assert_no_secret(&serde_json::to_string(&preview).unwrap(), login);
    preview
}

/// Syncs `db`'s sales as `login` once; the run, and how many records were written.
async fn sync(db: &Database, login: &Login, require_read_only_login: bool) -> (Run, u64, bool) {
    let src = sales_source(db, require_read_only_login);
    let store = store(StoreKind::Embedded).await;
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), [(src.secret_id.clone(), login.secret.clone())].into());
    let run = svc.run(&src.id, Trigger::Manual, None).await.unwrap();
    assert_no_secret(&serde_json::to_string(&run).unwrap(), login);
    let records = store.count_records(&src.id).await.unwrap();
    let watermark_moved = store.get_source(&src.id).await.unwrap().unwrap().watermark.is_some();
    (run, records, watermark_moved)
}

fn assert_no_secret(text: &str, login: &Login) {
    assert!(!text.contains(&login.password), "the password leaked: {text}");
    assert!(!text.contains("IDENTIFIED"), "a grant line leaked: {text}");
}

fn revokes(preview: &Preview) -> Vec<String> {
    match &preview.login {
        Some(LoginCheck::Writable { revoke }) => revoke.clone(),
        other => panic!("expected a writable login, got {other:?} ({:?})", preview.errors),
    }
}

fn assert_read_only(preview: &Preview, detail: &str) {
    match &preview.login {
        Some(LoginCheck::ReadOnly { detail: d }) => assert!(d.contains(detail), "{d}"),
        other => panic!("expected a read-only login, got {other:?} ({:?})", preview.errors),
    }
    assert!(preview.errors.is_empty(), "{:?}", preview.errors);
}

/// With `require_read_only_login`, the writable login's run fails before it reads and
/// writes nothing; the read-only one syncs; without it, the writable one syncs with the
/// grant to drop in its log.
async fn runs_follow_the_setting(db: &Database, reader: &Login, writer: &Login, grant: &str) {
    let (refused, records, moved) = sync(db, writer, true).await;
    assert_eq!(refused.status, RunStatus::Failed, "{refused:?}");
    let message = refused.message.as_deref().unwrap();
    assert!(
        message.contains("require_read_only_login") && message.contains(grant),
        "{message}"
    );
    assert_eq!(
        (refused.rows_read, records, moved),
        (0, 0, false),
        "nothing read or written"
    );

    let (run, records, moved) = sync(db, reader, true).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    assert_eq!((records, moved), (3, true));
    assert!(
        run.login.as_deref().unwrap().starts_with("the login can only read"),
        "{run:?}"
    );

    let (warned, records, _) = sync(db, writer, false).await;
    assert_eq!(warned.status, RunStatus::Succeeded, "{:?}", warned.message);
    assert_eq!(records, 3);
    let logged = warned.login.as_deref().unwrap();
    assert!(
        logged.starts_with("the login can write") && logged.contains(grant),
        "{logged}"
    );
}

#[tokio::test]
async fn postgres_names_the_grant_attribute_and_dblink_to_drop() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(3).await;
    let (reader, writer) = (Login::new(&db, "reader"), Login::new(&db, "writer"));
    for l in [&reader, &writer] {
        db.exec(&format!("CREATE ROLE {} LOGIN PASSWORD '{}'", l.name, l.password))
            .await;
    }
    db.exec(&format!(
        "GRANT SELECT ON sales TO {r}; GRANT SELECT, INSERT ON sales TO {w}",
        r = reader.name,
        w = writer.name
    ))
    .await;

    assert_read_only(&preview(&db, &reader).await, "PostgreSQL");
    let grant = format!("REVOKE INSERT ON public.sales FROM {}", writer.name);
    let writable = preview(&db, &writer).await;
    assert_eq!(revokes(&writable), std::slice::from_ref(&grant));
    assert!(
        writable.warnings.iter().any(|w| w.contains(&grant)),
        "{:?}",
        writable.warnings
    );
    assert_eq!(writable.row_count, 3, "a warning, not a refusal");

    // The tests' own login is a superuser: that alone is named. Its password is its
    // name, so the name is scrubbed as the password would be anywhere.
    let admin = Login {
        name: "sluice".into(),
        password: "not-this-one".into(),
        secret: db.secret.clone(),
    };
    assert_eq!(
        revokes(&preview(&db, &admin).await),
        ["ALTER ROLE <redacted> NOSUPERUSER"]
    );

    runs_follow_the_setting(&db, &reader, &writer, &grant).await;

    // dblink_exec writes past a read-only session; installed, PUBLIC may run it.
    db.exec("CREATE EXTENSION dblink").await;
    let dblink = revokes(&preview(&db, &reader).await);
    assert_eq!(dblink.len(), 1, "{dblink:?}");
    assert!(
        dblink[0].starts_with("REVOKE EXECUTE ON FUNCTION public.dblink_exec(text")
            && dblink[0].ends_with("FROM PUBLIC"),
        "{dblink:?}"
    );
}

#[tokio::test]
async fn mariadb_names_the_grant_and_never_shows_the_password_hash() {
    let db = Database::new(Engine::Mysql).await;
    db.create_sales(3).await;
    let (reader, writer) = (Login::new(&db, "reader"), Login::new(&db, "writer"));
    for l in [&reader, &writer] {
        db.exec(&format!("CREATE USER '{}'@'%' IDENTIFIED BY '{}'", l.name, l.password))
            .await;
    }
    db.exec(&format!(
        "GRANT SELECT ON `{d}`.* TO '{r}'@'%'; GRANT SELECT, INSERT ON `{d}`.`sales` TO '{w}'@'%'",
        d = db.name,
        r = reader.name,
        w = writer.name
    ))
    .await;

    assert_read_only(&preview(&db, &reader).await, "SHOW GRANTS");
    let grant = format!("REVOKE INSERT ON `{}`.`sales` FROM '{}'@'%'", db.name, writer.name);
    assert_eq!(revokes(&preview(&db, &writer).await), std::slice::from_ref(&grant));

    runs_follow_the_setting(&db, &reader, &writer, &grant).await;
}

#[tokio::test]
async fn sqlserver_on_babelfish_names_the_grant_and_the_server_role() {
    let db = Database::new(Engine::Sqlserver).await;
    db.create_sales(3).await;
    let (reader, writer) = (Login::new(&db, "reader"), Login::new(&db, "writer"));
    for l in [&reader, &writer] {
        db.exec(&format!(
            "CREATE LOGIN {n} WITH PASSWORD = '{p}'; CREATE USER {n} FOR LOGIN {n}",
            n = l.name,
            p = l.password
        ))
        .await;
    }
    db.exec(&format!(
        "GRANT SELECT ON dbo.sales TO {r}; GRANT SELECT, INSERT ON dbo.sales TO {w}",
        r = reader.name,
        w = writer.name
    ))
    .await;

    assert_read_only(&preview(&db, &reader).await, "SQL Server");
    let grant = format!("REVOKE INSERT ON [dbo].[sales] FROM [{}]", writer.name);
    assert_eq!(revokes(&preview(&db, &writer).await), std::slice::from_ref(&grant));
    let admin = Login {
        name: sluice_tests::sqlserver::USER.into(),
        password: sluice_tests::sqlserver::PASSWORD.into(),
        secret: db.secret.clone(),
    };
    assert_eq!(
        revokes(&preview(&db, &admin).await),
        ["ALTER SERVER ROLE [sysadmin] DROP MEMBER [sluice]"]
    );

    runs_follow_the_setting(&db, &reader, &writer, &grant).await;
}

#[tokio::test]
async fn sqlite_is_read_only_by_the_way_it_is_opened() {
    let db = Database::new(Engine::Sqlite).await;
    db.create_sales(3).await;
    let file = Login {
        name: String::new(),
        password: "unused-password".into(),
        secret: db.secret.clone(),
    };
    assert_read_only(&preview(&db, &file).await, "opened read-only");
    let (run, records, _) = sync(&db, &file, true).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    assert_eq!(records, 3);
}

#[tokio::test]
async fn snowflake_on_fakesnow_says_it_could_not_check_and_refuses_only_when_required() {
    let db = Database::new(Engine::Snowflake).await;
    db.create_sales(3).await;
    let login = Login {
        name: "sluice".into(),
        password: "sluice-not-shown".into(),
        secret: db.secret.clone(),
    };
    // fakesnow has no SHOW GRANTS: the answer says so rather than guessing.
    let p = preview(&db, &login).await;
    match &p.login {
        Some(LoginCheck::CouldNotCheck { reason }) => assert!(reason.starts_with("SHOW GRANTS TO ROLE"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.row_count, 3, "not a refusal: {:?}", p.errors);
    let (run, records, _) = sync(&db, &login, false).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    assert_eq!(records, 3);
    assert!(run.login.as_deref().unwrap().starts_with("could not check"), "{run:?}");
    let (refused, records, moved) = sync(&db, &login, true).await;
    assert_eq!(refused.status, RunStatus::Failed);
    assert_eq!((records, moved), (0, false));
}

#[tokio::test]
async fn the_cli_config_file_takes_the_setting_and_shows_the_grant() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(3).await;
    let writer = Login::new(&db, "writer");
    db.exec(&format!(
        "CREATE ROLE {w} LOGIN PASSWORD '{p}'; GRANT SELECT, INSERT ON sales TO {w}",
        w = writer.name,
        p = writer.password
    ))
    .await;
    let mut as_writer = db.clone();
    as_writer.secret = writer.secret.clone();
    let id = unique("cli");
    let config = local_config(&as_writer, StoreKind::Embedded, &id, SALES_QUERY);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("    require_read_only_login: true\n");
    std::fs::write(&config, text).unwrap();
    let grant = format!("REVOKE INSERT ON public.sales FROM {}", writer.name);

    for command in ["preview", "sync"] {
        let out = sluice_cmd(&[command, "--source", &id], &config, 60).output().unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{command}: {shown}");
        assert!(
            shown.contains("require_read_only_login") && shown.contains(&grant),
            "{command}: {shown}"
        );
        assert!(!shown.contains(&writer.password), "{command}: {shown}");
    }
    let store = open_local_store(&config).await;
    assert_eq!(store.count_records(&id).await.unwrap(), 0, "nothing written");
}
