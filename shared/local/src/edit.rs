//! Adds and removes sources in a config file's `sources:` list as text, so that the
//! rest of the file (comments, `${ENV}` references, layout) stays as its owner wrote it.

use sluice_core::SourceConfig;

/// What keeps a file from being edited, and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EditError(String);

/// The lines of the top-level `sources:` block: `(first item line, end)`, end exclusive.
fn sources_block(lines: &[&str]) -> Result<(usize, usize), EditError> {
    let start = lines.iter().position(|l| l.trim_end() == "sources:").ok_or_else(|| {
        EditError("the file has no top-level `sources:` list; add `sources:` at the end of it".into())
    })?;
    let next_key = lines[start + 1..]
        .iter()
        .position(|l| !l.is_empty() && !l.starts_with([' ', '#', '-']))
        .map_or(lines.len(), |i| start + 1 + i);
    // The block ends after its last indented line; blank lines and comments at the
    // margin after it belong to what follows.
    let end = (start + 1..next_key)
        .rev()
        .find(|&i| lines[i].starts_with([' ', '-']) && !lines[i].trim().is_empty())
        .map_or(start + 1, |i| i + 1);
    Ok((start + 1, end))
}

/// `text` with `source` appended to its `sources:` list.
pub fn append_source(text: &str, source: &SourceConfig) -> Result<String, EditError> {
    let lines: Vec<&str> = text.lines().collect();
    let (first, end) = sources_block(&lines)?;
    // The list's own indentation, or two spaces for an empty list.
    let indent = lines[first..end]
        .iter()
        .find_map(|l| l.trim_start().starts_with("- ").then(|| l.len() - l.trim_start().len()))
        .unwrap_or(2);
    let yaml = serde_yaml::to_string(source).map_err(|e| EditError(e.to_string()))?;
    let pad = " ".repeat(indent);
    let mut item = Vec::new();
    for (i, line) in yaml.lines().enumerate() {
        let lead = if i == 0 { format!("{pad}- ") } else { format!("{pad}  ") };
        item.push(format!("{lead}{line}"));
    }
    let mut out: Vec<String> = lines[..end].iter().map(|l| l.to_string()).collect();
    if lines[first..end].iter().any(|l| l.trim() == "[]") {
        return Err(EditError(
            "the file's `sources:` is written `[]`; write it as a block list".into(),
        ));
    }
    out.extend(item);
    out.extend(lines[end..].iter().map(|l| l.to_string()));
    Ok(out.join("\n") + "\n")
}

/// `text` without the source `id`. Its item must begin with `- id: <id>`.
pub fn remove_source(text: &str, id: &str) -> Result<String, EditError> {
    let lines: Vec<&str> = text.lines().collect();
    let (first, end) = sources_block(&lines)?;
    let is_item = |l: &str| l.trim_start().starts_with("- ");
    let starts = |l: &str| {
        let t = l.trim_start().trim_start_matches("- ").trim();
        t == format!("id: {id}") || t == format!("id: \"{id}\"") || t == format!("id: '{id}'")
    };
    let at = (first..end)
        .find(|&i| is_item(lines[i]) && starts(lines[i]))
        .ok_or_else(|| {
            EditError(format!(
                "no item of `sources:` starts with `- id: {id}`; remove the source from the file by hand"
            ))
        })?;
    let item_indent = lines[at].len() - lines[at].trim_start().len();
    let next = (at + 1..end)
        .find(|&i| {
            let l = lines[i];
            is_item(l) && l.len() - l.trim_start().len() == item_indent
        })
        .unwrap_or(end);
    let mut out: Vec<&str> = lines[..at].to_vec();
    out.extend(&lines[next..]);
    Ok(out.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# my sluice
store:
  kind: embedded
  path: store.db
secrets:
  db: {engine: postgres, host: h, database: d, password: \"${PW}\"}
sources:
  - id: sales
    name: Sales   # the first one
    engine: postgres
    secret_id: db
    sync_type: registration
    query: SELECT 1

# trailing comment
";

    fn source(id: &str) -> SourceConfig {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": "Orders", "engine": "postgres", "secret_id": "db",
            "sync_type": "registration",
            "query": "SELECT id AS reference\nFROM orders WHERE t >= {{ last_update_time }}"
        }))
        .unwrap()
    }

    #[test]
    fn a_source_is_appended_and_removed_leaving_the_rest_as_written() {
        let added = append_source(FILE, &source("orders")).unwrap();
        assert!(added.starts_with("# my sluice\n") && added.contains("password: \"${PW}\""));
        assert!(added.contains("name: Sales   # the first one"));
        assert!(added.ends_with("\n# trailing comment\n"), "{added}");
        let parsed: serde_yaml::Value = serde_yaml::from_str(&added).unwrap();
        let sources = parsed["sources"].as_sequence().unwrap();
        assert_eq!(sources.len(), 2);
        let back: SourceConfig = serde_yaml::from_value(sources[1].clone()).unwrap();
        assert_eq!(back, source("orders"));

        let removed = remove_source(&added, "sales").unwrap();
        let parsed: serde_yaml::Value = serde_yaml::from_str(&removed).unwrap();
        let ids: Vec<_> = parsed["sources"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["orders"]);
        assert!(removed.contains("# trailing comment"));
        assert_eq!(remove_source(&removed, "orders").unwrap().matches("- id:").count(), 0);
    }

    #[test]
    fn what_cannot_be_edited_says_so() {
        assert!(
            append_source("store: {}\n", &source("x"))
                .unwrap_err()
                .0
                .contains("no top-level `sources:`")
        );
        assert!(remove_source(FILE, "nope").unwrap_err().0.contains("by hand"));
    }
}
