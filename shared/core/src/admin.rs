//! Managing sources (issue 4): create, change and delete them with their secret and
//! schedule, run the test query, read the import log. What a settings page calls.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::backfill::{RequestError, parse_instant};
use crate::cadence::Cadence;
use crate::ports::{
    Schedule, ScheduleError, Schedules, SecretWriter, Secrets, SecretsError, SourceReader, SourceState, Store,
    StoreError,
};
use crate::preview::Preview;
use crate::run::Run;
use crate::source::{ConnectionSecret, SourceConfig};
use crate::window::Window;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(#[from] RequestError),
    #[error("source `{0}` does not exist")]
    NotFound(String),
    #[error("run `{run_id}` of source `{source_id}` does not exist")]
    RunNotFound { source_id: String, run_id: String },
    #[error("source `{0}` already exists; change it with PATCH /sources/{0}")]
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
}

impl From<SourceState> for SourceView {
    fn from(s: SourceState) -> Self {
        SourceView {
            effective_frequency_minutes: s.cadence.minutes(s.config.frequency_minutes),
            running: s.lease.is_some_and(|l| l.expires_at > Utc::now()),
            config: s.config,
            watermark: s.watermark,
            active_backfill: s.active_backfill,
        }
    }
}

/// One page of the import log, newest first; `next` is the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunsPage {
    pub runs: Vec<Run>,
    pub next: Option<String>,
}

/// The body of a test query: an unsaved config (and its connection), and a window.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestQuery {
    source: Option<Json>,
    connection: Option<Json>,
    window: Option<WindowBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowBody {
    last_update_time: String,
    upper_date_limit: String,
}

pub struct SourceAdmin {
    store: Arc<dyn Store>,
    reader: Arc<dyn SourceReader>,
    secrets: Arc<dyn Secrets>,
    secret_writer: Arc<dyn SecretWriter>,
    schedules: Arc<dyn Schedules>,
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
            secret_prefix: secret_prefix.into(),
        }
    }

    /// Creates a source from the JSON of a [`SourceConfig`], plus either `secret_id` (an
    /// existing secret) or `connection` (stored as a new secret), and its schedule.
    pub async fn create(&self, body: Json) -> Result<SourceView, AdminError> {
        let (config, connection) = self.parse(body, None)?;
        if self.store.get_source(&config.id).await?.is_some() {
            return Err(AdminError::Conflict(config.id));
        }
        self.keep_secret(&config, connection.as_ref()).await?;
        self.store.put_source(&config).await?;
        self.schedules.put_schedule(&schedule_of(&config)).await?;
        self.get(&config.id).await
    }

    pub async fn get(&self, id: &str) -> Result<SourceView, AdminError> {
        Ok(self.state(id).await?.into())
    }

    pub async fn list(&self) -> Result<Vec<SourceView>, AdminError> {
        Ok(self.store.list_sources().await?.into_iter().map(Into::into).collect())
    }

    /// Changes the fields `body` names (a JSON merge of the top-level fields); a new
    /// `connection` replaces the secret's value. The schedule follows the frequency,
    /// `enabled` and `start_at`.
    pub async fn patch(&self, id: &str, body: Json) -> Result<SourceView, AdminError> {
        let current = self.state(id).await?;
        let Json::Object(changes) = body else {
            return Err(RequestError::new("body", "must be a JSON object of the fields to change").into());
        };
        let mut merged = serde_json::to_value(&current.config).expect("configs serialize");
        for (field, value) in changes {
            if field == "id" && value != Json::String(id.into()) {
                return Err(RequestError::new("id", "cannot change; create a new source instead").into());
            }
            merged[field] = value;
        }
        let (config, connection) = self.parse(merged, Some(id))?;
        self.keep_secret(&config, connection.as_ref()).await?;
        self.store.put_source(&config).await?;
        let mut schedule = schedule_of(&config);
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
            self.secret_writer.delete_connection(&state.config.secret_id).await?;
        }
        Ok(self.store.delete_source(id, purge).await?)
    }

    /// The test query of the saved source `id`, or of the unsaved config in `body`
    /// (`{"source": {...}, "connection": {...}, "window": {...}}`, each optional).
    pub async fn test_query(&self, id: &str, body: Option<Json>) -> Result<Preview, AdminError> {
        let request: TestQuery = match body {
            None => TestQuery::default(),
            Some(b) => serde_json::from_value(b).map_err(|e| serde_error(&e.to_string()))?,
        };
        let window = request
            .window
            .map(|w| {
                Ok::<_, RequestError>(Window {
                    from: parse_instant("window.last_update_time", &w.last_update_time)?,
                    to: parse_instant("window.upper_date_limit", &w.upper_date_limit)?,
                })
            })
            .transpose()?;
        if window.is_some_and(|w| w.to <= w.from) {
            return Err(RequestError::new("window.upper_date_limit", "must be after last_update_time").into());
        }
        let state = self.store.get_source(id).await?;
        let config = match request.source {
            Some(mut source) => {
                if let Some(connection) = request.connection {
                    source["connection"] = connection;
                }
                if source.get("id").is_none() {
                    source["id"] = Json::String(id.into());
                }
                let (config, connection) = self.parse(source, Some(id))?;
                if let Some(connection) = connection {
                    let inline = InlineSecret(connection);
                    return Ok(crate::preview::preview(&*self.reader, &inline, &config, state.as_ref(), window).await);
                }
                config
            }
            None => state
                .as_ref()
                .ok_or_else(|| AdminError::NotFound(id.into()))?
                .config
                .clone(),
        };
        Ok(crate::preview::preview(&*self.reader, &*self.secrets, &config, state.as_ref(), window).await)
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

    fn owned_secret(&self, id: &str) -> String {
        format!("{}{id}", self.secret_prefix)
    }

    /// Stores a new connection, or checks that the referenced secret exists.
    async fn keep_secret(
        &self,
        config: &SourceConfig,
        connection: Option<&ConnectionSecret>,
    ) -> Result<(), AdminError> {
        match connection {
            Some(c) => Ok(self.secret_writer.put_connection(&config.secret_id, c).await?),
            None => match self.secrets.connection(&config.secret_id).await {
                Ok(_) => Ok(()),
                Err(e @ (SecretsError::NotFound { .. } | SecretsError::Malformed { .. })) => {
                    Err(RequestError::new("secret_id", e.to_string()).into())
                }
                Err(e) => Err(e.into()),
            },
        }
    }

    /// A config (and the connection it brings) from JSON, validated. `path_id` is the id
    /// the URL names, which the body must not contradict.
    fn parse(
        &self,
        mut body: Json,
        path_id: Option<&str>,
    ) -> Result<(SourceConfig, Option<ConnectionSecret>), AdminError> {
        let Some(object) = body.as_object_mut() else {
            return Err(RequestError::new("body", "must be a JSON object (a source)").into());
        };
        let connection = match object.remove("connection") {
            None | Some(Json::Null) => None,
            Some(c) => Some(
                serde_json::from_value::<ConnectionSecret>(c)
                    .map_err(|e| RequestError::new("connection", e.to_string()))?,
            ),
        };
        if let (Some(path_id), Some(Json::String(body_id))) = (path_id, object.get("id"))
            && body_id != path_id
        {
            return Err(RequestError::new("id", format!("is {body_id:?} but the URL names {path_id:?}")).into());
        }
        if connection.is_some() {
            let id = object.get("id").and_then(Json::as_str).unwrap_or_default().to_string();
            let owned = Json::String(self.owned_secret(&id));
            match object.get("secret_id") {
                None => {
                    object.insert("secret_id".into(), owned);
                }
                Some(given) if *given == owned => {}
                Some(_) => {
                    return Err(RequestError::new(
                        "secret_id",
                        "give either secret_id (an existing secret) or connection (stored as a new secret), not both",
                    )
                    .into());
                }
            }
        }
        let config: SourceConfig = serde_path_to_error::deserialize(body).map_err(|e| {
            let path = e.path().to_string();
            match path.as_str() {
                "." => serde_error(&e.inner().to_string()),
                _ => RequestError::new(path, e.inner().to_string()),
            }
        })?;
        config.validate().map_err(|e| RequestError::new(e.field, e.reason))?;
        if let Some(c) = &connection
            && c.engine != config.engine
        {
            return Err(RequestError::new(
                "connection.engine",
                format!("is {} but the source's engine is {}", c.engine, config.engine),
            )
            .into());
        }
        Ok((config, connection))
    }
}

/// A serde message as a field error: the field a missing or unknown field message
/// names, else the body.
fn serde_error(message: &str) -> RequestError {
    let field = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .unwrap_or("body");
    RequestError::new(field, message)
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
    async fn connection(&self, _secret_id: &str) -> Result<ConnectionSecret, SecretsError> {
        Ok(self.0.clone())
    }
}
