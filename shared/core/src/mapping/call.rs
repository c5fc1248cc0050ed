//! Customer.io-style calls (DESIGN §3): each row becomes one identify, track, group,
//! page, screen or alias call, shaped as the Data Pipelines / Segment spec has it.
//!
//! Column names are matched without regard to case or underscores, because databases
//! fold unquoted names (PostgreSQL to `userid`, Snowflake and Oracle to `USERID`):
//! `userId`, `user_id` and `USERID` are all the user id. The columns the spec names go
//! to the top level (or into `context`); every other column becomes a trait (identify,
//! group) or a property (track, page, screen), with its type; a JSON column named
//! `traits`, `properties` or `context` is merged into that object, and one named
//! `integrations` is the call's `integrations`. JSON may come as text, for engines
//! without a JSON type (SQL Server, SQLite).
//!
//! An identify row whose `userId` is empty or null but which has an `email` is
//! identified by that email, as Customer.io does.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};

use super::limits;
use super::rules::{as_utc, check_values};
use super::{Mapped, MappingError, RowMapper};
use crate::record::{Record, Reject, content_hash};
use crate::source::SyncType;
use crate::value::{Row, Value};

/// The calls of DESIGN §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Identify,
    Track,
    Group,
    Page,
    Screen,
    Alias,
}

impl Call {
    pub fn of(sync_type: SyncType) -> Option<Call> {
        Some(match sync_type {
            SyncType::Registration => return None,
            SyncType::Identify => Call::Identify,
            SyncType::Track => Call::Track,
            SyncType::Group => Call::Group,
            SyncType::Page => Call::Page,
            SyncType::Screen => Call::Screen,
            SyncType::Alias => Call::Alias,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Call::Identify => "identify",
            Call::Track => "track",
            Call::Group => "group",
            Call::Page => "page",
            Call::Screen => "screen",
            Call::Alias => "alias",
        }
    }

    /// The columns a call's record key is made of, for a reject's reason.
    fn key_columns(self) -> &'static str {
        match self {
            Call::Identify => "userId (or anonymousId, or email)",
            Call::Track | Call::Page | Call::Screen => "messageId",
            Call::Group => "groupId with userId",
            Call::Alias => "userId with previousId",
        }
    }

    /// Where the other columns go.
    fn payload(self) -> Option<&'static str> {
        match self {
            Call::Identify | Call::Group => Some("traits"),
            Call::Track | Call::Page | Call::Screen => Some("properties"),
            Call::Alias => None,
        }
    }
}

/// What a column is to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    UserId,
    AnonymousId,
    Event,
    GroupId,
    ObjectTypeId,
    Name,
    PreviousId,
    Timestamp,
    MessageId,
    /// A field of `context`, by its spec name.
    Context(&'static str),
    /// A JSON column merged into the payload or the context.
    Merged(&'static str),
    /// The JSON object of destinations to send the call to, or not.
    Integrations,
    /// A trait or property (a top-level custom field for alias).
    Payload,
}

const CONTEXT_FIELDS: [&str; 11] = [
    "active",
    "ip",
    "locale",
    "userAgent",
    "channel",
    "campaign",
    "page",
    "device",
    "os",
    "app",
    "network",
];

/// A column name without case or underscores: `user_id`, `USERID` and `userId` agree.
fn folded(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn role(call: Call, column: &str) -> Role {
    let name = folded(column);
    match name.as_str() {
        "userid" => Role::UserId,
        "anonymousid" => Role::AnonymousId,
        "timestamp" => Role::Timestamp,
        "messageid" => Role::MessageId,
        "event" if call == Call::Track => Role::Event,
        "groupid" if call == Call::Group => Role::GroupId,
        "objecttypeid" if call == Call::Group => Role::ObjectTypeId,
        "name" if matches!(call, Call::Page | Call::Screen) => Role::Name,
        "previousid" if call == Call::Alias => Role::PreviousId,
        "traits" | "properties" if call.payload().is_some() => Role::Merged("payload"),
        "context" => Role::Merged("context"),
        "integrations" => Role::Integrations,
        _ => match CONTEXT_FIELDS.iter().find(|f| f.to_lowercase() == name) {
            Some(field) => Role::Context(field),
            None => Role::Payload,
        },
    }
}

/// Maps the rows of one result set to calls; built once from its columns.
#[derive(Debug, Clone)]
pub(super) struct CallMapper {
    call: Call,
    roles: Vec<Role>,
    /// The `email` column of an identify call, its id when `userId` is empty.
    email: Option<usize>,
}

/// Why a group row without a user id still goes through.
pub const GROUP_WITHOUT_USER: &str =
    "group rows without userId go through, but Customer.io links people to a group by userId: select it";

/// The ids a row carries; a rejected row is named by the first of them it has.
struct RowIds {
    user: Option<String>,
    anonymous: Option<String>,
    message: Option<String>,
}

impl RowIds {
    fn reject(&self, reason: String) -> Reject {
        Reject {
            reference: self
                .message
                .clone()
                .or_else(|| self.user.clone())
                .or_else(|| self.anonymous.clone()),
            reason,
        }
    }
}

/// The columns that are neither ids nor the type's own fields, where they go.
#[derive(Default)]
struct Spread {
    /// `traits` or `properties`.
    payload: Map<String, Json>,
    context: Map<String, Json>,
    /// Alias calls have no payload: their other columns stay top-level.
    top_level: Vec<(String, Value)>,
    integrations: Option<Map<String, Json>>,
}

/// A JSON object column's object: `None` for NULL, text is parsed.
fn json_object(column: &str, v: &Value) -> Result<Option<Map<String, Json>>, String> {
    let not_an_object = |got: &str| format!("{column} must be a JSON object, got {got}");
    match v {
        Value::Null => Ok(None),
        Value::Json(Json::Object(object)) => Ok(Some(object.clone())),
        Value::Text(text) => match serde_json::from_str(text) {
            Ok(Json::Object(object)) => Ok(Some(object)),
            Ok(_) | Err(_) => Err(not_an_object("text that is not one")),
        },
        other => Err(not_an_object(other.kind())),
    }
}

impl CallMapper {
    pub(super) fn new(call: Call, columns: &[String]) -> Result<Self, MappingError> {
        let roles: Vec<Role> = columns.iter().map(|c| role(call, c)).collect();
        let has = |r: &Role| roles.contains(r);
        let missing = |column: &'static str| MappingError::MissingColumn {
            column,
            sync_type: call.name(),
            returned: columns.join(", "),
        };
        let ids = has(&Role::UserId) || has(&Role::AnonymousId);
        let email = (call == Call::Identify)
            .then(|| columns.iter().position(|c| folded(c) == "email"))
            .flatten();
        let required: &[(&'static str, bool)] = match call {
            Call::Identify => &[("userId`, `anonymousId` or `email", ids || email.is_some())],
            Call::Track => &[("event", has(&Role::Event)), ("userId` or `anonymousId", ids)],
            Call::Group => &[("groupId", has(&Role::GroupId))],
            Call::Page | Call::Screen => &[("name", has(&Role::Name)), ("userId", has(&Role::UserId))],
            Call::Alias => &[("userId", has(&Role::UserId)), ("previousId", has(&Role::PreviousId))],
        };
        if let Some((column, _)) = required.iter().find(|(_, present)| !present) {
            return Err(missing(column));
        }
        Ok(CallMapper { call, roles, email })
    }

    /// The non-null value of the column that plays `role`.
    fn value<'r>(&self, row: &'r Row, role: &Role) -> Option<&'r Value> {
        self.roles
            .iter()
            .position(|r| r == role)
            .map(|i| &row.values[i])
            .filter(|v| !v.is_null())
    }

    fn id(&self, row: &Row, role: &Role) -> Option<String> {
        self.value(row, role).and_then(Value::as_key_text)
    }

    /// The user id, or for identify the email when the user id is null or empty.
    fn user_id(&self, row: &Row) -> Option<String> {
        self.id(row, &Role::UserId)
            .or_else(|| row.values[self.email?].as_key_text())
    }

    fn required_id(&self, row: &Row, ids: &RowIds, role: &Role, column: &str) -> Result<String, Reject> {
        match (self.value(row, role), self.id(row, role)) {
            (_, Some(id)) => Ok(id),
            (None, _) => Err(ids.reject(format!("{column} is null; {} calls require it", self.call.name()))),
            (Some(v), None) => Err(ids.reject(format!("{column} is malformed: a {} value cannot be an id", v.kind()))),
        }
    }

    fn required_text(&self, row: &Row, ids: &RowIds, role: &Role, column: &str) -> Result<String, Reject> {
        match self.value(row, role) {
            Some(Value::Text(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(v) => Err(ids.reject(format!("{column} must be text, got {}", v.kind()))),
            None => Err(ids.reject(format!("{column} is null; {} calls require it", self.call.name()))),
        }
    }

    /// The record key (DESIGN §3), and the type's own top-level fields.
    fn key(&self, row: &Row, ids: &RowIds, hash_hex: &str, top: &mut Vec<(String, Value)>) -> Result<String, Reject> {
        let call = self.call.name();
        if matches!(self.call, Call::Identify | Call::Track) && ids.user.is_none() && ids.anonymous.is_none() {
            let columns = match self.email {
                Some(_) => "userId, anonymousId and email are all",
                None => "userId and anonymousId are both",
            };
            return Err(ids.reject(format!("{columns} null or empty; {call} calls require one")));
        }
        let key = match self.call {
            Call::Identify => ids.user.clone().or_else(|| ids.anonymous.clone()).unwrap_or_default(),
            Call::Track | Call::Page | Call::Screen => ids.message.clone().unwrap_or_else(|| hash_hex.to_string()),
            Call::Group => {
                let group = self.required_id(row, ids, &Role::GroupId, "groupId")?;
                top.push(("groupId".into(), Value::Text(group.clone())));
                Json::from(vec![group, ids.user.clone().unwrap_or_default()]).to_string()
            }
            Call::Alias => {
                let user = self.required_id(row, ids, &Role::UserId, "userId")?;
                let previous = self.required_id(row, ids, &Role::PreviousId, "previousId")?;
                top.push(("previousId".into(), Value::Text(previous.clone())));
                Json::from(vec![user, previous]).to_string()
            }
        };
        match self.call {
            Call::Track => top.push((
                "event".into(),
                Value::Text(self.required_text(row, ids, &Role::Event, "event")?),
            )),
            Call::Page | Call::Screen => {
                self.required_id(row, ids, &Role::UserId, "userId")?;
                top.push((
                    "name".into(),
                    Value::Text(self.required_text(row, ids, &Role::Name, "name")?),
                ));
            }
            Call::Identify | Call::Group | Call::Alias => {}
        }
        Ok(key)
    }

    /// The row's `timestamp` column, if it has one.
    fn timestamp(&self, row: &Row, ids: &RowIds) -> Result<Option<DateTime<Utc>>, Reject> {
        match self.value(row, &Role::Timestamp) {
            None => Ok(None),
            Some(v) => as_utc(v).map(Some).ok_or_else(|| {
                ids.reject(format!(
                    "timestamp is malformed: a {} value that is not a date",
                    v.kind()
                ))
            }),
        }
    }

    /// Puts every other column where the spec wants it; JSON columns named `traits`,
    /// `properties` or `context` are merged into that object.
    fn spread(&self, row: &Row, ids: &RowIds) -> Result<Spread, Reject> {
        let mut spread = Spread::default();
        for ((column, v), role) in row.iter().zip(&self.roles) {
            match role {
                Role::Payload if self.call.payload().is_some() => {
                    spread.payload.insert(column.to_string(), v.to_plain_json());
                }
                Role::Payload => spread.top_level.push((column.to_string(), v.clone())),
                Role::Context(field) => {
                    spread.context.insert((*field).to_string(), v.to_plain_json());
                }
                Role::Merged(target) => {
                    let into = match *target {
                        "context" => &mut spread.context,
                        _ => &mut spread.payload,
                    };
                    for (k, v) in json_object(column, v).map_err(|e| ids.reject(e))?.unwrap_or_default() {
                        into.entry(k).or_insert(v);
                    }
                }
                Role::Integrations => spread.integrations = json_object(column, v).map_err(|e| ids.reject(e))?,
                _ => {}
            }
        }
        Ok(spread)
    }

    /// A group's `objectTypeId`: the column, or `object_type_id` among the traits; "1"
    /// when neither is given.
    fn object_type_id(&self, row: &Row, ids: &RowIds, traits: &Map<String, Json>) -> Result<String, Reject> {
        let given = self
            .value(row, &Role::ObjectTypeId)
            .map(Value::to_plain_json)
            .or_else(|| traits.get("object_type_id").cloned());
        match given {
            None | Some(Json::Null) => Ok("1".to_string()),
            Some(Json::Number(n)) if n.is_u64() => Ok(n.to_string()),
            Some(Json::String(s)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => Ok(s),
            Some(other) => Err(ids.reject(format!("objectTypeId must be a whole number, got {other}"))),
        }
    }
}

impl RowMapper for CallMapper {
    fn map(&self, row: Row) -> Result<Mapped, Reject> {
        let ids = RowIds {
            user: self.user_id(&row),
            anonymous: self.id(&row, &Role::AnonymousId),
            message: self.id(&row, &Role::MessageId),
        };
        check_values(&row).map_err(|reason| ids.reject(reason))?;
        let hash = content_hash(&row);
        let hash_hex = format!("{hash:032x}");
        let mut top: Vec<(String, Value)> = vec![("type".into(), Value::Text(self.call.name().into()))];
        let key = self.key(&row, &ids, &hash_hex, &mut top)?;
        for (id, field) in [(&ids.user, "userId"), (&ids.anonymous, "anonymousId")] {
            if let Some(id) = id {
                top.push((field.into(), Value::Text(id.clone())));
            }
        }
        top.push(("messageId".into(), Value::Text(ids.message.clone().unwrap_or(hash_hex))));
        // Only the row's own time: a call's content never depends on when it was read,
        // so a row read again is the same call, never a changed one delivered twice.
        // Without it the destination stamps the call when it receives it.
        let occurred_at = self.timestamp(&row, &ids)?;
        if let Some(at) = occurred_at {
            top.push(("timestamp".into(), Value::Timestamp(at)));
        }
        let spread = self.spread(&row, &ids)?;
        if self.call == Call::Group {
            let object_type = self.object_type_id(&row, &ids, &spread.payload)?;
            top.push(("objectTypeId".into(), Value::Text(object_type)));
        }
        if let Some(name) = self.call.payload() {
            top.push((name.into(), Value::Json(Json::Object(spread.payload))));
        }
        if !spread.context.is_empty() {
            top.push(("context".into(), Value::Json(Json::Object(spread.context))));
        }
        if let Some(integrations) = spread.integrations {
            top.push(("integrations".into(), Value::Json(Json::Object(integrations))));
        }
        top.extend(spread.top_level);
        let (columns, values): (Vec<String>, Vec<Value>) = top.into_iter().unzip();
        let fields = Row {
            columns: Arc::from(columns),
            values,
        };
        let warning = (self.call == Call::Group && ids.user.is_none()).then_some(GROUP_WITHOUT_USER);
        let mapped = Mapped {
            record: Record { key, fields, hash },
            member: None,
            warning,
            occurred_at,
        };
        limits::check(&mapped, self.call.key_columns()).map_err(|reason| ids.reject(reason))?;
        Ok(mapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapper(call: Call, columns: &[&str]) -> Result<CallMapper, MappingError> {
        CallMapper::new(call, &columns.iter().map(|c| c.to_string()).collect::<Vec<_>>())
    }

    fn row(columns: &[&str], values: Vec<Value>) -> Row {
        Row {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            values,
        }
    }

    fn fields(record: &Record) -> Json {
        Json::Object(
            record
                .fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_plain_json()))
                .collect(),
        )
    }

    #[test]
    fn identify_keys_by_user_and_puts_the_rest_in_traits_and_context() {
        let columns = ["user_id", "email", "plan", "ip", "user_agent", "traits"];
        let m = mapper(Call::Identify, &columns).unwrap();
        let mapped = m
            .map(row(
                &columns,
                vec![
                    Value::Int(42),
                    Value::Text("ada@example.com".into()),
                    Value::Null,
                    Value::Text("10.0.0.1".into()),
                    Value::Text("curl".into()),
                    Value::Json(json!({"nested": {"a": 1}, "email": "ignored"})),
                ],
            ))
            .unwrap();
        assert_eq!(mapped.record.key, "42");
        let f = fields(&mapped.record);
        assert_eq!(f["type"], "identify");
        assert_eq!(f["userId"], "42");
        assert_eq!(
            f["traits"],
            json!({"email": "ada@example.com", "plan": null, "nested": {"a": 1}})
        );
        assert_eq!(f["context"], json!({"ip": "10.0.0.1", "userAgent": "curl"}));
        assert!(f.get("timestamp").is_none(), "no timestamp column, no timestamp: {f}");
        assert_eq!(f["messageId"].as_str().unwrap().len(), 32);
        assert!(f.get("anonymousId").is_none());
    }

    #[test]
    fn identify_by_email_alone_and_integrations_active_and_network_pass_through() {
        let columns = ["userId", "email", "active", "network", "integrations"];
        let m = mapper(Call::Identify, &columns[1..]).unwrap();
        let values = |user: Value, email: Value| {
            vec![
                user,
                email,
                Value::Bool(false),
                Value::Json(json!({"wifi": true})),
                Value::Text(r#"{"All": false, "Customer.io": true}"#.into()),
            ]
        };
        let by_email = m
            .map(row(
                &columns[1..],
                values(Value::Null, Value::Text("ada@example.com".into()))[1..].to_vec(),
            ))
            .unwrap();
        assert_eq!(by_email.record.key, "ada@example.com");
        let f = fields(&by_email.record);
        assert_eq!(
            (f["userId"].as_str(), f["traits"]["email"].as_str()),
            (Some("ada@example.com"), Some("ada@example.com"))
        );
        assert_eq!(f["context"], json!({"active": false, "network": {"wifi": true}}));
        assert_eq!(f["integrations"], json!({"All": false, "Customer.io": true}));
        assert!(f["traits"].get("integrations").is_none());

        let m = mapper(Call::Identify, &columns).unwrap();
        let empty_user = m
            .map(row(
                &columns,
                values(Value::Text(String::new()), Value::Text("ada@example.com".into())),
            ))
            .unwrap();
        assert_eq!(empty_user.record.key, "ada@example.com", "an empty userId is no id");
        let given = m
            .map(row(
                &columns,
                values(Value::Int(7), Value::Text("ada@example.com".into())),
            ))
            .unwrap();
        assert_eq!(given.record.key, "7", "a userId wins over the email");
        let none = m.map(row(&columns, values(Value::Null, Value::Null))).err().unwrap();
        assert_eq!(
            none.reason,
            "userId, anonymousId and email are all null or empty; identify calls require one"
        );
        let mut bad = values(Value::Int(7), Value::Null);
        bad[4] = Value::Text("[1]".into());
        let r = m.map(row(&columns, bad)).err().unwrap();
        assert_eq!(r.reason, "integrations must be a JSON object, got text that is not one");
    }

    #[test]
    fn each_type_needs_its_columns() {
        let cases: [(Call, &[&str], &str); 6] = [
            (Call::Identify, &["name"], "userId`, `anonymousId` or `email"),
            (Call::Track, &["userId"], "event"),
            (Call::Group, &["userId"], "groupId"),
            (Call::Page, &["userId"], "name"),
            (Call::Screen, &["name"], "userId"),
            (Call::Alias, &["userId"], "previousId"),
        ];
        for (call, columns, missing) in cases {
            let e = mapper(call, columns).unwrap_err().to_string();
            assert!(e.contains(&format!("no `{missing}` column")), "{call:?}: {e}");
        }
    }

    #[test]
    fn null_required_values_reject_the_row_with_the_reason() {
        let m = mapper(Call::Track, &["anonymousId", "event"]).unwrap();
        let r = m.map(row(
            &["anonymousId", "event"],
            vec![Value::Null, Value::Text("x".into())],
        ));
        assert_eq!(
            r.err().unwrap().reason,
            "userId and anonymousId are both null or empty; track calls require one"
        );
        let r = m.map(row(
            &["anonymousId", "event"],
            vec![Value::Text("a".into()), Value::Null],
        ));
        assert_eq!(r.err().unwrap().reason, "event is null; track calls require it");
        let m = mapper(Call::Alias, &["userId", "previousId"]).unwrap();
        let r = m.map(row(
            &["userId", "previousId"],
            vec![Value::Text("u".into()), Value::Null],
        ));
        assert_eq!(r.err().unwrap().reason, "previousId is null; alias calls require it");
    }

    #[test]
    fn track_keys_by_message_id_or_by_the_rows_hash() {
        let columns = ["userId", "event", "amount", "messageId", "timestamp"];
        let m = mapper(Call::Track, &columns).unwrap();
        let values = |message: Value| {
            vec![
                Value::Text("u1".into()),
                Value::Text("Order Completed".into()),
                Value::Decimal("12.5".into()),
                message,
                Value::Text("2025-01-02 03:04:05".into()),
            ]
        };
        let keyed = m.map(row(&columns, values(Value::Text("m-1".into())))).unwrap().record;
        assert_eq!(keyed.key, "m-1");
        let f = fields(&keyed);
        assert_eq!(
            (f["event"].as_str(), f["messageId"].as_str()),
            (Some("Order Completed"), Some("m-1"))
        );
        assert_eq!(f["properties"], json!({"amount": 12.5}));
        assert_eq!(f["timestamp"], "2025-01-02T03:04:05Z");
        let a = m.map(row(&columns, values(Value::Null))).unwrap().record;
        let b = m.map(row(&columns, values(Value::Null))).unwrap().record;
        assert_eq!(
            (a.key.len(), &a.key, a.hash),
            (32, &b.key, b.hash),
            "a re-read row keeps its key and hash"
        );
    }

    #[test]
    fn group_object_type_defaults_to_one_and_a_missing_user_warns() {
        let m = mapper(Call::Group, &["groupId", "name", "object_type_id"]).unwrap();
        let mapped = m
            .map(row(
                &["groupId", "name", "object_type_id"],
                vec![Value::Int(9), Value::Text("Acme".into()), Value::Null],
            ))
            .unwrap();
        assert_eq!(mapped.record.key, r#"["9",""]"#);
        assert_eq!(mapped.warning, Some(GROUP_WITHOUT_USER));
        let f = fields(&mapped.record);
        assert_eq!(
            (f["groupId"].as_str(), f["objectTypeId"].as_str()),
            (Some("9"), Some("1"))
        );
        assert_eq!(f["traits"], json!({"name": "Acme"}));

        let m = mapper(Call::Group, &["group_id", "user_id", "traits"]).unwrap();
        let traits = Value::Json(json!({"object_type_id": "2", "plan": "pro"}));
        let mapped = m
            .map(row(
                &["group_id", "user_id", "traits"],
                vec![Value::Int(9), Value::Int(4), traits],
            ))
            .unwrap();
        assert_eq!(mapped.record.key, r#"["9","4"]"#);
        assert_eq!(mapped.warning, None);
        assert_eq!(fields(&mapped.record)["objectTypeId"], "2");
        let bad = Value::Json(json!({"object_type_id": "two"}));
        let r = m.map(row(
            &["group_id", "user_id", "traits"],
            vec![Value::Int(9), Value::Int(4), bad],
        ));
        assert!(r.err().unwrap().reason.contains("objectTypeId must be a whole number"));
    }

    #[test]
    fn alias_and_page_take_their_fields() {
        let m = mapper(Call::Alias, &["USERID", "PREVIOUSID"]).unwrap();
        let a = m
            .map(row(
                &["USERID", "PREVIOUSID"],
                vec![Value::Int(1), Value::Text("anon-1".into())],
            ))
            .unwrap();
        assert_eq!(a.record.key, r#"["1","anon-1"]"#);
        assert_eq!(fields(&a.record)["previousId"], "anon-1");
        let m = mapper(Call::Page, &["userid", "name", "path"]).unwrap();
        let p = m
            .map(row(
                &["userid", "name", "path"],
                vec![Value::Int(1), Value::Text("Home".into()), Value::Text("/".into())],
            ))
            .unwrap();
        let f = fields(&p.record);
        assert_eq!((f["type"].as_str(), f["name"].as_str()), (Some("page"), Some("Home")));
        assert_eq!(f["properties"], json!({"path": "/"}));
    }
}
