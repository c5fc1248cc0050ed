//! `sluice sources list|show|add|rm`: the sources of a config file, with what the store
//! knows of them. Adding and removing edit the file's `sources:` list and leave the rest
//! of it as it was written.

use std::path::Path;

use anyhow::{Context, bail};
use sluice_core::{SourceConfig, SourceView, Store};
use sluice_local::LocalConfig;

/// A source as the API would show it; one that never ran has no state yet.
async fn view(store: &dyn Store, config: &SourceConfig) -> anyhow::Result<SourceView> {
    Ok(match store.get_source(&config.id).await? {
        Some(mut state) => {
            // The file is what the CLI syncs; the stored config may be older.
            state.config = config.clone();
            SourceView::new(state, chrono::Utc::now())
        }
        None => SourceView::unsaved(config.clone()),
    })
}

pub async fn list(config: &LocalConfig, json: bool) -> anyhow::Result<()> {
    let store = crate::wiring::store(config).await?;
    for source in &config.sources {
        let v = view(&*store, source).await?;
        if json {
            println!("{}", serde_json::to_string(&v)?);
            continue;
        }
        let last = store.list_runs(&source.id, 1, None).await?;
        let mut line = format!(
            "{} ({}): every {} min{}, {}",
            v.config.id,
            v.config.engine,
            v.config.frequency_minutes,
            match v.effective_frequency_minutes {
                m if m != v.config.frequency_minutes => format!(" (now every {m} min: imports are slow)"),
                _ => String::new(),
            },
            if v.config.enabled { "enabled" } else { "disabled" }
        );
        match v.watermark {
            Some(w) => line.push_str(&format!(", watermark {}", sluice_core::Value::iso_timestamp(&w))),
            None => line.push_str(", not synced yet"),
        }
        if let Some(run) = last.first() {
            line.push_str(&format!(
                ", last run {}",
                serde_json::to_value(run.status)?.as_str().unwrap_or("")
            ));
        }
        if let Some(job) = &v.active_backfill {
            line.push_str(&format!(", backfill {job} active"));
        }
        if let Some(description) = &v.config.description {
            line.push_str(&format!("\n  {description}"));
        }
        println!("{line}");
    }
    Ok(())
}

pub async fn show(config: &LocalConfig, id: &str, json: bool) -> anyhow::Result<()> {
    let source = crate::source_in(config, id)?;
    let store = crate::wiring::store(config).await?;
    let v = view(&*store, source).await?;
    let runs = store.list_runs(id, 5, None).await?;
    if json {
        println!("{}", serde_json::json!({ "source": v, "runs": runs }));
        return Ok(());
    }
    println!("{}", serde_yaml::to_string(&v)?.trim_end());
    println!("latest runs:");
    for run in &runs {
        println!("  {}", crate::summary(run).replace('\n', "\n  "));
    }
    Ok(())
}

pub async fn add(path: &Path, config: &LocalConfig, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let source: SourceConfig =
        serde_yaml::from_str(&text).with_context(|| format!("{} is not a source definition", file.display()))?;
    source
        .validate()
        .with_context(|| format!("source `{}` in {}", source.id, file.display()))?;
    if config.source(&source.id).is_some() {
        bail!("the config already has a source `{}`; edit it in the file", source.id);
    }
    if !config.secrets.contains_key(&source.secret_id) {
        bail!(
            "the config has no secret `{}`; add its connection under `secrets:` in {} first",
            source.secret_id,
            path.display()
        );
    }
    let current = std::fs::read_to_string(path)?;
    let updated =
        sluice_local::edit::append_source(&current, &source).with_context(|| format!("{}", path.display()))?;
    std::fs::write(path, updated)?;
    // Check the file still loads as a whole before telling the store.
    let config = LocalConfig::load(path)?;
    crate::wiring::store(&config).await?.put_source(&source).await?;
    println!("added source `{}` to {}", source.id, path.display());
    Ok(())
}

pub async fn rm(path: &Path, config: &LocalConfig, id: &str, purge: bool) -> anyhow::Result<()> {
    if config.source(id).is_none() {
        bail!("the config has no source `{id}`");
    }
    let current = std::fs::read_to_string(path)?;
    let updated = sluice_local::edit::remove_source(&current, id).with_context(|| format!("{}", path.display()))?;
    let purged = crate::wiring::store(config).await?.delete_source(id, purge).await?;
    std::fs::write(path, updated)?;
    match purge {
        true => println!("removed source `{id}` and its {purged} records"),
        false => println!("removed source `{id}`; its records are kept (--purge removes them)"),
    }
    Ok(())
}
