//! DynamoDB's limits on one item (issue 21), checked on every mapped row and on the
//! member it upserts: a row DynamoDB would refuse is rejected alone, with its reason,
//! instead of failing its batch, its run and every later run. The embedded store gets
//! the same rejects because they are decided here, so a source behaves the same locally
//! and on AWS. These follow AWS's documented limits, not moto's (moto checks neither
//! nesting, precision nor empty names, and allows 405,000-byte items).

use std::ops::RangeInclusive;

use serde_json::Value as Json;

use super::Mapped;
use crate::record::{MAX_RECORD_BYTES, Member};
use crate::value::Value;

/// A sort key's limit (`record_key`, a member's id, a team's name). Partition keys
/// (2,048 bytes) are a source id or a member id source, both at most 64 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Levels of nesting DynamoDB stores, the item's own map counted as the first.
pub const MAX_LEVELS: usize = 32;
/// A number's significant digits.
const MAX_DIGITS: usize = 38;
/// The power of ten of a number's first significant digit: 1E-130 to 9.99…E+125.
const EXPONENTS: RangeInclusive<i64> = -130..=125;
/// A source id's or member id source's longest (`SourceConfig::validate`).
const MAX_ID_BYTES: usize = 64;
/// What a store adds to a record's item besides its key: `source_id`, the name
/// `record_key`, and `_hash`.
const RECORD_OVERHEAD: usize = "source_id".len() + MAX_ID_BYTES + "record_key".len() + "_hash".len() + 32;
/// A member's item besides its id, name and team: `pk` (`member#` and the id source),
/// the names `sk`, `name` and `team`.
const MEMBER_OVERHEAD: usize = "pk".len() + "member#".len() + MAX_ID_BYTES + "sk".len() + "name".len() + "team".len();

/// Checks `mapped` against DynamoDB's limits; `key` names the columns its record key
/// comes from. The reason says which limit, where, and what to change in the query.
pub(super) fn check(mapped: &Mapped, key: &str) -> Result<(), String> {
    let record = &mapped.record;
    check_key(key, &record.key)?;
    let mut size = RECORD_OVERHEAD + record.key.len();
    for (name, value) in record.fields.iter() {
        if name.is_empty() {
            return Err("a column has an empty name, which DynamoDB refuses; alias it in the query".into());
        }
        size += name.len() + value_size(value, 2).map_err(|e| e.reason(name))?;
    }
    if size > MAX_RECORD_BYTES {
        return Err(format!(
            "the record is {size} bytes as DynamoDB counts them, over its 400 KB item limit; select fewer or smaller columns"
        ));
    }
    match &mapped.member {
        Some(member) => check_member(member),
        None => Ok(()),
    }
}

fn check_key(name: &str, key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("{name} is empty, and DynamoDB refuses an empty key"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "{name} is {} bytes, over DynamoDB's 1,024-byte limit for a key; select a shorter {name} (a hash of it, for example)",
            key.len()
        ));
    }
    Ok(())
}

/// The member's item and its team's, as `upsert_members` writes them.
fn check_member(m: &Member) -> Result<(), String> {
    check_key("member_id", &m.member_id)?;
    if let Some(team) = &m.team {
        check_key("team_name", team)?;
    }
    let size = MEMBER_OVERHEAD + m.member_id.len() + m.name.len() + m.team.as_ref().map_or(0, String::len);
    if size > MAX_RECORD_BYTES {
        return Err(format!(
            "the member's item is {size} bytes, over DynamoDB's 400 KB item limit; select a shorter member_name"
        ));
    }
    Ok(())
}

/// A value DynamoDB refuses, found at `path` (innermost last, pushed while unwinding).
#[derive(Debug)]
struct Refused {
    path: Vec<String>,
    problem: Problem,
}

#[derive(Debug)]
enum Problem {
    Number { text: String, why: &'static str },
    TooDeep,
    EmptyName,
}

impl Refused {
    fn new(problem: Problem) -> Self {
        Refused {
            path: Vec::new(),
            problem,
        }
    }

    fn within(mut self, step: String) -> Self {
        self.path.push(step);
        self
    }

    fn reason(self, column: &str) -> String {
        let mut path = column.to_string();
        for step in self.path.iter().rev() {
            if !step.starts_with('[') {
                path.push('.');
            }
            path.push_str(step);
        }
        match self.problem {
            Problem::Number { text, why } => format!(
                "{path} holds {}, {why}: DynamoDB numbers have at most 38 significant digits and a magnitude from 1E-130 to 9.9999999999999999999999999999999999999E+125; round it, or cast it to text in the query",
                cut(&text, 48)
            ),
            Problem::TooDeep => format!(
                "{path} is nested deeper than DynamoDB's 32 levels (the item itself is the first); flatten it, or cast it to text in the query"
            ),
            Problem::EmptyName => {
                format!("{path} has an empty key, which DynamoDB refuses as a name; rename it or drop it in the query")
            }
        }
    }
}

/// `text` cut to about `max` bytes, on a character boundary, marked when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// The bytes `value` takes in an item as DynamoDB counts them (its size documentation:
/// a list or map is 3 bytes and 1 per element, a number about 1 byte per 2 significant
/// digits and 1), at nesting `level`; or what DynamoDB refuses in it.
fn value_size(value: &Value, level: usize) -> Result<usize, Refused> {
    Ok(match value {
        Value::Null | Value::Bool(_) | Value::Unsupported(_) => 1,
        Value::Int(i) => number_bytes(digits(i.unsigned_abs())),
        Value::Float(f) => float_size(*f)?,
        Value::Decimal(d) => decimal_size(d)?,
        Value::Text(s) => s.len(),
        Value::Date(_) => 10,
        Value::Time(_) => 18,
        Value::Timestamp(_) => 32,
        Value::Uuid(_) => 36,
        Value::Bytes(b) => b.len(),
        Value::Json(j) => json_size(j, level)?,
        Value::Array(a) => {
            container(level)?;
            let mut size = 3;
            for (i, v) in a.iter().enumerate() {
                size += 1 + value_size(v, level + 1).map_err(|e| e.within(format!("[{i}]")))?;
            }
            size
        }
    })
}

fn json_size(value: &Json, level: usize) -> Result<usize, Refused> {
    Ok(match value {
        Json::Null | Json::Bool(_) => 1,
        Json::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => number_bytes(digits(u)),
            (_, Some(i), _) => number_bytes(digits(i.unsigned_abs())),
            (_, _, Some(f)) => float_size(f)?,
            _ => decimal_size(&n.to_string())?,
        },
        Json::String(s) => s.len(),
        Json::Array(a) => {
            container(level)?;
            let mut size = 3;
            for (i, v) in a.iter().enumerate() {
                size += 1 + json_size(v, level + 1).map_err(|e| e.within(format!("[{i}]")))?;
            }
            size
        }
        Json::Object(o) => {
            container(level)?;
            let mut size = 3;
            for (k, v) in o {
                if k.is_empty() {
                    return Err(Refused::new(Problem::EmptyName));
                }
                size += 1 + k.len() + json_size(v, level + 1).map_err(|e| e.within(k.clone()))?;
            }
            size
        }
    })
}

/// A list or map at `level`: DynamoDB stores 32 levels, the item's own map the first.
fn container(level: usize) -> Result<(), Refused> {
    match level <= MAX_LEVELS {
        true => Ok(()),
        false => Err(Refused::new(Problem::TooDeep)),
    }
}

fn number_bytes(digits: usize) -> usize {
    digits.div_ceil(2) + 1
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// A float as the stores write it (its shortest exact text: at most 17 digits).
fn float_size(f: f64) -> Result<usize, Refused> {
    let refused = |why| {
        Err(Refused::new(Problem::Number {
            text: format!("{f:e}"),
            why,
        }))
    };
    if !f.is_finite() {
        return refused("which is not a number");
    }
    if f != 0.0 && f.abs() >= 1e126 {
        return refused("too large");
    }
    if f != 0.0 && f.abs() < 1e-130 {
        return refused("too small");
    }
    Ok(number_bytes(17))
}

fn decimal_size(text: &str) -> Result<usize, Refused> {
    let refused = |why| {
        Err(Refused::new(Problem::Number {
            text: text.to_string(),
            why,
        }))
    };
    match decimal_shape(text) {
        None => refused("which is not a number"),
        Some((0, _)) => Ok(number_bytes(1)),
        Some((digits, _)) if digits > MAX_DIGITS => refused("more than 38 significant digits"),
        Some((_, exponent)) if exponent > *EXPONENTS.end() => refused("too large"),
        Some((_, exponent)) if exponent < *EXPONENTS.start() => refused("too small"),
        Some((digits, _)) => Ok(number_bytes(digits)),
    }
}

/// A decimal's significant digits and the power of ten of its first one (0 digits for
/// zero); `None` when it is not a decimal number.
fn decimal_shape(text: &str) -> Option<(usize, i64)> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], unsigned[i + 1..].parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let digits = int.bytes().chain(frac.bytes());
    let Some(first) = digits.clone().position(|b| b != b'0') else {
        return Some((0, 0));
    };
    let last = int.len() + frac.len() - digits.rev().position(|b| b != b'0').unwrap_or(0);
    let power = exponent.checked_add(int.len() as i64 - 1 - first as i64)?;
    Some((last - first, power))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::value::Row;
    use serde_json::json;

    fn mapped(key: &str, fields: Vec<(&str, Value)>) -> Mapped {
        let (columns, values): (Vec<String>, Vec<Value>) = fields.into_iter().map(|(c, v)| (c.to_string(), v)).unzip();
        Mapped {
            record: Record::new(
                key.into(),
                Row {
                    columns: columns.into(),
                    values,
                },
            ),
            member: None,
            warning: None,
            occurred_at: None,
        }
    }

    fn reason(fields: Vec<(&str, Value)>) -> String {
        check(&mapped("k", fields), "reference").unwrap_err()
    }

    #[test]
    fn decimals_are_read_as_dynamodb_reads_them() {
        assert_eq!(decimal_shape("123.40"), Some((4, 2)));
        assert_eq!(decimal_shape("-0.00120"), Some((2, -3)));
        assert_eq!(decimal_shape("1.5E+300"), Some((2, 300)));
        assert_eq!(decimal_shape("0"), Some((0, 0)));
        assert_eq!(decimal_shape("100"), Some((1, 2)));
        for bad in [
            "NaN",
            "Infinity",
            "",
            ".",
            "1e",
            "1.2.3",
            "--1",
            "1e99999999999999999999",
        ] {
            assert_eq!(decimal_shape(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_outside_dynamodbs_range_are_refused() {
        let max = "9.9999999999999999999999999999999999999E+125";
        for ok in [
            Value::Decimal(max.into()),
            Value::Decimal("1E-130".into()),
            Value::Float(1e125),
            Value::Int(i64::MIN),
        ] {
            assert!(
                check(&mapped("k", vec![("n", ok.clone())]), "reference").is_ok(),
                "{ok:?}"
            );
        }
        let r = reason(vec![("n", Value::Float(1e300))]);
        assert!(r.starts_with("n holds 1e300, too large"), "{r}");
        assert!(r.contains("too large") && r.contains("cast it to text"), "{r}");
        assert!(reason(vec![("n", Value::Decimal("1E+126".into()))]).contains("too large"));
        assert!(reason(vec![("n", Value::Decimal("1E-131".into()))]).contains("too small"));
        assert!(reason(vec![("n", Value::Float(1e-300))]).contains("too small"));
        assert!(reason(vec![("n", Value::Float(f64::NAN))]).contains("not a number"));
        assert!(reason(vec![("n", Value::Decimal("NaN".into()))]).contains("not a number"));
        let digits = format!("1.{}", "3".repeat(38));
        assert!(reason(vec![("n", Value::Decimal(digits))]).contains("more than 38 significant digits"));
        let r = reason(vec![("traits", Value::Json(json!({"a": [1, {"b": 1e300}]})))]);
        assert!(r.starts_with("traits.a[1].b holds 1e300, too large"), "{r}");
    }

    fn nested(wraps: usize) -> Json {
        (0..wraps).fold(json!(1), |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn nesting_counts_the_item_as_the_first_level() {
        // AWS stores 31 maps around a scalar and refuses 32.
        assert!(check(&mapped("k", vec![("j", Value::Json(nested(31)))]), "reference").is_ok());
        let r = reason(vec![("j", Value::Json(nested(32)))]);
        assert!(r.contains("nested deeper than DynamoDB's 32 levels"), "{r}");
        assert!(r.starts_with(&format!("j{}", ".a".repeat(31))), "{r}");
        let arrays = Value::Array(vec![Value::Json(nested(31))]);
        assert!(reason(vec![("j", arrays)]).contains("32 levels"));
    }

    #[test]
    fn empty_names_are_refused() {
        let r = reason(vec![("props", Value::Json(json!({"ok": {"": 1}})))]);
        assert!(r.starts_with("props.ok has an empty key"), "{r}");
        assert!(reason(vec![("", Value::Int(1))]).contains("a column has an empty name"));
    }

    #[test]
    fn keys_and_items_are_measured_in_bytes() {
        let long = "é".repeat(513);
        let r = check(&mapped(&long, vec![]), "reference").unwrap_err();
        assert!(
            r.starts_with("reference is 1026 bytes, over DynamoDB's 1,024-byte limit"),
            "{r}"
        );
        assert!(check(&mapped(&"k".repeat(1024), vec![]), "reference").is_ok());
        let budget = MAX_RECORD_BYTES - RECORD_OVERHEAD - 1 - "t".len();
        assert!(check(&mapped("k", vec![("t", Value::Text("x".repeat(budget)))]), "reference").is_ok());
        let r = reason(vec![("t", Value::Text("x".repeat(budget + 1)))]);
        assert!(r.contains("over its 400 KB item limit"), "{r}");
        // Many small numbers are small: 3 bytes each and 1 in the list.
        let numbers = Value::Json(Json::Array((0..50_000).map(|i| json!(i % 100)).collect()));
        assert!(check(&mapped("k", vec![("n", numbers)]), "reference").is_ok());
    }

    #[test]
    fn members_and_teams_are_checked_as_their_items() {
        let mut m = mapped("k", vec![]);
        let member = |id: &str, name: &str, team: Option<&str>| Member {
            member_id: id.into(),
            name: name.into(),
            team: team.map(str::to_string),
        };
        m.member = Some(member("7", "Ada", Some(&"t".repeat(1025))));
        assert!(
            check(&m, "reference")
                .unwrap_err()
                .starts_with("team_name is 1025 bytes")
        );
        m.member = Some(member(&"7".repeat(1025), "Ada", None));
        assert!(
            check(&m, "reference")
                .unwrap_err()
                .starts_with("member_id is 1025 bytes")
        );
        m.member = Some(member("7", &"n".repeat(MAX_RECORD_BYTES), None));
        assert!(check(&m, "reference").unwrap_err().contains("the member's item"));
        m.member = Some(member("7", "Ada", Some("North")));
        assert!(check(&m, "reference").is_ok());
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("ééé", 3), "é… (6 bytes)");
    }
}
