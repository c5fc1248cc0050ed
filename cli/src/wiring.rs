//! Builds the store and the sync service a local config asks for.

use std::sync::Arc;

use sluice_aws::{DynamoStore, TableNames, sdk_config};
use sluice_core::backfiller::BackfillSettings;
use sluice_core::delivery::DeliverySettings;
use sluice_core::{Deliverer, Store, SyncService, SyncSettings, SystemClock};
use sluice_destinations::{AddressPolicy, HttpSender};
use sluice_local::{EmbeddedStore, FileSecrets, LocalConfig, LogEvents, StoreConfig};
use sluice_sources::SqlReader;

pub async fn store(config: &LocalConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store {
        StoreConfig::Embedded { path } => Arc::new(EmbeddedStore::open(path).await?),
        StoreConfig::Dynamodb {
            table_prefix,
            tables,
            endpoint_url,
            create_tables,
        } => {
            let mut names = TableNames::with_prefix(table_prefix);
            for (table, name) in tables {
                let slot = match table.as_str() {
                    "sources" => &mut names.sources,
                    "records" => &mut names.records,
                    "runs" => &mut names.runs,
                    "members" => &mut names.members,
                    other => {
                        anyhow::bail!("store.tables: unknown table `{other}`; use sources, records, runs or members")
                    }
                };
                *slot = name.clone();
            }
            let sdk = sdk_config(endpoint_url.as_deref()).await;
            let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), names);
            if *create_tables {
                store.create_tables().await?;
            }
            Arc::new(store)
        }
    })
}

pub async fn service(config: &LocalConfig) -> anyhow::Result<SyncService> {
    Ok(SyncService::new(
        store(config).await?,
        Arc::new(SqlReader),
        Arc::new(FileSecrets::new(config.secrets.clone())),
        Arc::new(LogEvents),
        settings(),
    ))
}

/// `SLUICE_LEASE_SECONDS` shortens the lease (a killed local run holds it until then).
pub fn settings() -> SyncSettings {
    let mut settings = SyncSettings::default();
    if let Some(secs) = std::env::var("SLUICE_LEASE_SECONDS").ok().and_then(|v| v.parse().ok()) {
        settings.lease = std::time::Duration::from_secs(secs);
    }
    settings
}

/// `SLUICE_BACKFILL_RETRY_SECONDS` sets the first wait before a failed chunk runs again.
pub fn backfill_settings() -> BackfillSettings {
    let mut settings = BackfillSettings::default();
    if let Some(secs) = std::env::var("SLUICE_BACKFILL_RETRY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.retry_base = std::time::Duration::from_secs(secs);
    }
    settings
}

/// The delivery of calls, over `store`, with the file's secrets (write keys).
pub fn deliverer(config: &LocalConfig, store: Arc<dyn Store>) -> anyhow::Result<Deliverer> {
    Ok(Deliverer {
        sender: Arc::new(HttpSender::new(AddressPolicy::from_env())?),
        secrets: Arc::new(FileSecrets::new(config.secrets.clone())),
        store,
        clock: Arc::new(SystemClock),
        settings: DeliverySettings::default(),
    })
}
