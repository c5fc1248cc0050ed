//! A source's configuration and its connection secret, validated at the edge.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secret_json;

/// The engine a source runs on. It decides the bind-parameter style and the driver.
/// The longest a source's query may run.
const MAX_QUERY_TIMEOUT_SECONDS: u32 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    #[serde(alias = "mariadb")]
    Mysql,
    Sqlite,
    /// Microsoft SQL Server 2005 or later, and Azure SQL.
    #[serde(alias = "mssql", alias = "azuresql")]
    Sqlserver,
    Oracle,
    Snowflake,
    Bigquery,
}

impl Engine {
    pub fn placeholder_style(self) -> crate::template::PlaceholderStyle {
        use crate::template::PlaceholderStyle;
        match self {
            Engine::Postgres => PlaceholderStyle::Dollar,
            Engine::Sqlserver => PlaceholderStyle::AtP,
            Engine::Oracle => PlaceholderStyle::Colon,
            Engine::Bigquery => PlaceholderStyle::AtLowerP,
            Engine::Mysql | Engine::Sqlite | Engine::Snowflake => PlaceholderStyle::Question,
        }
    }

    /// The TCP port of a database server of this engine, when the secret names none.
    pub fn default_port(self) -> Option<u16> {
        match self {
            Engine::Postgres => Some(5432),
            Engine::Mysql => Some(3306),
            Engine::Sqlserver => Some(1433),
            Engine::Oracle => Some(1521),
            Engine::Snowflake | Engine::Bigquery => Some(443),
            Engine::Sqlite => None,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
            Engine::Sqlite => "sqlite",
            Engine::Sqlserver => "sqlserver",
            Engine::Oracle => "oracle",
            Engine::Snowflake => "snowflake",
            Engine::Bigquery => "bigquery",
        })
    }
}

/// What each row of the query becomes (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncType {
    /// Plecto-style registration: member_id, member_name, date, reference; team_name optional.
    Registration,
    /// Customer.io-style calls (README "Sync types"): one call per row.
    Identify,
    Track,
    Group,
    Page,
    Screen,
    Alias,
}

/// A source as its owner configures it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Stable identifier: letters, digits, `-` and `_`, at most 64 characters.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What the source is for, in the user's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Engine of the source database.
    pub engine: Engine,
    /// Secret (Secrets Manager id, or a key of the local config's `secrets`) holding the
    /// connection JSON of DESIGN §5.
    pub secret_id: String,
    /// The templated SELECT; see README "Templates".
    pub query: String,
    /// What each row becomes.
    pub sync_type: SyncType,
    /// How often the schedule runs the sync, in minutes.
    #[serde(default = "default_frequency")]
    pub frequency_minutes: u32,
    /// No run starts before this instant.
    #[serde(default)]
    pub start_at: Option<DateTime<Utc>>,
    /// A disabled source is skipped.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Namespace of member ids (registrations); defaults to the source id.
    #[serde(default)]
    pub member_id_source: Option<String>,
    /// How far before the watermark each run reads again, for late-committing rows.
    #[serde(default = "default_lookback")]
    pub lookback_seconds: u32,
    /// Longest window one query covers; longer gaps are caught up in steps of this size.
    #[serde(default)]
    pub max_window_seconds: Option<u32>,
    /// Most rows one run reads; past it the run keeps what it wrote and the next runs
    /// read the window in halves. Default: 100,000 per minute of frequency, at most
    /// 5,000,000. Needs `{{ upper_date_limit }}` in the query.
    #[serde(default)]
    pub max_rows_per_run: Option<u64>,
    /// Where the first run starts; the Unix epoch when absent.
    #[serde(default)]
    pub initial_watermark: Option<DateTime<Utc>>,
    /// Statement timeout of the source query.
    #[serde(default = "default_query_timeout")]
    pub query_timeout_seconds: u32,
    /// Where the calls of a Customer.io-style source are delivered; none keeps them in
    /// the store only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Refuse to run (before the query) when the login check does not prove that the
    /// login cannot write. Off, a login that can write is a warning in the test query's
    /// answer and in every run's log (docs/decisions.md says why that is the default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_read_only_login: bool,
}

/// A Segment-compatible batch API the calls are sent to (`POST {base}/v1/batch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// `customerio` (Data Pipelines), `segment`, or `http` (any endpoint of the
    /// Segment spec, such as RudderStack's).
    pub kind: DestinationKind,
    /// Customer.io's region: `us` (the default) or `eu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// The API's base URL: required for `http`; for the others it replaces their own
    /// (a proxy, a test endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The secret that holds the write key, as `{"write_key": "..."}`.
    pub secret_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    Customerio,
    Segment,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Us,
    Eu,
}

impl Destination {
    /// Where batches are posted.
    pub fn batch_url(&self) -> String {
        let base = match (&self.base_url, self.kind, self.region) {
            (Some(base), _, _) => base.trim_end_matches('/'),
            (None, DestinationKind::Customerio, Some(Region::Eu)) => "https://cdp-eu.customer.io",
            (None, DestinationKind::Customerio, _) => "https://cdp.customer.io",
            (None, DestinationKind::Segment, _) => "https://api.segment.io",
            // Refused by `validate`.
            (None, DestinationKind::Http, _) => "",
        };
        format!("{base}/v1/batch")
    }

    fn validate(&self) -> Result<(), FieldError> {
        let bad = |field: &str, reason: &str| Err(FieldError::new(format!("destination.{field}"), reason));
        if self.kind == DestinationKind::Http && self.base_url.is_none() {
            return bad(
                "base_url",
                "is required for an http destination: the URL its /v1/batch is under",
            );
        }
        if let Some(url) = &self.base_url {
            check_base_url(url).map_err(|reason| FieldError::new("destination.base_url", reason))?;
        }
        if self.region.is_some() && self.kind != DestinationKind::Customerio {
            return bad("region", "applies to customerio destinations only");
        }
        if self.secret_id.trim().is_empty() {
            return bad("secret_id", "name the secret that holds the write key");
        }
        Ok(())
    }
}

/// A destination's base URL must be `https://` to a public host. Plain `http://` is
/// taken only to a loopback host, for local tests (the sender then also needs
/// `SLUICE_DESTINATIONS_ALLOW_LOOPBACK`). A host name is checked again, address by
/// address, each time the sender connects (DNS may answer differently later).
fn check_base_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("must be an https:// URL".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not hold a user name or password: the write key goes in the destination's secret".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _port)| host),
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let ip = host.parse::<std::net::IpAddr>().ok();
    let loopback = host.eq_ignore_ascii_case("localhost") || ip.is_some_and(|ip| ip.to_canonical().is_loopback());
    match scheme.to_ascii_lowercase().as_str() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err("must be https: plain http is taken only to a loopback host (127.0.0.1, [::1], localhost), for local tests".into());
        }
        _ => return Err("must be an https:// URL".into()),
    }
    match ip.and_then(|ip| crate::address::refused_address(ip, true).map(|why| (ip, why))) {
        Some((ip, why)) => Err(format!(
            "is {why} ({ip}): a destination must be a public address, not one inside the network Sluice runs in"
        )),
        None => Ok(()),
    }
}

/// The longest description a source may have.
const MAX_DESCRIPTION_CHARS: usize = 1_000;

/// The longest query template: far beyond any real one, and well inside the DynamoDB
/// item (400 KB) that holds the source.
pub const MAX_QUERY_CHARS: usize = 100_000;

/// The longest a source may wait between syncs: a day, in minutes.
pub const MAX_FREQUENCY_MINUTES: u32 = 1440;

/// Every minute, as Plecto syncs by default.
fn default_frequency() -> u32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_lookback() -> u32 {
    300
}
fn default_query_timeout() -> u32 {
    600
}

/// A field of a configuration or a request that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("invalid `{field}`: {reason}")]
pub struct FieldError {
    /// The field's path, such as `query` or `window.upper_date_limit`.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl SourceConfig {
    /// `max_rows_per_run`, or its default for the frequency.
    pub fn row_limit(&self) -> u64 {
        self.max_rows_per_run
            .unwrap_or_else(|| (u64::from(self.frequency_minutes) * 100_000).min(5_000_000))
    }

    /// Checks what serde cannot: identifiers, ranges, and that the query compiles.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |field: &str, reason: &str| Err(FieldError::new(field, reason));
        if self.id.is_empty()
            || self.id.len() > 64
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad("id", "use 1 to 64 letters, digits, '-' or '_'");
        }
        // It is part of the members' partition key, whose size mapping counts on.
        if self
            .member_id_source
            .as_ref()
            .is_some_and(|m| m.is_empty() || m.len() > 64)
        {
            return bad("member_id_source", "use 1 to 64 characters");
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            return bad("description", "keep it to 1,000 characters");
        }
        if self.query.chars().count() > MAX_QUERY_CHARS {
            return bad("query", "keep it to 100,000 characters");
        }
        if self.query.chars().count() > MAX_QUERY_CHARS {
            return bad("query", "keep it to 100,000 characters");
        }
        if self.secret_id.trim().is_empty() {
            return bad("secret_id", "name the secret that holds the connection");
        }
        if !(1..=MAX_FREQUENCY_MINUTES).contains(&self.frequency_minutes) {
            return bad(
                "frequency_minutes",
                "must be a whole number of minutes from 1 (every minute) to 1440 (once a day)",
            );
        }
        if self.max_rows_per_run == Some(0) {
            return bad("max_rows_per_run", "must be at least 1");
        }
        if self.max_window_seconds.is_some_and(|w| w < 60) {
            return bad("max_window_seconds", "must be at least 60");
        }
        if self.query_timeout_seconds == 0 {
            return bad("query_timeout_seconds", "must be at least 1");
        }
        // A day is past any function's timeout; SQL Server's lock timeout, in
        // milliseconds, would overflow its int past 24 days.
        if self.query_timeout_seconds > MAX_QUERY_TIMEOUT_SECONDS {
            return bad(
                "query_timeout_seconds",
                &format!("must be at most {MAX_QUERY_TIMEOUT_SECONDS} (a day)"),
            );
        }
        if let Some(destination) = &self.destination {
            if self.sync_type == SyncType::Registration {
                return bad(
                    "destination",
                    "registrations are not delivered; a destination takes Customer.io-style calls (identify, track, group, page, screen, alias)",
                );
            }
            destination.validate()?;
        }
        // A trial render finds what compiling cannot: a variable inside a quoted literal.
        crate::template::QueryTemplate::compile(&self.query)
            .and_then(|t| {
                t.render(
                    self.engine.placeholder_style(),
                    DateTime::UNIX_EPOCH,
                    DateTime::UNIX_EPOCH,
                )
            })
            .map(drop)
            .map_err(|e| FieldError::new("query", e.to_string()))
    }

    pub fn member_id_source(&self) -> &str {
        self.member_id_source.as_deref().unwrap_or(&self.id)
    }
}

/// TLS policy of the source connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Encrypted, and the server's certificate and host name are verified (against the
    /// system's roots, Amazon RDS's CAs and the secret's `ca_cert`).
    VerifyFull,
    /// Encrypted, certificate not verified: anyone between Sluice and the database can
    /// pose as the server and read the password.
    Require,
    /// Plain text (loopback and private networks only).
    Disable,
}

/// The connection secret (DESIGN §5). `Debug` never prints the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionSecret {
    pub engine: Engine,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Database name; for SQLite, the file path; for Oracle, the service name; for
    /// BigQuery, the project that runs the query jobs.
    pub database: String,
    #[serde(default, deserialize_with = "secret_json::text_or_whole_number")]
    pub username: Option<String>,
    /// YAML and the console may make a password of digits a number: a whole number is
    /// taken as its text.
    #[serde(default, deserialize_with = "secret_json::text_or_whole_number")]
    pub password: Option<String>,
    /// As the secret says; [`ConnectionSecret::tls`] is the mode in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMode>,
    /// PEM of the CA that signs the server certificate, for `verify-full` with a private CA.
    #[serde(default)]
    pub ca_cert: Option<String>,
    /// An SSH bastion in front of the database: the connection goes through a tunnel.
    /// An object, or (as the Secrets Manager console stores nested values) the object's
    /// JSON in a string.
    #[serde(default, deserialize_with = "secret_json::object_or_json_string")]
    pub ssh_tunnel: Option<SshTunnel>,
    /// The engine's own fields (Snowflake's `account`, BigQuery's `service_account`,
    /// ...): the engine's module reads and checks them, and refuses any it does not take.
    #[serde(flatten)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// An SSH bastion (DESIGN §5): Sluice logs in with `private_key` and forwards the
/// database connection through it. `Debug` never prints the key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTunnel {
    pub host: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    pub username: String,
    /// The private key: RSA in PEM (`BEGIN RSA PRIVATE KEY`), or RSA, ed25519 or ECDSA in
    /// OpenSSH format.
    pub private_key: String,
    /// The passphrase of an encrypted key.
    #[serde(default, deserialize_with = "secret_json::text_or_whole_number")]
    pub passphrase: Option<String>,
    /// The bastion's public host key as one `known_hosts`/`.pub` line (`ssh-ed25519
    /// AAAA...`); the tunnel is refused when the server shows another. Without it the
    /// first tunnel records the key it is shown, and later ones must meet that.
    #[serde(default)]
    pub host_key: Option<String>,
}

fn default_ssh_port() -> u16 {
    22
}

impl fmt::Debug for SshTunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshTunnel")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ConnectionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSecret")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("ssh_tunnel", &self.ssh_tunnel)
            // The engine's fields may hold keys: only their names.
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Engine fields whose value is a JSON object, which the console may store as a string.
const OBJECT_OPTIONS: [&str; 1] = ["service_account"];

/// Option fields whose values are credentials, whatever the engine.
fn is_credential(name: &str) -> bool {
    ["password", "passphrase", "private_key", "token", "secret"]
        .iter()
        .any(|c| name.contains(c))
}

/// The string values under credential names in `value`, at any depth.
fn credentials<'a>(name: &str, value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) if is_credential(name) => out.push(s),
        serde_json::Value::Object(fields) => {
            for (k, v) in fields {
                credentials(k, v, out);
            }
        }
        _ => {}
    }
}

impl ConnectionSecret {
    /// The TLS mode in force: the secret's `tls`, else `verify-full`, a certificate
    /// checked, since a database reached over a network must prove who it is before it
    /// is given the password. Through an SSH tunnel the default is `require`: the
    /// tunnel authenticates the bastion by its host key, and no certificate's name can
    /// match the tunnel's local end.
    pub fn tls(&self) -> TlsMode {
        match (self.tls, &self.ssh_tunnel) {
            (Some(mode), _) => mode,
            (None, Some(_)) => TlsMode::Require,
            (None, None) => TlsMode::VerifyFull,
        }
    }

    /// Parses the secret's JSON; the error names the field, never a value.
    pub fn from_json(text: &str) -> Result<Self, FieldError> {
        // serde_json's syntax errors give a position, never the text.
        let value = serde_json::from_str(text).map_err(|e| {
            FieldError::new(
                "secret",
                format!("is not JSON (line {} column {})", e.line(), e.column()),
            )
        })?;
        Self::from_value(value).map_err(|reason| FieldError::new("secret", reason))
    }

    /// Reads a secret's JSON document: the error names the field and the kind of value
    /// expected, never a value (it may be the password). Engine fields that hold a JSON
    /// object (BigQuery's `service_account`) are parsed when the console stored them as
    /// a string, so their keys are known as credentials.
    pub fn from_value(mut value: serde_json::Value) -> Result<Self, String> {
        for field in OBJECT_OPTIONS {
            if let Some(slot) = value.get_mut(field)
                && let serde_json::Value::String(text) = slot
            {
                *slot = secret_json::parse_json_string(text).map_err(|e| format!("`{field}`: {e}"))?;
            }
        }
        secret_json::from_value(value).map_err(|e| {
            format!(
                "{e}; a connection secret is {{\"engine\",\"host\",\"port\",\"database\",\"username\",\"password\",\"tls\"}} and the engine's fields"
            )
        })
    }

    /// Every credential the secret holds: the password, the SSH key and its
    /// passphrase, and the engine's keys.
    pub fn credentials(&self) -> Vec<&str> {
        let mut out: Vec<&str> = [self.password.as_deref()].into_iter().flatten().collect();
        if let Some(t) = &self.ssh_tunnel {
            out.push(&t.private_key);
            out.extend(t.passphrase.as_deref());
        }
        for (k, v) in &self.options {
            credentials(k, v, &mut out);
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// A digest of who the secret logs in as, and where: what a login check's result
    /// holds for. Credentials are left out (a new password is the same login), and the
    /// digest only keys a cache in memory.
    pub fn login_digest(&self) -> u128 {
        let mut options = self.options.clone();
        options.retain(|name, _| !is_credential(name));
        let identity = serde_json::json!([
            self.engine,
            self.host,
            self.port,
            self.database,
            self.username,
            self.ssh_tunnel.as_ref().map(|t| (&t.host, t.port)),
            options,
        ]);
        xxhash_rust::xxh3::xxh3_128(identity.to_string().as_bytes())
    }

    /// Removes every credential from a message (drivers sometimes echo connection
    /// strings).
    pub fn redact(&self, message: &str) -> String {
        self.credentials()
            .into_iter()
            .fold(message.to_string(), |m, secret| m.replace(secret, "<redacted>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SourceConfig {
        serde_json::from_value(serde_json::json!({
            "id": "sales", "name": "Sales", "engine": "postgres", "secret_id": "db",
            "query": "SELECT 1 WHERE d >= {{ last_update_time }}", "sync_type": "registration"
        }))
        .unwrap()
    }

    #[test]
    fn defaults_apply_and_validate() {
        let c = config();
        assert_eq!(c.lookback_seconds, 300);
        assert_eq!(c.frequency_minutes, 1, "every minute, as Plecto");
        assert_eq!(c.row_limit(), 100_000);
        assert!(c.enabled);
        assert_eq!(c.member_id_source(), "sales");
        c.validate().unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let mut c = config();
        c.id = "no spaces".into();
        assert_eq!(c.validate().unwrap_err().field, "id");
        let mut c = config();
        c.query = "SELECT {{ nope }}".into();
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "query");
        assert!(e.reason.contains("nope"), "{e}");
    }

    #[test]
    fn any_whole_number_of_minutes_up_to_a_day_is_a_frequency() {
        for minutes in [1, 5, 7, 90, 1440] {
            let mut c = config();
            c.frequency_minutes = minutes;
            c.validate().unwrap();
            assert_eq!(c.row_limit(), (u64::from(minutes) * 100_000).min(5_000_000));
        }
        for minutes in [0, 1441] {
            let mut c = config();
            c.frequency_minutes = minutes;
            assert_eq!(c.validate().unwrap_err().field, "frequency_minutes");
        }
    }

    #[test]
    fn destination_urls_are_https_to_public_hosts() {
        for ok in [
            "https://cdp.customer.io",
            "https://api.example.com:8443/x",
            "http://127.0.0.1:9000",
            "http://localhost:1/",
            "http://[::1]:80",
        ] {
            assert_eq!(check_base_url(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("http://api.example.com", "must be https"),
            ("http://10.0.0.1", "must be https"),
            ("ftp://example.com", "https://"),
            ("cdp.customer.io", "https://"),
            ("https://10.0.0.1/", "a private address"),
            ("https://169.254.169.254/latest/meta-data", "metadata"),
            ("https://[fd00:ec2::254]/", "metadata"),
            ("https://[::ffff:169.254.169.254]:443", "metadata"),
            ("https://0.0.0.0", "unspecified"),
            ("https://[::]:443", "unspecified"),
            ("https://100.64.1.1", "carrier-grade NAT"),
            ("https://user:pw@api.example.com", "user name"),
            ("https://", "no host"),
        ] {
            let e = check_base_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_value::<SourceConfig>(serde_json::json!({
            "id": "s", "name": "S", "engine": "postgres", "secret_id": "db",
            "query": "SELECT 1", "sync_type": "registration", "frequncy": 5
        }))
        .unwrap_err();
        assert!(e.to_string().contains("frequncy"), "{e}");
    }

    #[test]
    fn secret_debug_and_redact_hide_the_password() {
        let s = ConnectionSecret::from_json(
            r#"{"engine":"postgres","host":"h","database":"d","username":"u","password":"hunter2"}"#,
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.redact("login hunter2 failed"), "login <redacted> failed");
        assert_eq!(
            s.tls(),
            TlsMode::VerifyFull,
            "certificates are verified unless the secret says otherwise"
        );
        let tunnelled = ConnectionSecret::from_json(
            r#"{"engine":"postgres","database":"d","ssh_tunnel":{"host":"b","username":"u","private_key":"k"}}"#,
        )
        .unwrap();
        assert_eq!(tunnelled.tls(), TlsMode::Require, "no certificate names a tunnel's end");
        let said = ConnectionSecret::from_json(r#"{"engine":"postgres","database":"d","tls":"require"}"#).unwrap();
        assert_eq!(said.tls(), TlsMode::Require);
        let e = ConnectionSecret::from_json(r#"{"engine":"postgres"}"#).unwrap_err();
        assert!(e.reason.contains("database"), "{e}");
    }

    #[test]
    fn the_login_digest_follows_the_login_not_its_password() {
        let secret = |user: &str, password: &str| {
            ConnectionSecret::from_json(&format!(
                r#"{{"engine":"postgres","host":"h","database":"d","username":"{user}","password":"{password}"}}"#
            ))
            .unwrap()
        };
        assert_eq!(secret("u", "a").login_digest(), secret("u", "b").login_digest());
        assert_ne!(secret("u", "a").login_digest(), secret("v", "a").login_digest());
    }

    #[test]
    fn require_read_only_login_is_off_unless_set_and_kept_out_of_old_readers_way() {
        let c = config();
        assert!(!c.require_read_only_login);
        // Absent when off, so a stored source reads the same in a build that predates it.
        assert!(
            serde_json::to_value(&c)
                .unwrap()
                .get("require_read_only_login")
                .is_none()
        );
        let mut on = serde_json::to_value(&c).unwrap();
        on["require_read_only_login"] = true.into();
        let on: SourceConfig = serde_json::from_value(on).unwrap();
        assert!(on.require_read_only_login);
        let e = serde_json::from_value::<SourceConfig>(serde_json::json!({
            "id": "s", "name": "S", "engine": "postgres", "secret_id": "db",
            "query": "SELECT 1", "sync_type": "registration", "require_read_only_login": "yes"
        }))
        .unwrap_err();
        assert!(e.to_string().contains("boolean"), "{e}");
    }
}
