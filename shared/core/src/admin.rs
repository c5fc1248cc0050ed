//! Managing sources: create, change and delete them with their secret and schedule,
//! run the test query, read the import log. What a settings page calls; the requests
//! arrive parsed (the API function reads JSON bodies, the CLI its files).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cadence::Cadence;
use crate::delivery::{DeliveryState, DeliveryStatus};
use crate::ports::{
    Clock, Schedule, ScheduleError, Schedules, SecretWriter, Secrets, SecretsError, SourceReader, SourceState, Store,
    StoreError, SystemClock, WriteKey,
};
use crate::preview::Preview;
use crate::run::Run;
use crate::source::{ConnectionSecret, FieldError, SourceConfig};
use crate::window::Window;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(#[from] FieldError),
    #[error("source `{0}` does not exist")]
    NotFound(String),
    #[error("run `{run_id}` of source `{source_id}` does not exist")]
    RunNotFound { source_id: String, run_id: String },
    #[error("source `{0}` already exists")]
    Conflict(String),
    #[error("{0}")]
    Secrets(#[from] SecretsError),
    #[error("{0}")]
    Schedule(#[from] ScheduleError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A source as the API shows it: its config and state. Never a secret value: the
/// connection lives in the secret `secret_id` names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceView {
    #[serde(flatten)]
    pub config: SourceConfig,
    pub watermark: Option<DateTime<Utc>>,
    /// A run holds the source's lease now.
    pub running: bool,
    pub active_backfill: Option<String>,
    /// How often the schedule runs now: `frequency_minutes`, or less often while
    /// imports are slow (DESIGN §7).
    pub effective_frequency_minutes: u32,
    /// The SSH bastion's host key as recorded on first contact.
    pub ssh_host_key: Option<String>,
}

impl SourceView {
    /// The source's state as seen at `now`.
    pub fn new(s: SourceState, now: DateTime<Utc>) -> Self {
        SourceView {
            effective_frequency_minutes: s.cadence.minutes(s.config.frequency_minutes),
            running: s.lease.is_some_and(|l| l.expires_at > now),
            config: s.config,
            watermark: s.watermark,
            active_backfill: s.active_backfill,
            ssh_host_key: s.ssh_host_key,
        }
    }

    /// A source that has never been stored.
    pub fn unsaved(config: SourceConfig) -> Self {
        SourceView {
            effective_frequency_minutes: config.frequency_minutes,
            config,
            watermark: None,
            running: false,
            active_backfill: None,
            ssh_host_key: None,
        }
    }
}

/// One page of the import log, newest first; `next` is the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunsPage {
    pub runs: Vec<Run>,
    pub next: Option<String>,
}

/// One page of a source's delivery states, by record key; `next` is the cursor of the
/// next page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveriesPage {
    pub deliveries: Vec<DeliveryState>,
    pub next: Option<String>,
}

/// A source as its owner sends it: the config, and either a `connection` to store as
/// the secret Sluice owns (`secret_id` then names it, see [`SourceAdmin::owned_secret`])
/// or none (`secret_id` names an existing secret).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInput {
    pub config: SourceConfig,
    pub connection: Option<ConnectionSecret>,
    /// The destination's write key, to store as the secret Sluice owns
    /// ([`SourceAdmin::owned_write_key`]); none keeps the secret the destination names.
    pub write_key: Option<WriteKey>,
}

/// A test query: of the saved source, or of an unsaved one, for a given window or the
/// next run's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestQuery {
    pub source: Option<SourceInput>,
    pub window: Option<Window>,
}

pub struct SourceAdmin {
    store: Arc<dyn Store>,
    reader: Arc<dyn SourceReader>,
    secrets: Arc<dyn Secrets>,
    secret_writer: Arc<dyn SecretWriter>,
    schedules: Arc<dyn Schedules>,
    clock: Arc<dyn Clock>,
    /// Secrets that Sluice creates are named `{secret_prefix}{source_id}`.
    secret_prefix: String,
}

impl SourceAdmin {
    pub fn new(
        store: Arc<dyn Store>,
        reader: Arc<dyn SourceReader>,
        secrets: Arc<dyn Secrets>,
        secret_writer: Arc<dyn SecretWriter>,
        schedules: Arc<dyn Schedules>,
        secret_prefix: impl Into<String>,
    ) -> Self {
        SourceAdmin {
            store,
            reader,
            secrets,
            secret_writer,
            schedules,
            clock: Arc::new(SystemClock),
            secret_prefix: secret_prefix.into(),
        }
    }

    /// Reads time through `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The name of the secret Sluice stores a new source's connection as.
    pub fn owned_secret(&self, id: &str) -> String {
        format!("{}{id}", self.secret_prefix)
    }

    /// The name of the secret Sluice stores a source's write key as.
    pub fn owned_write_key(&self, id: &str) -> String {
        format!("{}{id}/write-key", self.secret_prefix)
    }

    /// Creates a source, its secret when it brings a connection, and its schedule. The
    /// same request sent again after a failure (or a lost answer) finishes the work.
    pub async fn create(&self, input: SourceInput) -> Result<SourceView, AdminError> {
        self.check(&input)?;
        let config = &input.config;
        if let Some(existing) = self.store.get_source(&config.id).await?
            && !self.left_by_the_same_create(&existing, &input).await?
        {
            return Err(AdminError::Conflict(config.id.clone()));
        }
        self.keep_secrets(&input).await?;
        self.store.put_source(config).await?;
        self.schedules.put_schedule(&schedule_of(config)).await?;
        self.get(&config.id).await
    }

    pub async fn get(&self, id: &str) -> Result<SourceView, AdminError> {
        Ok(SourceView::new(self.state(id).await?, self.clock.now()))
    }

    pub async fn list(&self) -> Result<Vec<SourceView>, AdminError> {
        let now = self.clock.now();
        Ok(self
            .store
            .list_sources()
            .await?
            .into_iter()
            .map(|s| SourceView::new(s, now))
            .collect())
    }

    /// Replaces the config of source `id`; a new `connection` replaces the secret's
    /// value. The schedule follows the frequency, `enabled` and `start_at`.
    pub async fn replace(&self, id: &str, input: SourceInput) -> Result<SourceView, AdminError> {
        let current = self.state(id).await?;
        if input.config.id != id {
            return Err(FieldError::new("id", "cannot change; create a new source instead").into());
        }
        self.check(&input)?;
        let config = &input.config;
        self.keep_secrets(&input).await?;
        self.store.put_source(config).await?;
        let mut schedule = schedule_of(config);
        if config.frequency_minutes == current.config.frequency_minutes {
            // The adaptive frequency stands until the owner picks a new one.
            schedule.every_minutes = current.cadence.minutes(config.frequency_minutes);
        } else {
            self.store.set_cadence(id, Cadence::default()).await?;
        }
        self.schedules.put_schedule(&schedule).await?;
        self.get(id).await
    }

    /// Deletes the source, its schedule and the secret Sluice created for it; its
    /// records stay unless `purge`. Returns how many records were purged.
    pub async fn delete(&self, id: &str, purge: bool) -> Result<u64, AdminError> {
        let state = self.state(id).await?;
        self.schedules.delete_schedule(id).await?;
        if state.config.secret_id == self.owned_secret(id) {
            self.secret_writer.delete(&state.config.secret_id).await?;
        }
        if let Some(d) = state
            .config
            .destination
            .filter(|d| d.secret_id == self.owned_write_key(id))
        {
            self.secret_writer.delete(&d.secret_id).await?;
        }
        Ok(self.store.delete_source(id, purge).await?)
    }

    /// The test query of the saved source `id`, or of the unsaved source the request
    /// brings (its connection used for this query only). Writes nothing.
    pub async fn test_query(&self, id: &str, request: TestQuery) -> Result<Preview, AdminError> {
        if let Some(w) = request.window
            && w.to <= w.from
        {
            return Err(FieldError::new("window.upper_date_limit", "must be after last_update_time").into());
        }
        let state = self.store.get_source(id).await?;
        let inline;
        let (config, secrets): (&SourceConfig, &dyn Secrets) = match &request.source {
            Some(input) => {
                self.check(input)?;
                match &input.connection {
                    Some(c) => {
                        inline = InlineSecret(c.clone());
                        (&input.config, &inline)
                    }
                    None => (&input.config, &*self.secrets),
                }
            }
            None => {
                let state = state.as_ref().ok_or_else(|| AdminError::NotFound(id.into()))?;
                (&state.config, &*self.secrets)
            }
        };
        let now = self.clock.now();
        Ok(crate::preview::preview(&*self.reader, secrets, config, state.as_ref(), request.window, now).await)
    }

    /// A page of the source's delivery states, only those of `status` when given.
    pub async fn deliveries(
        &self,
        id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<DeliveriesPage, AdminError> {
        self.state(id).await?;
        let limit = limit.clamp(1, 1000);
        let deliveries = self.store.list_deliveries(id, status, limit, after).await?;
        let next = (deliveries.len() == limit).then(|| deliveries[limit - 1].record_key.clone());
        Ok(DeliveriesPage { deliveries, next })
    }

    /// A page of the source's import log, newest first.
    pub async fn runs(&self, id: &str, limit: usize, before: Option<&str>) -> Result<RunsPage, AdminError> {
        self.state(id).await?;
        let limit = limit.clamp(1, 100);
        let runs = self.store.list_runs(id, limit, before).await?;
        let next = (runs.len() == limit).then(|| runs[limit - 1].id.clone());
        Ok(RunsPage { runs, next })
    }

    pub async fn run(&self, id: &str, run_id: &str) -> Result<Run, AdminError> {
        self.store
            .get_run(id, run_id)
            .await?
            .ok_or_else(|| AdminError::RunNotFound {
                source_id: id.into(),
                run_id: run_id.into(),
            })
    }

    async fn state(&self, id: &str) -> Result<SourceState, AdminError> {
        self.store
            .get_source(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(id.into()))
    }

    /// What a source must be before anything is stored: a valid config, and a
    /// connection (if any) of its engine, stored under the secret Sluice owns.
    fn check(&self, input: &SourceInput) -> Result<(), FieldError> {
        let config = &input.config;
        config.validate()?;
        if input.write_key.is_some() {
            match &config.destination {
                None => return Err(FieldError::new("destination.write_key", "needs a destination")),
                Some(d) if d.secret_id != self.owned_write_key(&config.id) => {
                    return Err(FieldError::new(
                        "destination.secret_id",
                        "give either secret_id (an existing secret) or write_key (stored as a new secret), not both",
                    ));
                }
                Some(_) => {}
            }
        }
        // The deliver function may read only write keys (template.yaml: `{prefix}*/write-key`).
        if let Some(d) = &config.destination
            && !(d.secret_id.starts_with(&self.secret_prefix) && d.secret_id.ends_with("/write-key"))
        {
            return Err(FieldError::new(
                "destination.secret_id",
                format!(
                    "must name a write-key secret, {}NAME/write-key: the deliver function may read no other; or give write_key, which Sluice stores as {}",
                    self.secret_prefix,
                    self.owned_write_key(&config.id)
                ),
            ));
        }
        // Secrets Manager keeps at most 64 KiB a secret; past that it would refuse it as a 502.
        let too_large = |field: &str, bytes: usize| {
            Err(FieldError::new(
                field,
                format!("is {bytes} bytes; a secret may be at most {MAX_SECRET_BYTES} (64 KiB)"),
            ))
        };
        if let Some(key) = input.write_key.as_ref().filter(|k| k.0.len() > MAX_SECRET_BYTES) {
            return too_large("destination.write_key", key.0.len());
        }
        let Some(c) = &input.connection else { return Ok(()) };
        let bytes = serde_json::to_string(c).map_or(0, |t| t.len());
        if bytes > MAX_SECRET_BYTES {
            return too_large("connection", bytes);
        }
        if c.engine != config.engine {
            return Err(FieldError::new(
                "connection.engine",
                format!("is {} but the source's engine is {}", c.engine, config.engine),
            ));
        }
        if config.secret_id != self.owned_secret(&config.id) {
            return Err(FieldError::new(
                "secret_id",
                "give either secret_id (an existing secret) or connection (stored as a new secret), not both",
            ));
        }
        self.reader
            .check(c)
            .map_err(|e| FieldError::new("connection", e.message))
    }

    /// Stores a new connection and write key, or checks that the secrets named exist
    /// and hold what they should.
    /// Whether `existing` is what an earlier send of `input` left when it failed part-way:
    /// the same config, never run, and the secrets it stored hold the same values. Anything
    /// else under the id is another source, which a create must not overwrite.
    async fn left_by_the_same_create(&self, existing: &SourceState, input: &SourceInput) -> Result<bool, AdminError> {
        let config = &input.config;
        if existing.config != *config || existing.watermark.is_some() || existing.lease.is_some() {
            return Ok(false);
        }
        let same = |stored: Result<bool, SecretsError>| match stored {
            Err(SecretsError::NotFound { .. }) => Ok(true),
            other => other.map_err(AdminError::from),
        };
        if let Some(c) = &input.connection
            && !same(self.secrets.connection(&config.secret_id).await.map(|s| s == *c))?
        {
            return Ok(false);
        }
        if let (Some(key), Some(d)) = (&input.write_key, &config.destination)
            && !same(self.secrets.write_key(&d.secret_id).await.map(|s| s == *key))?
        {
            return Ok(false);
        }
        Ok(true)
    }

    async fn keep_secrets(&self, input: &SourceInput) -> Result<(), AdminError> {
        let config = &input.config;
        let refused = |field: &str, e: SecretsError| match e {
            SecretsError::NotFound { .. } | SecretsError::Malformed { .. } => {
                AdminError::BadRequest(FieldError::new(field, e.to_string()))
            }
            other => other.into(),
        };
        match &input.connection {
            Some(c) => self.secret_writer.put_connection(&config.secret_id, c).await?,
            None => drop(
                self.secrets
                    .connection(&config.secret_id)
                    .await
                    .map_err(|e| refused("secret_id", e))?,
            ),
        }
        match (&input.write_key, &config.destination) {
            (Some(key), Some(d)) => self.secret_writer.put_write_key(&d.secret_id, key).await?,
            (None, Some(d)) => drop(
                self.secrets
                    .write_key(&d.secret_id)
                    .await
                    .map_err(|e| refused("destination.secret_id", e))?,
            ),
            (_, None) => {}
        }
        Ok(())
    }
}

/// The largest secret Secrets Manager keeps.
const MAX_SECRET_BYTES: usize = 65_536;

fn schedule_of(config: &SourceConfig) -> Schedule {
    Schedule {
        source_id: config.id.clone(),
        every_minutes: config.frequency_minutes,
        start_at: config.start_at,
        enabled: config.enabled,
    }
}

/// The connection of an unsaved config's test query, held only for that query.
struct InlineSecret(ConnectionSecret);

#[async_trait]
impl Secrets for InlineSecret {
    async fn value(&self, _secret_id: &str) -> Result<serde_json::Value, SecretsError> {
        Ok(serde_json::to_value(&self.0).expect("secrets serialize"))
    }
}
