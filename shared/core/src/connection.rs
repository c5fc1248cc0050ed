//! Connections: one database's secret, named in the API, that several sources of that
//! database reference by id (as Customer.io's "database" and Plecto's server are), and
//! the member namespaces sources claim.

use serde::{Deserialize, Serialize};

use crate::source::{Engine, FieldError};

/// A connection as stored and shown: never its secret, which lives in the secret
/// [`crate::SourceAdmin::connection_secret`] names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// 1–64 letters, digits, `-` or `_`, like a source id.
    pub id: String,
    /// Display name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The engine of the database; every source using the connection has it.
    pub engine: Engine,
}

/// The longest name or description a connection may have.
const MAX_TEXT_CHARS: usize = 1_000;

impl Connection {
    /// Checks what serde cannot: the id, and the lengths of the texts.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("id", &self.id)?;
        if self.name.trim().is_empty() || self.name.chars().count() > MAX_TEXT_CHARS {
            return Err(FieldError::new("name", "give a name of 1 to 1,000 characters"));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_TEXT_CHARS)
        {
            return Err(FieldError::new("description", "keep it to 1,000 characters"));
        }
        Ok(())
    }
}

impl Connection {
    /// The stored form: JSON.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("connections serialize")
    }

    /// Reads the stored form, leniently (a field added by a later version is ignored).
    pub fn decode(id: &str, text: &str) -> Result<Self, crate::StoreError> {
        #[derive(Deserialize)]
        struct Stored {
            id: String,
            name: String,
            #[serde(default)]
            description: Option<String>,
            engine: Engine,
        }
        let s: Stored = serde_json::from_str(text).map_err(|e| crate::StoreError::Corrupt {
            what: format!("connection {id}"),
            reason: e.to_string(),
        })?;
        Ok(Connection {
            id: s.id,
            name: s.name,
            description: s.description,
            engine: s.engine,
        })
    }
}

/// A source or connection id: 1–64 ASCII letters, digits, `-` or `_`. Nothing that
/// could make a secret's name leave its folder (`/`, `..`) or look like another's.
pub fn check_id(field: &str, id: &str) -> Result<(), FieldError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(FieldError::new(field, "use 1 to 64 letters, digits, '-' or '_'"));
    }
    Ok(())
}

/// The prefix of a member namespace that several sources share on purpose.
pub const SHARED_NAMESPACE: &str = "shared:";

/// Checks a `member_id_source`: a name of 1–64 letters, digits, `-`, `_` or `.`,
/// optionally after `shared:`. Returns whether it is shared.
pub fn check_member_namespace(namespace: &str) -> Result<bool, FieldError> {
    let (shared, name) = match namespace.strip_prefix(SHARED_NAMESPACE) {
        Some(name) => (true, name),
        None => (false, namespace),
    };
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(FieldError::new(
            "member_id_source",
            "use 1 to 64 letters, digits, '-', '_' or '.', after `shared:` to share the members with other sources on purpose",
        ));
    }
    Ok(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_namespaces_that_could_escape_are_refused() {
        for bad in ["", "a/b", "..", "../x", "é", "a b", "a.b", &"x".repeat(65)] {
            assert!(check_id("id", bad).is_err(), "{bad:?}");
        }
        check_id("id", &"x".repeat(64)).unwrap();
        assert!(!check_member_namespace("sales.eu").unwrap());
        assert!(check_member_namespace("shared:crm").unwrap());
        for bad in ["", "shared:", "a/b", "shared:a:b", "mémé", "a#b", &"x".repeat(65)] {
            let e = check_member_namespace(bad).unwrap_err();
            assert_eq!(e.field, "member_id_source", "{bad:?}");
        }
    }
}
