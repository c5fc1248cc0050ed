//! `sluice demo`: the whole job on one machine, with the embedded store.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use sluice_core::{Run, Trigger, Value};
use sluice_local::LocalConfig;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use crate::{summary, wiring};

const SALES: usize = 1_000;
const TEAMS: [&str; 4] = ["North", "South", "East", "West"];
const NAMES: [&str; 16] = [
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Lucas", "Sofia", "Mateo", "Ingrid", "Kasper", "Freja", "Magnus", "Aisha",
    "Yusuf", "Mei", "Hiroshi",
];
const PRODUCTS: [&str; 5] = ["Starter", "Pro", "Team", "Enterprise", "Add-on"];

const CONFIG: &str = r#"# Written by `sluice demo`. Run it again with: sluice sync --config THIS_FILE
store:
  kind: embedded
  path: sluice.db
secrets:
  sales-db:
    engine: sqlite
    database: sales.sqlite
sources:
  - id: sales
    name: Sales registrations
    engine: sqlite
    secret_id: sales-db
    sync_type: registration
    frequency_minutes: 5
    query: |
      SELECT s.id        AS reference,
             s.user_id   AS member_id,
             s.user_name AS member_name,
             s.team      AS team_name,
             s.date      AS date,
             s.product, s.amount, s.qty
      FROM sales s
      WHERE s.updated_at >= {{ last_update_time }}
        AND s.updated_at <  {{ upper_date_limit }}
"#;

pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id())),
    };
    if dir.exists() {
        for file in [
            "sales.sqlite",
            "sluice.db",
            "sluice.db-wal",
            "sluice.db-shm",
            "sluice.yaml",
        ] {
            let _ = std::fs::remove_file(dir.join(file));
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config_path = dir.join("sluice.yaml");
    std::fs::write(&config_path, CONFIG)?;
    let mut db = create_sales_db(&dir.join("sales.sqlite")).await?;

    println!("Sluice demo: files in {}", dir.display());
    println!("  source database  sales.sqlite ({SALES} sales over the last 30 days)");
    println!("  embedded store   sluice.db");
    println!("  config           sluice.yaml");

    let config = LocalConfig::load(&config_path)?;
    let service = wiring::service(&config).await?;
    let store = service.store().clone();
    store
        .put_source(config.source("sales").expect("the demo config has it"))
        .await?;

    let first = service.run("sales", Trigger::Manual, None).await?;
    println!(
        "\nFirst sync:  read {} rows, imported {} records ({} ms)",
        first.rows_read, first.rows_written, first.duration_ms
    );
    fail_on(&first)?;
    println!("  watermark    {}", watermark(&first));

    let before = store.count_records("sales").await?;
    change_sales(&mut db).await?;
    println!("\nIn the source database: 25 new sales, 10 changed amounts, 5 rows touched without changes,");
    println!("and 1 new sale without a member name.");
    // The source clock must move past the last change before the next run starts.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let second = service.run("sales", Trigger::Manual, None).await?;
    fail_on(&second)?;
    let added = store.count_records("sales").await? - before;
    println!(
        "\nSecond sync: read {} rows: {} new records, {} updated, {} unchanged (not written again), {} rejected ({} ms)",
        second.rows_read,
        added,
        second.rows_written - added,
        second.rows_unchanged,
        second.rows_rejected,
        second.duration_ms
    );
    for r in &second.rejects {
        println!(
            "  rejected sale {}: {}",
            r.reference.as_deref().unwrap_or("?"),
            r.reason
        );
    }
    println!("  watermark    {}", watermark(&second));

    let (members, teams) = store.list_members("sales").await?;
    println!(
        "\nThe store holds {} records, {} members in {} teams.",
        store.count_records("sales").await?,
        members.len(),
        teams.len()
    );
    if let Some(record) = store.get_record("sales", "1").await? {
        println!("Record 1: {}", serde_json::to_string(&record.fields)?);
    }
    println!(
        "\nImport log (sluice runs --config {} --source sales):",
        config_path.display()
    );
    for run in store.list_runs("sales", 10, None).await? {
        println!("  {}", summary(&run).replace('\n', "\n  "));
    }
    Ok(())
}

fn fail_on(run: &Run) -> anyhow::Result<()> {
    match run.status {
        sluice_core::RunStatus::Succeeded => Ok(()),
        _ => anyhow::bail!("the demo's sync did not succeed: {}", summary(run)),
    }
}

fn watermark(run: &Run) -> String {
    run.watermark
        .map_or_else(|| "(none)".into(), |w| Value::iso_timestamp(&w))
}

/// Sales dated over the last 30 days (ending an hour ago), deterministic.
async fn create_sales_db(path: &Path) -> anyhow::Result<SqliteConnection> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?.create_if_missing(true);
    let mut db = SqliteConnection::connect_with(&options).await?;
    sqlx::raw_sql(
        "CREATE TABLE sales (
           id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, user_name TEXT, team TEXT,
           product TEXT NOT NULL, amount REAL NOT NULL, qty INTEGER NOT NULL,
           date TEXT NOT NULL, updated_at TEXT NOT NULL);
         CREATE INDEX sales_updated_at ON sales (updated_at);",
    )
    .execute(&mut db)
    .await?;
    let mut tx = db.begin().await?;
    let mut seed: u64 = 42;
    for id in 1..=SALES as i64 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let user = (seed >> 33) % 16;
        let minutes_ago = 60 + (seed >> 20) % (30 * 24 * 60);
        sqlx::query(
            "INSERT INTO sales (id, user_id, user_name, team, product, amount, qty, date, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, strftime('%Y-%m-%d %H:%M:%S', 'now', ?), strftime('%Y-%m-%d %H:%M:%f', 'now', ?))",
        )
        .bind(id)
        .bind(user as i64 + 1)
        .bind(NAMES[user as usize])
        .bind(TEAMS[user as usize % 4])
        .bind(PRODUCTS[(seed >> 40) as usize % 5])
        .bind(((seed >> 8) % 100_000) as f64 / 100.0)
        .bind(1 + (seed >> 50) as i64 % 9)
        .bind(format!("-{minutes_ago} minutes"))
        .bind(format!("-{minutes_ago} minutes"))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(db)
}

async fn change_sales(db: &mut SqliteConnection) -> anyhow::Result<()> {
    let now = "strftime('%Y-%m-%d %H:%M:%f', 'now')";
    let statements = [
        format!(
            "INSERT INTO sales (user_id, user_name, team, product, amount, qty, date, updated_at)
             SELECT user_id, user_name, team, product, amount + 1, qty, strftime('%Y-%m-%d %H:%M:%S', 'now'), {now}
             FROM sales ORDER BY id LIMIT 25"
        ),
        format!("UPDATE sales SET amount = amount + 10, updated_at = {now} WHERE id BETWEEN 101 AND 110"),
        format!("UPDATE sales SET updated_at = {now} WHERE id BETWEEN 201 AND 205"),
        format!(
            "INSERT INTO sales (user_id, user_name, team, product, amount, qty, date, updated_at)
             VALUES (3, NULL, 'East', 'Pro', 99.0, 1, strftime('%Y-%m-%d %H:%M:%S', 'now'), {now})"
        ),
    ];
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *db).await?;
    }
    Ok(())
}
