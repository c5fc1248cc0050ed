//! The embedded store: the `Store` port on one SQLite file (WAL), for the CLI and the
//! demo. Same semantics as the DynamoDB store; the contract suite checks both.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::stored::{StoredSource, decode_job, decode_run, encode_config, encode_job, encode_run, to_micros};
use sluice_core::{
    BackendError, Backfill, BackfillCreated, BackfillJobs, Cadence, Connection, ConnectionStore, DeliveryLog,
    DeliveryState, DeliveryStatus, LeaseOutcome, Member, Record, RecordBatch, RecordReader, RecordWriter, Run, RunLog,
    SaveOutcome, SourceConfig, SourceState, SourceStore, StoreError, StoredRecord, Value, WriteStats,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, Sqlite, Transaction};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sources (
  id TEXT PRIMARY KEY, config TEXT NOT NULL,
  watermark_us INTEGER, lease_token TEXT, lease_expires_us INTEGER,
  effective_minutes INTEGER NOT NULL DEFAULT 0, fast_runs INTEGER NOT NULL DEFAULT 0,
  narrowed_window_s INTEGER, ssh_host_key TEXT);
CREATE TABLE IF NOT EXISTS records (
  source_id TEXT NOT NULL, record_key TEXT NOT NULL, hash TEXT NOT NULL, date TEXT,
  fields TEXT NOT NULL, updated_at TEXT NOT NULL,
  PRIMARY KEY (source_id, record_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
  source_id TEXT NOT NULL, run_id TEXT NOT NULL, body TEXT NOT NULL, expires_at INTEGER NOT NULL,
  PRIMARY KEY (source_id, run_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
  member_id_source TEXT NOT NULL, member_id TEXT NOT NULL, name TEXT NOT NULL, team TEXT,
  PRIMARY KEY (member_id_source, member_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS backfills (
  source_id TEXT NOT NULL, job_id TEXT NOT NULL, body TEXT NOT NULL, version INTEGER NOT NULL,
  active INTEGER NOT NULL, cancel_requested_us INTEGER,
  PRIMARY KEY (source_id, job_id)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS one_active_backfill ON backfills (source_id) WHERE active = 1;
CREATE TABLE IF NOT EXISTS deliveries (
  source_id TEXT NOT NULL, record_key TEXT NOT NULL, hash TEXT NOT NULL, status TEXT NOT NULL,
  body TEXT NOT NULL, PRIMARY KEY (source_id, record_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS connections (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS member_claims (namespace TEXT PRIMARY KEY, source_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS teams (
  member_id_source TEXT NOT NULL, name TEXT NOT NULL,
  PRIMARY KEY (member_id_source, name)) WITHOUT ROWID;
";

/// The embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    pool: SqlitePool,
}

/// A SQLite failure, with SQLite's own code when it gave one.
fn backend(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| {
        let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
        StoreError::backend(operation, BackendError::new(code, e.to_string()))
    }
}

impl EmbeddedStore {
    /// Opens (and creates when absent) the store at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(backend("opening the embedded store"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        // One connection: SQLite has one writer at a time anyway, and the sync's
        // concurrent batches queue here instead of spinning on SQLITE_BUSY.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(backend("opening the embedded store"))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(backend("creating the embedded store's tables"))?;
        // Stores made before sources kept their bastion's key gain the column.
        let has_host_key: bool =
            sqlx::query_scalar("SELECT COUNT(*) > 0 FROM pragma_table_info('sources') WHERE name = 'ssh_host_key'")
                .fetch_one(&pool)
                .await
                .map_err(backend("reading the embedded store's tables"))?;
        if !has_host_key {
            sqlx::query("ALTER TABLE sources ADD COLUMN ssh_host_key TEXT")
                .execute(&pool)
                .await
                .map_err(backend("adding ssh_host_key to the embedded store"))?;
        }
        Ok(EmbeddedStore { pool })
    }

    async fn state(&self, id: &str) -> Result<Option<SourceState>, StoreError> {
        let row = sqlx::query(
            "SELECT config, watermark_us, lease_token, lease_expires_us,
               (SELECT job_id FROM backfills b WHERE b.source_id = s.id AND b.active = 1),
               effective_minutes, fast_runs, narrowed_window_s, ssh_host_key
             FROM sources s WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend("reading a source"))?;
        let Some(row) = row else { return Ok(None) };
        StoredSource {
            config: row.get(0),
            watermark_us: row.get(1),
            lease_token: row.get(2),
            lease_expires_us: row.get(3),
            active_backfill: row.get(4),
            effective_minutes: row.get(5),
            fast_runs: row.get(6),
            narrowed_window_s: row.get(7),
            ssh_host_key: row.get(8),
        }
        .decode(id)
        .map(Some)
    }

    fn backfill(row: &sqlx::sqlite::SqliteRow) -> Result<Backfill, StoreError> {
        decode_job(
            row.get("job_id"),
            row.get("body"),
            row.get("version"),
            row.get("cancel_requested_us"),
        )
    }
}

/// A row of `record_key, hash, fields` as the record it is.
fn stored_record(row: &sqlx::sqlite::SqliteRow) -> Result<StoredRecord, StoreError> {
    let key: String = row.get(0);
    let typed: BTreeMap<String, Value> =
        serde_json::from_str(row.get::<&str, _>(2)).map_err(|e| StoreError::Corrupt {
            what: format!("record {key}"),
            reason: e.to_string(),
        })?;
    Ok(StoredRecord {
        hash: row.get(1),
        fields: typed.into_iter().map(|(k, v)| (k, v.to_plain_json())).collect(),
        key,
    })
}

fn fields_json(r: &Record) -> String {
    let map: serde_json::Map<String, serde_json::Value> = r
        .fields
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::to_value(v).expect("values serialize")))
        .collect();
    serde_json::Value::Object(map).to_string()
}

#[async_trait]
impl SourceStore for EmbeddedStore {
    async fn put_source(&self, config: &SourceConfig) -> Result<(), StoreError> {
        let json = encode_config(config);
        sqlx::query(
            "INSERT INTO sources (id, config) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET config = excluded.config",
        )
        .bind(&config.id)
        .bind(json)
        .execute(&self.pool)
        .await
        .map_err(backend("saving a source"))?;
        Ok(())
    }

    async fn create_source(&self, config: &SourceConfig) -> Result<bool, StoreError> {
        let created = sqlx::query("INSERT INTO sources (id, config) VALUES (?, ?) ON CONFLICT (id) DO NOTHING")
            .bind(&config.id)
            .bind(encode_config(config))
            .execute(&self.pool)
            .await
            .map_err(backend("creating a source"))?
            .rows_affected();
        Ok(created == 1)
    }

    async fn claim_member_namespace(&self, namespace: &str, source_id: &str) -> Result<Option<String>, StoreError> {
        // One statement: the claim and the holder it leaves, whoever won.
        let holder: String = sqlx::query_scalar(
            "INSERT INTO member_claims (namespace, source_id) VALUES (?, ?)
             ON CONFLICT (namespace) DO UPDATE SET source_id = source_id RETURNING source_id",
        )
        .bind(namespace)
        .bind(source_id)
        .fetch_one(&self.pool)
        .await
        .map_err(backend("claiming a member namespace"))?;
        Ok((holder != source_id).then_some(holder))
    }

    async fn release_member_namespace(&self, namespace: &str, source_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM member_claims WHERE namespace = ? AND source_id = ?")
            .bind(namespace)
            .bind(source_id)
            .execute(&self.pool)
            .await
            .map_err(backend("releasing a member namespace"))?;
        Ok(())
    }

    async fn get_source(&self, id: &str) -> Result<Option<SourceState>, StoreError> {
        self.state(id).await
    }

    async fn list_sources(&self) -> Result<Vec<SourceState>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM sources ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("listing sources"))?;
        let mut sources = Vec::with_capacity(ids.len());
        for id in ids {
            sources.extend(self.state(&id).await?);
        }
        Ok(sources)
    }

    async fn delete_source(&self, id: &str, purge_records: bool) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend("deleting a source"))?;
        let mut purged = 0;
        if purge_records {
            purged = sqlx::query("DELETE FROM records WHERE source_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend("deleting records"))?
                .rows_affected();
        }
        sqlx::query("DELETE FROM sources WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend("deleting a source"))?;
        tx.commit().await.map_err(backend("deleting a source"))?;
        Ok(purged)
    }

    async fn acquire_lease(
        &self,
        id: &str,
        token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<LeaseOutcome, StoreError> {
        let taken = sqlx::query(
            "UPDATE sources SET lease_token = ?, lease_expires_us = ?
             WHERE id = ? AND (lease_expires_us IS NULL OR lease_expires_us <= ? OR lease_token = ?)",
        )
        .bind(token)
        .bind(to_micros(expires_at))
        .bind(id)
        .bind(to_micros(now))
        .bind(token)
        .execute(&self.pool)
        .await
        .map_err(backend("taking the lease"))?
        .rows_affected()
            == 1;
        Ok(match self.state(id).await? {
            None => LeaseOutcome::NotFound,
            Some(state) if taken => LeaseOutcome::Acquired(Box::new(state)),
            Some(state) => LeaseOutcome::Held {
                expires_at: state.lease.map_or(now, |l| l.expires_at),
            },
        })
    }

    async fn release_lease(&self, id: &str, token: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sources SET lease_token = NULL, lease_expires_us = NULL WHERE id = ? AND lease_token = ?")
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(backend("releasing the lease"))?;
        Ok(())
    }

    async fn renew_lease(&self, id: &str, token: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        let renewed = sqlx::query("UPDATE sources SET lease_expires_us = ? WHERE id = ? AND lease_token = ?")
            .bind(to_micros(expires_at))
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(backend("renewing the lease"))?
            .rows_affected();
        match renewed {
            0 => Err(StoreError::LeaseLost {
                source_id: id.to_string(),
            }),
            _ => Ok(()),
        }
    }

    async fn advance_watermark(&self, id: &str, token: &str, watermark: DateTime<Utc>) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE sources SET watermark_us = MAX(COALESCE(watermark_us, ?1), ?1) WHERE id = ?2 AND lease_token = ?3",
        )
        .bind(to_micros(watermark))
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await
        .map_err(backend("moving the watermark"))?
        .rows_affected();
        if done == 0 {
            return Err(StoreError::LeaseLost {
                source_id: id.to_string(),
            });
        }
        Ok(())
    }

    async fn record_ssh_host_key(&self, id: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sources SET ssh_host_key = ? WHERE id = ?")
            .bind(key)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend("recording the SSH host key"))?;
        Ok(())
    }

    async fn set_narrowed_window(&self, id: &str, seconds: Option<i64>) -> Result<(), StoreError> {
        sqlx::query("UPDATE sources SET narrowed_window_s = ? WHERE id = ?")
            .bind(seconds)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend("saving the narrowed window"))?;
        Ok(())
    }

    async fn set_cadence(&self, id: &str, cadence: Cadence) -> Result<(), StoreError> {
        sqlx::query("UPDATE sources SET effective_minutes = ?, fast_runs = ? WHERE id = ?")
            .bind(i64::from(cadence.effective_minutes))
            .bind(i64::from(cadence.fast_runs))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend("saving the schedule's cadence"))?;
        Ok(())
    }
}

#[async_trait]
impl RecordWriter for EmbeddedStore {
    async fn write_records(&self, source_id: &str, batch: RecordBatch, _check: bool) -> Result<WriteStats, StoreError> {
        // Comparing hashes costs nothing extra here: the upsert's WHERE does it.
        let records = batch.records();
        let now = Value::iso_timestamp(&Utc::now());
        let mut tx: Transaction<'_, Sqlite> = self.pool.begin().await.map_err(backend("writing records"))?;
        let mut stats = WriteStats::default();
        for r in records {
            let changed = sqlx::query(
                "INSERT INTO records (source_id, record_key, hash, date, fields, updated_at) VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (source_id, record_key) DO UPDATE SET
                   hash = excluded.hash, date = excluded.date, fields = excluded.fields, updated_at = excluded.updated_at
                 WHERE records.hash <> excluded.hash",
            )
            .bind(source_id)
            .bind(&r.key)
            .bind(r.hash_hex())
            .bind(r.date().map(|t| Value::iso_timestamp(&t)))
            .bind(fields_json(r))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(backend("writing records"))?
            .rows_affected();
            if changed == 1 {
                stats.written += 1;
            } else {
                stats.unchanged += 1;
            }
        }
        tx.commit().await.map_err(backend("writing records"))?;
        Ok(stats)
    }

    async fn upsert_members(&self, member_id_source: &str, members: Vec<Member>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend("writing members"))?;
        for m in &members {
            sqlx::query(
                "INSERT INTO members (member_id_source, member_id, name, team) VALUES (?, ?, ?, ?)
                 ON CONFLICT (member_id_source, member_id) DO UPDATE SET name = excluded.name, team = excluded.team",
            )
            .bind(member_id_source)
            .bind(&m.member_id)
            .bind(&m.name)
            .bind(&m.team)
            .execute(&mut *tx)
            .await
            .map_err(backend("writing members"))?;
            if let Some(team) = &m.team {
                sqlx::query("INSERT OR IGNORE INTO teams (member_id_source, name) VALUES (?, ?)")
                    .bind(member_id_source)
                    .bind(team)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend("writing teams"))?;
            }
        }
        tx.commit().await.map_err(backend("writing members"))?;
        Ok(())
    }
}

#[async_trait]
impl RunLog for EmbeddedStore {
    async fn put_run(&self, run: &Run) -> Result<(), StoreError> {
        sqlx::query("INSERT OR REPLACE INTO runs (source_id, run_id, body, expires_at) VALUES (?, ?, ?, ?)")
            .bind(&run.source_id)
            .bind(&run.id)
            .bind(encode_run(run))
            .bind(run.expires_at().timestamp())
            .execute(&self.pool)
            .await
            .map_err(backend("writing the run log"))?;
        // Expired logs go, as DynamoDB's TTL does it there.
        sqlx::query("DELETE FROM runs WHERE expires_at < ?")
            .bind(Utc::now().timestamp())
            .execute(&self.pool)
            .await
            .map_err(backend("expiring run logs"))?;
        Ok(())
    }

    async fn list_runs(&self, source_id: &str, limit: usize, before: Option<&str>) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM runs WHERE source_id = ? AND (? IS NULL OR run_id < ?) ORDER BY run_id DESC LIMIT ?",
        )
        .bind(source_id)
        .bind(before)
        .bind(before)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(backend("reading run logs"))?;
        rows.iter().map(|r| decode_run(source_id, r.get(0))).collect()
    }

    async fn get_run(&self, source_id: &str, run_id: &str) -> Result<Option<Run>, StoreError> {
        sqlx::query("SELECT body FROM runs WHERE source_id = ? AND run_id = ?")
            .bind(source_id)
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("reading a run"))?
            .map(|r| decode_run(source_id, r.get(0)))
            .transpose()
    }
}

#[async_trait]
impl BackfillJobs for EmbeddedStore {
    async fn create_backfill(&self, job: &Backfill) -> Result<BackfillCreated, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend("creating a backfill"))?;
        let state = sqlx::query(
            "SELECT (SELECT job_id FROM backfills b WHERE b.source_id = s.id AND b.active = 1) FROM sources s WHERE id = ?",
        )
        .bind(&job.source_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend("creating a backfill"))?;
        let Some(state) = state else {
            return Ok(BackfillCreated::SourceNotFound);
        };
        if let Some(existing) = state.get::<Option<String>, _>(0) {
            return Ok(BackfillCreated::Conflict { existing });
        }
        sqlx::query("INSERT INTO backfills (source_id, job_id, body, version, active) VALUES (?, ?, ?, ?, 1)")
            .bind(&job.source_id)
            .bind(&job.id)
            .bind(encode_job(job))
            .bind(job.version as i64)
            .execute(&mut *tx)
            .await
            .map_err(backend("creating a backfill"))?;
        tx.commit().await.map_err(backend("creating a backfill"))?;
        Ok(BackfillCreated::Created)
    }

    async fn get_backfill(&self, source_id: &str, job_id: &str) -> Result<Option<Backfill>, StoreError> {
        sqlx::query("SELECT * FROM backfills WHERE source_id = ? AND job_id = ?")
            .bind(source_id)
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("reading a backfill"))?
            .as_ref()
            .map(Self::backfill)
            .transpose()
    }

    async fn list_backfills(&self, source_id: &str, limit: usize) -> Result<Vec<Backfill>, StoreError> {
        sqlx::query("SELECT * FROM backfills WHERE source_id = ? ORDER BY job_id DESC LIMIT ?")
            .bind(source_id)
            .bind(limit.clamp(1, 1000) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(backend("reading backfills"))?
            .iter()
            .map(Self::backfill)
            .collect()
    }

    async fn save_backfill(&self, job: &mut Backfill) -> Result<SaveOutcome, StoreError> {
        let saved = sqlx::query(
            "UPDATE backfills SET body = ?, version = version + 1, active = ?
             WHERE source_id = ? AND job_id = ? AND version = ?",
        )
        .bind(encode_job(job))
        .bind(job.is_active() as i64)
        .bind(&job.source_id)
        .bind(&job.id)
        .bind(job.version as i64)
        .execute(&self.pool)
        .await
        .map_err(backend("saving a backfill"))?
        .rows_affected()
            == 1;
        if !saved {
            return Ok(SaveOutcome::Stale);
        }
        job.version += 1;
        Ok(SaveOutcome::Saved)
    }

    async fn request_backfill_cancel(
        &self,
        source_id: &str,
        job_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE backfills SET cancel_requested_us = COALESCE(cancel_requested_us, ?) WHERE source_id = ? AND job_id = ?",
        )
        .bind(to_micros(at))
        .bind(source_id)
        .bind(job_id)
        .execute(&self.pool)
        .await
        .map_err(backend("cancelling a backfill"))?
        .rows_affected()
            == 1)
    }

    async fn active_backfills(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT source_id, job_id FROM backfills WHERE active = 1")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("listing active backfills"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[async_trait]
impl RecordReader for EmbeddedStore {
    async fn get_record(&self, source_id: &str, key: &str) -> Result<Option<StoredRecord>, StoreError> {
        sqlx::query("SELECT record_key, hash, fields FROM records WHERE source_id = ? AND record_key = ?")
            .bind(source_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("reading a record"))?
            .as_ref()
            .map(stored_record)
            .transpose()
    }

    async fn count_records(&self, source_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM records WHERE source_id = ?")
            .bind(source_id)
            .fetch_one(&self.pool)
            .await
            .map_err(backend("counting records"))?;
        Ok(n as u64)
    }

    async fn list_members(&self, member_id_source: &str) -> Result<(Vec<Member>, Vec<String>), StoreError> {
        let members =
            sqlx::query("SELECT member_id, name, team FROM members WHERE member_id_source = ? ORDER BY member_id")
                .bind(member_id_source)
                .fetch_all(&self.pool)
                .await
                .map_err(backend("reading members"))?
                .iter()
                .map(|r| Member {
                    member_id: r.get(0),
                    name: r.get(1),
                    team: r.get(2),
                })
                .collect();
        let teams = sqlx::query_scalar("SELECT name FROM teams WHERE member_id_source = ? ORDER BY name")
            .bind(member_id_source)
            .fetch_all(&self.pool)
            .await
            .map_err(backend("reading teams"))?;
        Ok((members, teams))
    }
}

#[async_trait]
impl DeliveryLog for EmbeddedStore {
    async fn put_deliveries(&self, source_id: &str, states: &[DeliveryState]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend("saving delivery states"))?;
        for state in states {
            sqlx::query(
                "INSERT OR REPLACE INTO deliveries (source_id, record_key, hash, status, body) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(source_id)
            .bind(&state.record_key)
            .bind(&state.hash)
            .bind(state.status.as_str())
            .bind(serde_json::to_string(state).expect("states serialize"))
            .execute(&mut *tx)
            .await
            .map_err(backend("saving delivery states"))?;
        }
        tx.commit().await.map_err(backend("saving delivery states"))?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        source_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DeliveryState>, StoreError> {
        let status = status.map(DeliveryStatus::as_str);
        sqlx::query(
            "SELECT body FROM deliveries WHERE source_id = ? AND (? IS NULL OR record_key > ?)
               AND (? IS NULL OR status = ?) ORDER BY record_key LIMIT ?",
        )
        .bind(source_id)
        .bind(after)
        .bind(after)
        .bind(status)
        .bind(status)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(backend("reading delivery states"))?
        .iter()
        .map(|r| {
            serde_json::from_str(r.get(0)).map_err(|e| StoreError::Corrupt {
                what: format!("a delivery state of {source_id}"),
                reason: e.to_string(),
            })
        })
        .collect()
    }

    async fn undelivered(
        &self,
        source_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        sqlx::query(
            "SELECT r.record_key, r.hash, r.fields FROM records r
             LEFT JOIN deliveries d ON d.source_id = r.source_id AND d.record_key = r.record_key
             WHERE r.source_id = ? AND (? IS NULL OR r.record_key > ?) AND (d.hash IS NULL OR d.hash <> r.hash OR d.status = 'waiting')
             ORDER BY r.record_key LIMIT ?",
        )
        .bind(source_id)
        .bind(after)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(backend("reading undelivered records"))?
        .iter()
        .map(stored_record)
        .collect()
    }

    async fn parked(
        &self,
        source_id: &str,
        due_by: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DeliveryState>, StoreError> {
        // A laptop's store: the waiting states are few, and sorted here.
        let states = sqlx::query("SELECT body FROM deliveries WHERE source_id = ? AND status = 'waiting'")
            .bind(source_id)
            .fetch_all(&self.pool)
            .await
            .map_err(backend("reading parked calls"))?
            .iter()
            .map(|r| {
                serde_json::from_str(r.get(0)).map_err(|e| StoreError::Corrupt {
                    what: format!("a delivery state of {source_id}"),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<DeliveryState>, StoreError>>()?;
        Ok(sluice_core::delivery::due(states.into_iter(), due_by, limit))
    }
}

#[async_trait]
impl ConnectionStore for EmbeddedStore {
    async fn create_connection(&self, connection: &Connection) -> Result<bool, StoreError> {
        let created = sqlx::query("INSERT INTO connections (id, body) VALUES (?, ?) ON CONFLICT (id) DO NOTHING")
            .bind(&connection.id)
            .bind(connection.encode())
            .execute(&self.pool)
            .await
            .map_err(backend("creating a connection"))?
            .rows_affected();
        Ok(created == 1)
    }

    async fn update_connection(&self, connection: &Connection) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE connections SET body = ? WHERE id = ?")
            .bind(connection.encode())
            .bind(&connection.id)
            .execute(&self.pool)
            .await
            .map_err(backend("saving a connection"))?
            .rows_affected();
        Ok(updated == 1)
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM connections WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("reading a connection"))?;
        body.map(|b| Connection::decode(id, &b)).transpose()
    }

    async fn list_connections(&self) -> Result<Vec<Connection>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, body FROM connections ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("listing connections"))?;
        rows.iter().map(|(id, body)| Connection::decode(id, body)).collect()
    }

    async fn delete_connection(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM connections WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend("deleting a connection"))?;
        Ok(())
    }
}
