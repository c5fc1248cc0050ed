//! Managing sources: create, change and delete them with their secret and schedule,
//! run the test query, read the import log; and the connections several sources of
//! one database share. A source reaches only the secrets made for it or a
//! connection's. What a settings page calls; the requests arrive parsed (the API
//! function reads JSON bodies, the CLI its files).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cadence::Cadence;
use crate::connection::{Connection, SHARED_NAMESPACE, check_id, check_member_namespace};
use crate::delivery::{DeliveryState, DeliveryStatus};
use crate::ports::{
    Clock, Schedule, ScheduleError, Schedules, SecretWriter, Secrets, SecretsError, SourceReader, SourceState, Store,
    StoreError, SystemClock, WriteKey,
};
use crate::preview::{Preview, PreviewLimits};
use crate::run::Run;
use crate::source::{ConnectionSecret, Engine, FieldError, SourceConfig, SyncType};
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
    #[error("connection `{0}` does not exist")]
    ConnectionNotFound(String),
    #[error("connection `{0}` already exists")]
    ConnectionConflict(String),
    #[error(
        "connection `{id}` is used by the sources {}; give them another connection_id (or their own connection) first",
        sources.join(", ")
    )]
    ConnectionInUse { id: String, sources: Vec<String> },
    #[error(
        "secret `{0}` already exists and holds another value: another request created it at the same time, or it was left there; send your request again once the other finished, or delete the secret"
    )]
    SecretTaken(String),
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
    /// The connection whose secret the source uses, when it uses one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
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
            connection_id: None,
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
            connection_id: None,
        }
    }
}

/// A connection as the API shows it: what it is, the name of its secret (never the
/// value), and the sources that use it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionView {
    #[serde(flatten)]
    pub connection: Connection,
    pub secret_id: String,
    pub sources: Vec<String>,
}

/// A connection as its owner sends it, with the secret to store (required to create
/// it; to change it, optional).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionInput {
    pub connection: Connection,
    pub secret: Option<ConnectionSecret>,
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
    test_query_limits: PreviewLimits,
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
            test_query_limits: PreviewLimits::default(),
        }
    }

    /// Caps the test query (the API's answer must beat API Gateway's 29 s).
    pub fn with_test_query_limits(mut self, limits: PreviewLimits) -> Self {
        self.test_query_limits = limits;
        self
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

    /// The name of the secret Sluice stores a connection as. Source ids have no `/`, so
    /// no source's own secret is ever named so (and no source may be called
    /// `connections`, whose write key would be).
    pub fn connection_secret(&self, id: &str) -> String {
        format!("{}{CONNECTIONS}/{id}", self.secret_prefix)
    }

    /// The connection whose secret `secret_id` names, if it names one.
    fn connection_of<'a>(&self, secret_id: &'a str) -> Option<&'a str> {
        secret_id
            .strip_prefix(self.secret_prefix.as_str())?
            .strip_prefix(CONNECTIONS)?
            .strip_prefix('/')
    }

    fn view(&self, state: SourceState, now: DateTime<Utc>) -> SourceView {
        let mut view = SourceView::new(state, now);
        view.connection_id = self.connection_of(&view.config.secret_id).map(str::to_string);
        view
    }

    /// Creates a source, its secret when it brings a connection, and its schedule. The
    /// same request sent again after a failure (or a lost answer) finishes the work; two
    /// creates of one id at once never mix: the source item is written only where
    /// absent, and so are its secrets.
    pub async fn create(&self, input: SourceInput) -> Result<SourceView, AdminError> {
        self.check(&input)?;
        let config = &input.config;
        if config.id == CONNECTIONS {
            return Err(FieldError::new(
                "id",
                format!(
                    "`{CONNECTIONS}` is reserved: connections' secrets are named {}{CONNECTIONS}/…; choose another id",
                    self.secret_prefix
                ),
            )
            .into());
        }
        self.check_references(&input, None).await?;
        let created = self.store.create_source(config).await?;
        if !created {
            match self.store.get_source(&config.id).await? {
                Some(existing) if self.left_by_the_same_create(&existing, &input).await? => {}
                _ => return Err(AdminError::Conflict(config.id.clone())),
            }
        }
        if let Err(e) = self.claim_members(config, None).await {
            if created && matches!(e, AdminError::BadRequest(_)) {
                // Refused: the source this request stored must not stay.
                self.store.delete_source(&config.id, false).await?;
            }
            return Err(e);
        }
        self.keep_secrets(&input, true).await?;
        self.schedules.put_schedule(&schedule_of(config)).await?;
        self.get(&config.id).await
    }

    pub async fn get(&self, id: &str) -> Result<SourceView, AdminError> {
        Ok(self.view(self.state(id).await?, self.clock.now()))
    }

    pub async fn list(&self) -> Result<Vec<SourceView>, AdminError> {
        let now = self.clock.now();
        Ok(self
            .store
            .list_sources()
            .await?
            .into_iter()
            .map(|s| self.view(s, now))
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
        self.check_references(&input, Some(&current.config)).await?;
        self.claim_members(config, Some(&current.config)).await?;
        self.keep_secrets(&input, false).await?;
        // Freed before the config moves, so that a change sent again after a failure
        // still frees it; a source that still writes there is found by its config.
        if let Some(old) = claimed_namespace(&current.config)
            && claimed_namespace(config) != Some(old)
        {
            self.store.release_member_namespace(old, id).await?;
        }
        self.store.put_source(config).await?;
        let mut schedule = schedule_of(config);
        if config.frequency_minutes == current.config.frequency_minutes {
            // The adaptive frequency stands until the owner picks a new one.
            schedule.every_minutes = current.cadence.minutes(config.frequency_minutes);
        } else {
            self.store.set_cadence(id, Cadence::default()).await?;
        }
        self.schedules.put_schedule(&schedule).await?;
        // A secret of its own the source no longer names (it moved to a connection, or
        // dropped its destination) would only cost money.
        let own = self.owned_secret(id);
        if current.config.secret_id == own && config.secret_id != own {
            self.secret_writer.delete(&own).await?;
        }
        let own = self.owned_write_key(id);
        let names = |c: &SourceConfig| c.destination.as_ref().is_some_and(|d| d.secret_id == own);
        if names(&current.config) && !names(config) {
            self.secret_writer.delete(&own).await?;
        }
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
            .as_ref()
            .filter(|d| d.secret_id == self.owned_write_key(id))
        {
            self.secret_writer.delete(&d.secret_id).await?;
        }
        // Before the source item: a delete that fails after it is sent again, and finds
        // the source still there to finish.
        if let Some(namespace) = claimed_namespace(&state.config) {
            self.store.release_member_namespace(namespace, id).await?;
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
                self.check_references(input, state.as_ref().map(|s| &s.config)).await?;
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
        let limits = self.test_query_limits;
        Ok(crate::preview::preview(&*self.reader, secrets, config, state.as_ref(), request.window, limits).await)
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

    /// Creates a connection and its secret. Like a source's create, the same request
    /// sent again finishes it, and two creates of one id at once never mix: the item and
    /// the secret are written only where absent.
    pub async fn create_connection(&self, input: ConnectionInput) -> Result<ConnectionView, AdminError> {
        let connection = &input.connection;
        connection.validate()?;
        let secret = input.secret.as_ref().ok_or_else(|| {
            FieldError::new(
                "connection",
                "is required: the database's connection secret (README \"Connection secrets\")",
            )
        })?;
        self.check_connection(connection.engine, secret, "the connection's")?;
        if !self.store.create_connection(connection).await?
            && self.store.get_connection(&connection.id).await?.as_ref() != Some(connection)
        {
            return Err(AdminError::ConnectionConflict(connection.id.clone()));
        }
        self.write_secret(&self.connection_secret(&connection.id), to_json(secret), true)
            .await?;
        self.connection(&connection.id).await
    }

    pub async fn connection(&self, id: &str) -> Result<ConnectionView, AdminError> {
        let connection = self.stored_connection(id).await?;
        let sources = self.users_of(id).await?;
        Ok(self.connection_view(connection, sources))
    }

    pub async fn connections(&self) -> Result<Vec<ConnectionView>, AdminError> {
        let sources = self.store.list_sources().await?;
        Ok(self
            .store
            .list_connections()
            .await?
            .into_iter()
            .map(|c| {
                let secret_id = self.connection_secret(&c.id);
                let users = sources
                    .iter()
                    .filter(|s| s.config.secret_id == secret_id)
                    .map(|s| s.config.id.clone())
                    .collect();
                self.connection_view(c, users)
            })
            .collect())
    }

    /// Replaces what connection `id` is, and its secret's value when `input` brings one
    /// (its sources use the new value from their next run). Its engine changes only
    /// while no source uses it.
    pub async fn replace_connection(&self, id: &str, input: ConnectionInput) -> Result<ConnectionView, AdminError> {
        let current = self.stored_connection(id).await?;
        let connection = &input.connection;
        if connection.id != id {
            return Err(FieldError::new("id", "cannot change; create a new connection instead").into());
        }
        connection.validate()?;
        let sources = self.users_of(id).await?;
        if connection.engine != current.engine && !sources.is_empty() {
            return Err(FieldError::new(
                "engine",
                format!(
                    "cannot change while the sources {} use the connection",
                    sources.join(", ")
                ),
            )
            .into());
        }
        match &input.secret {
            Some(secret) => {
                self.check_connection(connection.engine, secret, "the connection's")?;
                self.write_secret(&self.connection_secret(id), to_json(secret), false)
                    .await?;
            }
            None if connection.engine != current.engine => {
                return Err(FieldError::new(
                    "connection",
                    "is required to change the engine: the new database's secret",
                )
                .into());
            }
            None => {}
        }
        if !self.store.update_connection(connection).await? {
            return Err(AdminError::ConnectionNotFound(id.into()));
        }
        Ok(self.connection_view(input.connection, sources))
    }

    /// Deletes connection `id` and its secret; refused while a source uses it.
    pub async fn delete_connection(&self, id: &str) -> Result<(), AdminError> {
        self.stored_connection(id).await?;
        let sources = self.users_of(id).await?;
        if !sources.is_empty() {
            return Err(AdminError::ConnectionInUse { id: id.into(), sources });
        }
        // The secret first: a connection item without its secret can be deleted again.
        self.secret_writer.delete(&self.connection_secret(id)).await?;
        Ok(self.store.delete_connection(id).await?)
    }

    async fn stored_connection(&self, id: &str) -> Result<Connection, AdminError> {
        // An id no connection can have (a path separator, 1 KB) is not looked up.
        if check_id("id", id).is_err() {
            return Err(AdminError::ConnectionNotFound(id.into()));
        }
        self.store
            .get_connection(id)
            .await?
            .ok_or_else(|| AdminError::ConnectionNotFound(id.into()))
    }

    /// The ids of the sources that use connection `id`.
    async fn users_of(&self, id: &str) -> Result<Vec<String>, AdminError> {
        let secret_id = self.connection_secret(id);
        Ok(self
            .store
            .list_sources()
            .await?
            .into_iter()
            .filter(|s| s.config.secret_id == secret_id)
            .map(|s| s.config.id)
            .collect())
    }

    fn connection_view(&self, connection: Connection, sources: Vec<String>) -> ConnectionView {
        ConnectionView {
            secret_id: self.connection_secret(&connection.id),
            connection,
            sources,
        }
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
        if let Some(key) = input.write_key.as_ref().filter(|k| k.0.len() > MAX_SECRET_BYTES) {
            return too_large("destination.write_key", key.0.len());
        }
        let Some(c) = &input.connection else { return Ok(()) };
        if config.secret_id != self.owned_secret(&config.id) {
            return Err(FieldError::new(
                "secret_id",
                "give either secret_id (an existing secret) or connection (stored as a new secret), not both",
            ));
        }
        self.check_connection(config.engine, c, "the source's")
    }

    /// A connection secret worth storing: within Secrets Manager's size, of `engine`
    /// (`whose`: the source's or the connection's), and complete for its engine.
    fn check_connection(&self, engine: Engine, c: &ConnectionSecret, whose: &str) -> Result<(), FieldError> {
        let bytes = serde_json::to_string(c).map_or(0, |t| t.len());
        if bytes > MAX_SECRET_BYTES {
            return too_large("connection", bytes);
        }
        if c.engine != engine {
            return Err(FieldError::new(
                "connection.engine",
                format!("is {} but {whose} engine is {engine}", c.engine),
            ));
        }
        self.reader
            .check(c)
            .map_err(|e| FieldError::new("connection", e.message))
    }

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

    /// Stores a new connection and write key (on `create`, only where no secret has the
    /// name yet), or checks that the secrets named exist and hold what they should.
    async fn keep_secrets(&self, input: &SourceInput, create: bool) -> Result<(), AdminError> {
        let config = &input.config;
        let refused = |field: &str, e: SecretsError| match e {
            SecretsError::NotFound { .. } | SecretsError::Malformed { .. } => {
                AdminError::BadRequest(FieldError::new(field, e.to_string()))
            }
            other => other.into(),
        };
        match &input.connection {
            Some(c) => self.write_secret(&config.secret_id, to_json(c), create).await?,
            None => drop(
                self.secrets
                    .connection(&config.secret_id)
                    .await
                    .map_err(|e| refused("secret_id", e))?,
            ),
        }
        match (&input.write_key, &config.destination) {
            (Some(key), Some(d)) => {
                self.write_secret(&d.secret_id, serde_json::json!({ "write_key": key.0 }), create)
                    .await?
            }
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

    /// Writes a secret: on `create` only where absent (one there already is this
    /// request's, sent again, when it holds the same value, and another's otherwise),
    /// else replacing its value.
    async fn write_secret(&self, name: &str, value: serde_json::Value, create: bool) -> Result<(), AdminError> {
        if !create {
            return Ok(self.secret_writer.put(name, &value).await?);
        }
        if self.secret_writer.create(name, &value).await? || self.secrets.value(name).await? == value {
            Ok(())
        } else {
            Err(AdminError::SecretTaken(name.to_string()))
        }
    }

    /// What a source may reach: its own secrets (named after its id), or a connection
    /// of its engine. A reference the stored source (`current`) already had is kept,
    /// so sources saved before this rule can still be changed.
    async fn check_references(&self, input: &SourceInput, current: Option<&SourceConfig>) -> Result<(), AdminError> {
        let config = &input.config;
        let own = self.owned_secret(&config.id);
        let kept = current.is_some_and(|c| c.secret_id == config.secret_id);
        match self.connection_of(&config.secret_id) {
            Some(connection_id) => {
                check_id("connection_id", connection_id)?;
                let connection = self.store.get_connection(connection_id).await?.ok_or_else(|| {
                    FieldError::new(
                        "connection_id",
                        format!("connection `{connection_id}` does not exist; create it with POST /connections"),
                    )
                })?;
                if connection.engine != config.engine {
                    return Err(FieldError::new(
                        "connection_id",
                        format!(
                            "connection `{connection_id}` is a {} database but the source's engine is {}",
                            connection.engine, config.engine
                        ),
                    )
                    .into());
                }
            }
            None if config.secret_id != own && !kept => {
                return Err(FieldError::new(
                    "secret_id",
                    format!(
                        "`{}` is not this source's secret: a source uses the secret made for it (`{own}`, stored from `connection`) or a connection's (`connection_id`, see POST /connections)",
                        config.secret_id
                    ),
                )
                .into());
            }
            None => {}
        }
        if let Some(d) = &config.destination {
            let own = self.owned_write_key(&config.id);
            let kept = current
                .and_then(|c| c.destination.as_ref())
                .is_some_and(|c| c.secret_id == d.secret_id);
            if d.secret_id != own && !kept {
                return Err(FieldError::new(
                    "destination.secret_id",
                    format!(
                        "`{}` is not this source's write key: give `write_key`, stored as `{own}`",
                        d.secret_id
                    ),
                )
                .into());
            }
            // A write key goes only where it was given for: a caller who may change the
            // source but never saw the key must not have it sent to a host of theirs.
            if let Some(before) = current.and_then(|c| c.destination.as_ref())
                && input.write_key.is_none()
                && before.secret_id == d.secret_id
                && (before.kind != d.kind || before.region != d.region || before.base_url != d.base_url)
            {
                return Err(FieldError::new(
                    "destination.write_key",
                    "the destination's address changed, so its write key is not sent there unless given again: give `write_key` with the new kind, region or base_url",
                )
                .into());
            }
        }
        Ok(())
    }

    /// Claims the member namespace a registration source writes into, unless it is
    /// shared on purpose (`shared:…`): one source must not overwrite another's members.
    async fn claim_members(&self, config: &SourceConfig, current: Option<&SourceConfig>) -> Result<(), AdminError> {
        if let Some(namespace) = &config.member_id_source
            && current.and_then(|c| c.member_id_source.as_ref()) != Some(namespace)
        {
            check_member_namespace(namespace)?;
        }
        let Some(namespace) = claimed_namespace(config) else {
            return Ok(());
        };
        let mut holder = self.store.claim_member_namespace(namespace, &config.id).await?;
        if let Some(h) = holder.clone()
            && self.store.get_source(&h).await?.is_none()
        {
            // Its holder is gone (deleted before it could free it): free it, and claim again.
            self.store.release_member_namespace(namespace, &h).await?;
            holder = self.store.claim_member_namespace(namespace, &config.id).await?;
        }
        if holder.is_none() {
            // Sources saved before claims existed hold none: they are found by their config.
            holder = self
                .store
                .list_sources()
                .await?
                .into_iter()
                .find(|s| s.config.id != config.id && claimed_namespace(&s.config) == Some(namespace))
                .map(|s| s.config.id);
            if holder.is_some() {
                self.store.release_member_namespace(namespace, &config.id).await?;
            }
        }
        match holder {
            None => Ok(()),
            Some(holder) => Err(FieldError::new(
                "member_id_source",
                format!(
                    "`{namespace}` is the member namespace of source `{holder}`; this source would overwrite its members. Choose another, or share one on purpose: `member_id_source: \"{SHARED_NAMESPACE}{namespace}\"` in every source that shares it"
                ),
            )
            .into()),
        }
    }
}

/// Where sources' own secrets end and connections' begin, under the prefix.
const CONNECTIONS: &str = "connections";

/// The member namespace a source holds alone: registrations write members, in their
/// `member_id_source`, unless it is shared on purpose.
fn claimed_namespace(config: &SourceConfig) -> Option<&str> {
    let namespace = config.member_id_source();
    (config.sync_type == SyncType::Registration && !namespace.starts_with(SHARED_NAMESPACE)).then_some(namespace)
}

fn to_json(secret: &ConnectionSecret) -> serde_json::Value {
    serde_json::to_value(secret).expect("secrets serialize")
}

/// The largest secret Secrets Manager keeps.
const MAX_SECRET_BYTES: usize = 65_536;

/// Secrets Manager keeps at most 64 KiB a secret; past that it would refuse it as a 502.
fn too_large(field: &str, bytes: usize) -> Result<(), FieldError> {
    Err(FieldError::new(
        field,
        format!("is {bytes} bytes; a secret may be at most {MAX_SECRET_BYTES} (64 KiB)"),
    ))
}

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
