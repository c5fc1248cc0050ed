//! Reading JSON documents that hold secrets (connection secrets, engine fields, write
//! keys). serde's error text quotes the offending value (`invalid type: integer
//! `987654321`, expected a string`), and that value may be the password or a key: an
//! error here names only the field's path and the kind of value expected.
//!
//! It also accepts what the Secrets Manager console's key/value editor and YAML make of
//! a secret: an object field given as a string holding JSON, and a password written as a
//! whole number.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};

/// Deserialises `value`; the error names the field's path and what was expected, never
/// a value.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let what = describe(e.inner());
        if path == "." { what } else { format!("`{path}`: {what}") }
    })
}

/// serde's message without the value it quotes. Messages that quote a value start with
/// one of `QUOTING` and end with `, expected {what the type wanted}`; the others name
/// fields only, or are this module's own (which start with "expected").
fn describe(e: &serde_json::Error) -> String {
    const QUOTING: [&str; 3] = ["invalid type: ", "invalid value: ", "unknown variant "];
    const NAMING: [&str; 5] = [
        "missing field ",
        "unknown field ",
        "duplicate field ",
        "invalid length ",
        "expected ",
    ];
    let message = e.to_string();
    if QUOTING.iter().any(|p| message.starts_with(p)) {
        // The expected part comes last and is the type's own text; a value quoted before
        // it may itself hold ", expected ", so the last one is the separator.
        return match message.rfind(", expected ") {
            Some(at) => message[at + 2..].to_string(),
            None => "is a value of the wrong kind".into(),
        };
    }
    if NAMING.iter().any(|p| message.starts_with(p)) {
        return message;
    }
    "is a value of the wrong kind".into()
}

/// A text field (a password, a user name) that YAML or JSON may have read as a number:
/// a whole number is taken as its decimal text. Other numbers are refused, since their
/// text is already lost (`1.50` reads as 1.5).
pub fn text_or_whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
        serde_json::Value::Number(_) => Err(D::Error::custom(
            "expected a string, got a number with a fraction or an exponent, whose text was lost when it was read as a number (1.50 reads as 1.5); write it in quotes",
        )),
        _ => Err(D::Error::custom("expected a string")),
    }
}

/// An object field that may arrive as a string holding the object's JSON, as the
/// Secrets Manager console's key/value editor stores nested values.
pub fn object_or_json_string<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let value = match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::String(text) => parse_json_string(&text).map_err(D::Error::custom)?,
        value => value,
    };
    from_value(value)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("expected an object; in it, {e}")))
}

/// The object a string holds; the error says why not, without the text.
pub fn parse_json_string(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str(text) {
        Ok(object @ serde_json::Value::Object(_)) => Ok(object),
        // serde_json's syntax errors give a position, never the text.
        Ok(_) => Err(
            "expected an object, or the object's JSON in a string; the string holds JSON that is not an object".into(),
        ),
        Err(e) => Err(format!(
            "expected an object, or the object's JSON in a string; the string is not JSON (line {} column {})",
            e.line(),
            e.column()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        key: String,
        #[allow(dead_code)]
        port: Option<u16>,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[serde(default, deserialize_with = "text_or_whole_number")]
        password: Option<String>,
        #[serde(default, deserialize_with = "object_or_json_string")]
        inner: Option<Inner>,
    }

    const SECRET: &str = "s3cr3t, expected a string-ish";

    fn error(value: serde_json::Value) -> String {
        let e = from_value::<Outer>(value).unwrap_err();
        assert!(!e.contains("s3cr3t") && !e.contains("987654321"), "{e}");
        e
    }

    #[test]
    fn errors_name_the_path_and_the_kind_never_the_value() {
        assert_eq!(error(json!({"password": [SECRET]})), "`password`: expected a string");
        assert_eq!(
            error(json!({"inner": {"key": 987654321}})),
            "`inner`: expected an object; in it, `key`: expected a string"
        );
        let e = error(json!({"inner": {"key": "k", "port": SECRET}}));
        assert!(e.contains("`port`") && e.contains("u16"), "{e}");
        let e = error(json!({"inner": {"key": "k", "nope": SECRET}}));
        assert!(
            e.starts_with("`inner`: expected an object; in it, `nope`: unknown field `nope`"),
            "{e}"
        );
        let e = error(json!({"inner": format!("{{\"key\": \"{SECRET}\"")}));
        assert!(e.contains("is not JSON"), "{e}");
        let e = error(json!({"inner": format!("\"{SECRET}\"")}));
        assert!(e.contains("not an object"), "{e}");
        let e = error(json!({"password": 9876543.21}));
        assert!(e.contains("write it in quotes"), "{e}");
    }

    #[test]
    fn what_the_console_and_yaml_store_is_accepted() {
        let o: Outer = from_value(json!({"password": 987654321, "inner": "{\"key\": \"k\"}"})).unwrap();
        assert_eq!(o.password.as_deref(), Some("987654321"));
        assert!(o.inner.is_some());
        let o: Outer = from_value(json!({"password": -5})).unwrap();
        assert_eq!(o.password.as_deref(), Some("-5"));
    }
}
