//! The local configuration file (YAML): the store, connection secrets and sources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Deserialize;
use sluice_core::{Backfill, Events, EventsError, Run, Secrets, SecretsError, SourceConfig};

/// `sluice.yaml`. `${NAME}` anywhere in the file is replaced by the environment
/// variable NAME, so passwords need not be written into it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Where records, runs and watermarks are kept; the embedded store by default.
    #[serde(default)]
    pub store: StoreConfig,
    /// Connection secrets by id, each in the JSON format of the Secrets Manager secret.
    #[serde(default)]
    pub secrets: BTreeMap<String, serde_json::Value>,
    /// The sources.
    pub sources: Vec<SourceConfig>,
}

/// The store the CLI writes to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// One SQLite file; a relative path is relative to the config file.
    Embedded { path: PathBuf },
    /// DynamoDB tables `{table_prefix}Sources`, `Records`, `Runs`, `Members`.
    Dynamodb {
        table_prefix: String,
        /// Names that replace `{table_prefix}Sources`, ... one by one
        /// (keys `sources`, `records`, `runs`, `members`).
        #[serde(default)]
        tables: BTreeMap<String, String>,
        /// A local endpoint (moto, DynamoDB Local); AWS when absent.
        #[serde(default)]
        endpoint_url: Option<String>,
        /// Create the tables when they do not exist (for local endpoints).
        #[serde(default)]
        create_tables: bool,
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Embedded {
            path: PathBuf::from("sluice.db"),
        }
    }
}

/// A config file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl LocalConfig {
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.into(),
            source,
        })?;
        let invalid = |reason: String| LoadError::Invalid {
            path: path.into(),
            reason,
        };
        let text = expand_env(&text).map_err(invalid)?;
        let mut config: LocalConfig = serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        for source in &config.sources {
            source
                .validate()
                .map_err(|e| invalid(format!("source `{}`: {e}", source.id)))?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        if let StoreConfig::Embedded { path } = &mut config.store
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
        // SQLite source files are relative to the config file too.
        for secret in config.secrets.values_mut() {
            if secret.get("engine").and_then(|e| e.as_str()) == Some("sqlite")
                && let Some(db) = secret.get_mut("database")
                && let Some(p) = db.as_str().map(PathBuf::from).filter(|p| p.is_relative())
            {
                *db = serde_json::Value::String(base.join(p).display().to_string());
            }
        }
        Ok(config)
    }

    pub fn source(&self, id: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.id == id)
    }
}

fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').ok_or("an unclosed `${` in the file")? + at;
        let name = &rest[at + 2..end];
        let value = std::env::var(name)
            .map_err(|_| format!("the environment variable {name} (used as ${{{name}}}) is not set"))?;
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Secrets from the config file's `secrets` section.
#[derive(Debug, Clone)]
pub struct FileSecrets(BTreeMap<String, serde_json::Value>);

impl FileSecrets {
    pub fn new(secrets: BTreeMap<String, serde_json::Value>) -> Self {
        FileSecrets(secrets)
    }
}

#[async_trait]
impl Secrets for FileSecrets {
    async fn value(&self, secret_id: &str) -> Result<serde_json::Value, SecretsError> {
        self.0.get(secret_id).cloned().ok_or_else(|| SecretsError::NotFound {
            id: secret_id.to_string(),
        })
    }
}

/// Announces runs in the log (there is no event bus on one machine).
#[derive(Debug, Clone, Default)]
pub struct LogEvents;

#[async_trait]
impl Events for LogEvents {
    async fn run_completed(&self, run: &Run) -> Result<(), EventsError> {
        tracing::debug!(source_id = run.source_id, run_id = run.id, status = ?run.status, "sluice.run.completed");
        Ok(())
    }

    async fn backfill_requested(&self, job: &Backfill) -> Result<(), EventsError> {
        tracing::debug!(
            source_id = job.source_id,
            backfill_id = job.id,
            "sluice.backfill.requested"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_variables_expand_and_missing_ones_are_named() {
        // SAFETY: this test is the only one touching this variable.
        unsafe { std::env::set_var("SLUICE_TEST_EXPAND", "s3cret") };
        assert_eq!(
            expand_env("password: ${SLUICE_TEST_EXPAND}!").unwrap(),
            "password: s3cret!"
        );
        let e = expand_env("x: ${SLUICE_NOT_SET_ANYWHERE}").unwrap_err();
        assert!(e.contains("SLUICE_NOT_SET_ANYWHERE"), "{e}");
    }
}
