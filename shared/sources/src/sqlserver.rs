//! SQL Server 2008 and later, and Azure SQL, through tiberius (TDS 7.3/7.4).
//!
//! SQL Server has no read-only session, so the session reads inside a transaction that
//! is never committed: whatever the query (or a procedure it EXECs) writes is rolled
//! back when the connection closes. The connection also declares read-only intent, so
//! an availability group with read-only routing sends it to a readable secondary.
//! Date and time types carry no zone and are read as UTC; `datetimeoffset` is
//! converted to UTC.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SubsecRound, Utc};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryFutureExt, TryStreamExt, future};
use sluice_core::{
    Bind, ConnectionSecret, RenderedQuery, Row, SourceError, SourceErrorKind, SourceSession, TlsMode, Value,
};
use tiberius::{AuthMethod, Client, ColumnData, ColumnType, Config, EncryptionLevel, FromSql, QueryItem};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::{CONNECT_TIMEOUT, decimal_text, error};

type Connection = Client<Compat<TcpStream>>;

pub(crate) struct SqlServer {
    client: Connection,
    /// The column names of the result set being streamed, shared by its rows.
    names: Option<(usize, Arc<[String]>)>,
    /// `@@TRANCOUNT` and `XACT_STATE()` as the setup left them: Sluice's transaction,
    /// open. Every query must leave them so.
    transaction: (Value, Value),
    /// The savepoint set where Sluice's transaction began.
    savepoint: String,
    /// A query was sent whose effect on the transaction is not checked yet.
    unchecked: bool,
    /// Whether that query is an EXEC of a procedure (else a SELECT, which cannot end
    /// the transaction itself).
    procedure: bool,
    /// Whether the last query's answer was read to its end (else it is cancelled).
    answered: Arc<AtomicBool>,
}

/// Marks where Sluice's transaction began (at `savepoint`), and reads what it is: its
/// depth and its state (1 open, 0 none, -1 doomed).
fn transaction_begun(savepoint: &str) -> String {
    format!("SAVE TRANSACTION {savepoint}; SELECT @@TRANCOUNT, XACT_STATE()")
}
/// Why a query that ended Sluice's transaction fails the run, and what to do.
const TRANSACTION_ENDED: &str = "; the query ended Sluice's transaction: a procedure it ran committed or rolled back, so what it wrote may be committed; Sluice reads only: remove COMMIT, ROLLBACK and BEGIN TRANSACTION from the procedure, and give Sluice a login that cannot write";
/// Sluice's transaction as the setup began it, after an error of Sluice's own ended it.
fn transaction_again(savepoint: &str) -> String {
    format!("IF XACT_STATE() = -1 ROLLBACK; IF @@TRANCOUNT = 0 BEGIN TRANSACTION; SAVE TRANSACTION {savepoint}")
}
/// Undoes what the last query did inside Sluice's transaction and reads what the
/// transaction is. The savepoint exists only in Sluice's own transaction: a procedure
/// that committed it and began another (which leaves both counters as they were) makes
/// this fail. Babelfish drops a savepoint rolled back to, so it is made again.
fn transaction_kept(savepoint: &str) -> String {
    format!("ROLLBACK TRANSACTION {savepoint}; SAVE TRANSACTION {savepoint}; SELECT @@TRANCOUNT, XACT_STATE()")
}

/// A savepoint name no procedure can guess (and so set again after committing Sluice's
/// transaction): random for each session.
fn savepoint_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("sluice_{random:016x}")
}

/// The tiberius configuration a secret describes.
pub(crate) fn config(secret: &ConnectionSecret, query_timeout: Duration) -> Result<Config, SourceError> {
    let host = secret.host.as_deref().ok_or_else(|| {
        SourceError::new(
            SourceErrorKind::Config,
            "the secret has no host; give the server's host name (for Azure SQL, NAME.database.windows.net)",
        )
    })?;
    let mut config = Config::new();
    config.host(host);
    config.port(secret.port.unwrap_or(1433));
    config.database(&secret.database);
    config.application_name("sluice");
    config.readonly(true);
    // A stalled server is a timed-out query; a slow reader (Sluice writing) never is.
    config.command_timeout(Some(query_timeout));
    config.handshake_timeout(Some(CONNECT_TIMEOUT));
    // Azure SQL takes `user@server` as the login name as is.
    config.authentication(AuthMethod::sql_server(
        secret.username.as_deref().unwrap_or_default(),
        secret.password.as_deref().unwrap_or_default(),
    ));
    match secret.tls() {
        TlsMode::VerifyFull => {
            config.encryption(EncryptionLevel::Required);
            config.trust_cert_ca_bundle(crate::tls::extra_roots(secret)?);
        }
        TlsMode::Require => {
            config.encryption(EncryptionLevel::Required);
            config.trust_cert();
        }
        TlsMode::Disable => config.encryption(EncryptionLevel::NotSupported),
    }
    Ok(config)
}

pub(crate) async fn connect(secret: &ConnectionSecret, query_timeout: Duration) -> Result<SqlServer, SourceError> {
    let mut config = config(secret, query_timeout)?;
    let mut client = match login(&config, secret).await {
        // Azure SQL's gateway may send the client on to the node that holds the database.
        Err(tiberius::error::Error::Routing { host, port }) => {
            config.host(&host);
            config.port(port);
            login(&config, secret).await
        }
        other => other,
    }
    .map_err(|e| classify_connect(e, secret))?;
    let savepoint = savepoint_name();
    let setup = format!(
        "SET NOCOUNT ON; SET XACT_ABORT ON; SET ARITHABORT ON; SET LOCK_TIMEOUT {}; \
         SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN TRANSACTION; {}",
        query_timeout.as_millis(),
        transaction_begun(&savepoint)
    );
    let transaction = transaction_state(client.simple_query(setup))
        .await
        .map_err(|e| classify_connect(e, secret))?;
    Ok(SqlServer {
        client,
        names: None,
        transaction,
        savepoint,
        unchecked: false,
        procedure: false,
        answered: Arc::new(AtomicBool::new(false)),
    })
}

/// `@@TRANCOUNT` and `XACT_STATE()`, the last row of `answer`.
async fn transaction_state(
    answer: impl std::future::Future<Output = tiberius::Result<tiberius::QueryStream<'_>>>,
) -> tiberius::Result<(Value, Value)> {
    let rows = answer.await?.into_results().await?;
    let row = rows
        .last()
        .and_then(|r| r.last())
        .ok_or_else(|| tiberius::error::Error::Protocol("the server did not say what its transaction is".into()))?;
    let state = row
        .cells()
        .map(|(c, data)| value(c.column_type(), data))
        .collect::<Vec<_>>();
    match <[Value; 2]>::try_from(state) {
        Ok([count, state]) => Ok((count, state)),
        Err(_) => Err(tiberius::error::Error::Protocol(
            "the server did not say what its transaction is".into(),
        )),
    }
}

impl SqlServer {
    /// Sluice's transaction as the setup began it, after a query of Sluice's own (the
    /// describe, the login check, the open-transaction lookup) that the server refused:
    /// under XACT_ABORT any error rolls the transaction back, and without it again the
    /// source's query would run in autocommit, where a write in it would stay.
    async fn begin_again(&mut self) -> Result<(), SourceError> {
        self.client
            .simple_query(transaction_again(&self.savepoint))
            .and_then(|s| s.into_results())
            .await
            .map_err(classify_query)?;
        Ok(())
    }

    /// Checks that the query last sent left Sluice's transaction as it was, after
    /// cancelling it on the server if its reader stopped before the end. A procedure
    /// may COMMIT or ROLLBACK inside; what it wrote then is kept, and the run must not
    /// pass for a read.
    async fn settle(&mut self) -> Result<(), SourceError> {
        if !self.unchecked {
            return Ok(());
        }
        if !self.answered.load(Ordering::Relaxed) {
            self.client.cancel_query().await.map_err(classify_query)?;
            if !self.procedure {
                // A SELECT cannot commit; the cancel itself may have rolled Sluice's
                // transaction back (XACT_ABORT on SQL Server), so it is begun again.
                self.unchecked = false;
                return self.begin_again().await;
            }
        }
        let kept = transaction_kept(&self.savepoint);
        let changed = match transaction_state(self.client.simple_query(kept)).await {
            Ok(now) if now == self.transaction => None,
            Ok((count, state)) => Some(format!(
                "@@TRANCOUNT and XACT_STATE() were {} and {}, now {} and {}",
                self.transaction.0.to_plain_json(),
                self.transaction.1.to_plain_json(),
                count.to_plain_json(),
                state.to_plain_json()
            )),
            Err(tiberius::error::Error::Server(token)) => Some(format!(
                "its savepoint is gone: {} (error {})",
                token.message(),
                token.code()
            )),
            Err(e) => return Err(classify_query(e)),
        };
        if let Some(how) = changed {
            return Err(SourceError::new(
                SourceErrorKind::Query,
                format!("the query changed the session's transaction ({how}){TRANSACTION_ENDED}"),
            ));
        }
        self.unchecked = false;
        Ok(())
    }
}

async fn login(config: &Config, secret: &ConnectionSecret) -> tiberius::Result<Connection> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(config.get_addr()))
        .await
        .map_err(|_| tiberius::error::Error::Io {
            kind: std::io::ErrorKind::TimedOut,
            message: error::timed_out(secret).message,
        })??;
    tcp.set_nodelay(true)?;
    Client::connect(config.clone(), tcp.compat_write()).await
}

/// Login and session errors: the server's number says which fix applies.
fn classify_connect(e: tiberius::error::Error, secret: &ConnectionSecret) -> SourceError {
    use std::io::ErrorKind::{ConnectionRefused, HostUnreachable, NetworkUnreachable, NotFound};
    use tiberius::error::Error;
    let target = error::target(secret);
    match &e {
        Error::Io { kind, .. } if *kind == std::io::ErrorKind::TimedOut => error::timed_out(secret),
        Error::Io {
            kind: ConnectionRefused | HostUnreachable | NetworkUnreachable | NotFound,
            message,
        } => error::unreachable(secret, message),
        Error::Io { message, .. } => SourceError::new(
            SourceErrorKind::Connect,
            format!(
                "sqlserver at {target} closed the connection during login ({message}); check that the port is SQL Server's and that the server accepts Sluice (its TLS setting, firewall)"
            ),
        ),
        Error::Protocol(text) if text.contains("encryption level") => SourceError::new(
            SourceErrorKind::Tls,
            format!(
                "sqlserver at {target} does not offer encryption, and the secret's tls is {}: give the server a certificate and enable encryption, or set tls to disable on a private network",
                error::tls_mode(secret)
            ),
        ),
        Error::Tls(text) => SourceError::new(
            SourceErrorKind::Tls,
            format!("TLS with {target} failed: {text}; {}", error::tls_hint(secret, text)),
        ),
        Error::Server(token) if matches!(token.code(), 18456 | 4060 | 911 | 18452 | 40615 | 40532) => SourceError::new(
            SourceErrorKind::Auth,
            secret.redact(&format!(
                "sqlserver at {target} refused the login: {} (error {}); check username, password and database in the secret (Azure SQL: the username may need @SERVER, and the server's firewall must allow Sluice)",
                token.message(),
                token.code()
            )),
        ),
        other => SourceError::new(
            SourceErrorKind::Connect,
            secret.redact(&format!("connecting to sqlserver at {target} failed: {other}")),
        ),
    }
}

fn classify_query(e: tiberius::error::Error) -> SourceError {
    use tiberius::error::Error;
    match &e {
        Error::Io { kind, .. } if *kind == std::io::ErrorKind::TimedOut => SourceError::new(
            SourceErrorKind::Timeout,
            "the server sent nothing for query_timeout_seconds; add an index on the date column, narrow the window (max_window_seconds) or raise query_timeout_seconds",
        ),
        Error::Io { message, .. } => SourceError::new(
            SourceErrorKind::Connect,
            format!("the connection was lost while reading rows: {message}"),
        ),
        Error::Server(token) => {
            let hint = match token.code() {
                1222 => {
                    "; a lock held longer than query_timeout_seconds: the rows are being written; the next run reads them"
                }
                3906 | 3908 | 229 | 230 => "; Sluice reads only: the query (or the procedure it runs) must not write",
                // The transaction count moved across a procedure or sp_executesql.
                266 => TRANSACTION_ENDED,
                _ => "",
            };
            let kind = if token.code() == 1222 {
                SourceErrorKind::Timeout
            } else {
                SourceErrorKind::Query
            };
            SourceError::new(
                kind,
                format!("the query failed: {} (error {}){hint}", token.message(), token.code()),
            )
        }
        other => SourceError::new(SourceErrorKind::Query, format!("the query failed: {other}")),
    }
}

/// The longest rendered query the guard reads: the template's own limit, in bytes.
const MAX_QUERY_BYTES: usize = 4 * sluice_core::source::MAX_QUERY_CHARS;
/// The most tokens a query may hold. The parser builds an operator chain (`1+1+...`)
/// without recursion, but the tree it makes is as deep as the chain, and dropping or
/// walking that tree recurses: this bound keeps it within a worker thread's stack.
const MAX_TOKENS: usize = 20_000;
/// How deeply the parser may nest (subqueries, parentheses); sqlparser's default.
const MAX_DEPTH: usize = 50;

/// T-SQL's reserved words that begin a statement other than a SELECT. None can be an
/// unquoted name in a query, so one found outside a string, a comment or brackets
/// means a second statement, whatever the parser made of it.
const STATEMENT_WORDS: &[&str] = &[
    "ALTER",
    "BACKUP",
    "BEGIN",
    "BREAK",
    "BULK",
    "CHECKPOINT",
    "CLOSE",
    "COMMIT",
    "CONTINUE",
    "CREATE",
    "DBCC",
    "DEALLOCATE",
    "DECLARE",
    "DELETE",
    "DENY",
    "DROP",
    "EXEC",
    "EXECUTE",
    "GOTO",
    "GRANT",
    "IF",
    "INSERT",
    "KILL",
    "MERGE",
    "OPEN",
    "PRINT",
    "RAISERROR",
    "READTEXT",
    "RECONFIGURE",
    "RESTORE",
    "RETURN",
    "REVERT",
    "REVOKE",
    "ROLLBACK",
    "SAVE",
    "SET",
    "SETUSER",
    "SHUTDOWN",
    "TRAN",
    "TRANSACTION",
    "TRUNCATE",
    "UPDATE",
    "UPDATETEXT",
    "USE",
    "WAITFOR",
    "WHILE",
    "WRITETEXT",
];

/// Table hints that take locks, or hold them to the end of the transaction: Sluice's
/// transaction lasts as long as its session, so they would block the database's writers.
const LOCKING_HINTS: &[&str] = &[
    "HOLDLOCK",
    "PAGLOCK",
    "REPEATABLEREAD",
    "ROWLOCK",
    "SERIALIZABLE",
    "TABLOCK",
    "TABLOCKX",
    "UPDLOCK",
    "XLOCK",
];

/// Rowset functions that send their text to another server, where it may write.
const REMOTE_ROWSETS: &[&str] = &["OPENDATASOURCE", "OPENQUERY", "OPENROWSET"];

/// A refusal of the query before it is sent: what it holds, and what to do.
fn refused(found: impl std::fmt::Display, fix: &str) -> SourceError {
    SourceError::new(
        SourceErrorKind::Query,
        format!(
            "the query was refused before it ran: it {found}; a source's query is one SELECT or one EXEC of a procedure (Sluice reads only), so {fix}"
        ),
    )
}

/// Refuses, before anything is sent, every query but one SELECT (`WITH`, `UNION` and
/// the like included) or one EXEC of a named procedure: no second statement, no
/// transaction control, no SET, no SELECT ... INTO, no write inside a CTE, no locking
/// hint. The text is read by a real T-SQL parser; what it cannot read is refused.
fn check_query(sql: &str) -> Result<bool, SourceError> {
    use sqlparser::ast::Visit;
    use sqlparser::tokenizer::{Token, Tokenizer};
    if sql.len() > MAX_QUERY_BYTES {
        return Err(refused(
            format_args!("is longer than {MAX_QUERY_BYTES} bytes"),
            "shorten it",
        ));
    }
    let dialect = sqlparser::dialect::MsSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| refused(format_args!("cannot be read as T-SQL ({e})"), "correct its syntax"))?;
    if tokens.len() > MAX_TOKENS {
        return Err(refused(
            format_args!("holds more than {MAX_TOKENS} tokens"),
            "shorten it",
        ));
    }
    let words = tokens.iter().filter_map(|t| match &t.token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.as_str()),
        _ => None,
    });
    for (i, word) in words.enumerate() {
        if !word.is_ascii() {
            // A look-alike letter in a name could hide a keyword from one reader only.
            return Err(refused(
                format_args!("holds the unquoted name {word:?}, which has a character outside ASCII"),
                "write that name in brackets, [name]",
            ));
        }
        let upper = word.to_ascii_uppercase();
        let call = i == 0 && (upper == "EXEC" || upper == "EXECUTE");
        if STATEMENT_WORDS.contains(&upper.as_str()) && !call {
            return Err(refused(
                format_args!("holds {upper}, which begins a statement of its own"),
                &format!(
                    "remove the {upper} statement (Sluice reads in a transaction of its own, which it never commits)"
                ),
            ));
        }
    }
    let mut parser = sqlparser::parser::Parser::new(&dialect)
        .with_recursion_limit(MAX_DEPTH)
        .with_tokens_with_locations(tokens);
    let unreadable = |e: sqlparser::parser::ParserError| {
        refused(format_args!("cannot be read as T-SQL ({e})"), "correct its syntax")
    };
    let statement = parser.parse_statement().map_err(unreadable)?;
    while parser.consume_token(&Token::SemiColon) {}
    if parser.peek_token().token != Token::EOF {
        return Err(refused(
            "holds more than one statement",
            "remove every statement but the SELECT or the EXEC",
        ));
    }
    let procedure = match &statement {
        sqlparser::ast::Statement::Query(_) => false,
        sqlparser::ast::Statement::Execute {
            name: Some(name),
            immediate: false,
            into,
            using,
            ..
        } if into.is_empty() && using.is_empty() => {
            check_procedure(name)?;
            true
        }
        other => {
            let kind = other.to_string();
            let kind = kind.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
            return Err(refused(format_args!("is a {kind} statement"), "write it as a SELECT"));
        }
    };
    match statement.visit(&mut ReadOnly { statements: 0 }) {
        std::ops::ControlFlow::Break(refusal) => Err(refusal),
        std::ops::ControlFlow::Continue(()) => Ok(procedure),
    }
}

/// A procedure named by one to three plain ASCII names (`proc`, `schema.proc`,
/// `db.schema.proc`), and not a system procedure: `sp_executesql` and its kind run any
/// text they are given, and a four-part name runs on a linked server.
fn check_procedure(name: &sqlparser::ast::ObjectName) -> Result<(), SourceError> {
    let parts: Vec<_> = name.0.iter().map(|p| p.as_ident().map(|i| i.value.as_str())).collect();
    let plain = |p: &Option<&str>| {
        p.is_some_and(|p| {
            p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    if !(1..=3).contains(&parts.len()) || !parts.iter().all(plain) {
        return Err(refused(
            format_args!("executes {name}, which is not a procedure's plain name"),
            "EXEC a procedure by its name or schema.name, made of ASCII letters, digits and _",
        ));
    }
    let last = parts.last().copied().flatten().unwrap_or_default().to_ascii_lowercase();
    if last.starts_with("sp_") || last.starts_with("xp_") {
        return Err(refused(
            format_args!("executes the system procedure {name}, which can run any statement"),
            "EXEC a procedure of your own that returns the rows",
        ));
    }
    Ok(())
}

/// Walks a parsed query for what writes or locks inside it.
struct ReadOnly {
    statements: usize,
}

impl sqlparser::ast::Visitor for ReadOnly {
    type Break = SourceError;

    fn pre_visit_statement(&mut self, statement: &sqlparser::ast::Statement) -> std::ops::ControlFlow<SourceError> {
        self.statements += 1;
        if self.statements == 1 {
            return std::ops::ControlFlow::Continue(());
        }
        // A statement inside the query: an INSERT, UPDATE, DELETE or MERGE in a CTE.
        let text = statement.to_string();
        let kind = text.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
        std::ops::ControlFlow::Break(refused(
            format_args!("holds a {kind} inside the query"),
            "read the rows with SELECTs only",
        ))
    }

    fn pre_visit_select(&mut self, select: &sqlparser::ast::Select) -> std::ops::ControlFlow<SourceError> {
        match &select.into {
            Some(_) => std::ops::ControlFlow::Break(refused(
                format_args!("holds SELECT ... INTO, which creates a table"),
                "select the rows without INTO",
            )),
            None => std::ops::ControlFlow::Continue(()),
        }
    }

    fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> std::ops::ControlFlow<SourceError> {
        match query.locks.first() {
            Some(lock) => {
                std::ops::ControlFlow::Break(refused(format_args!("holds {lock}, which locks rows"), "remove it"))
            }
            None => std::ops::ControlFlow::Continue(()),
        }
    }

    fn pre_visit_table_factor(&mut self, factor: &sqlparser::ast::TableFactor) -> std::ops::ControlFlow<SourceError> {
        use sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, TableFactor};
        let TableFactor::Table {
            name, args, with_hints, ..
        } = factor
        else {
            return std::ops::ControlFlow::Continue(());
        };
        let function = name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_ascii_uppercase());
        if args.is_some() && function.as_deref().is_some_and(|f| REMOTE_ROWSETS.contains(&f)) {
            return std::ops::ControlFlow::Break(refused(
                format_args!("reads through {name}, which runs its text on another server"),
                "read a table, view or function of this database",
            ));
        }
        // `t WITH (UPDLOCK)`, and the older `t (UPDLOCK)`, which parses as arguments.
        let bare = args.iter().flat_map(|a| &a.args).filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        });
        for hint in with_hints.iter().chain(bare) {
            let word = match hint {
                Expr::Identifier(i) => i.value.to_ascii_uppercase(),
                _ => continue,
            };
            if LOCKING_HINTS.contains(&word.as_str()) {
                return std::ops::ControlFlow::Break(refused(
                    format_args!("asks for the table hint {word} on {name}"),
                    "remove the hint: Sluice's transaction lasts as long as its session, and the locks with it",
                ));
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

fn query(rendered: &RenderedQuery) -> tiberius::Query<'_> {
    let mut query = tiberius::Query::new(rendered.sql.as_str());
    for bind in &rendered.binds {
        match *bind {
            // datetime2: compared with a datetime or datetime2 column, an index still seeks.
            Bind::Timestamp(t) => query.bind(t.naive_utc()),
            Bind::UnixSeconds(s) => query.bind(s),
        }
    }
    query
}

/// The parameter declarations of `binds`, for `sp_describe_first_result_set`.
fn parameter_declarations(binds: &[Bind]) -> String {
    let types = binds.iter().enumerate().map(|(i, b)| match b {
        Bind::Timestamp(_) => format!("@P{} datetime2", i + 1),
        Bind::UnixSeconds(_) => format!("@P{} bigint", i + 1),
    });
    types.collect::<Vec<_>>().join(", ")
}

#[async_trait]
impl SourceSession for SqlServer {
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError> {
        let row = self
            .client
            .simple_query("SELECT SYSUTCDATETIME()")
            .and_then(|s| s.into_row())
            .await
            .map_err(classify_query)?;
        let now = row.and_then(|r| r.try_get::<NaiveDateTime, _>(0).transpose());
        match now {
            Some(Ok(now)) => Ok(now.and_utc()),
            Some(Err(e)) => Err(classify_query(e)),
            None => Err(SourceError::new(
                SourceErrorKind::Query,
                "SYSUTCDATETIME() returned no row",
            )),
        }
    }

    async fn open_transactions(&mut self) -> Result<sluice_core::OpenTransactions, SourceError> {
        let seen = crate::open_transactions::sqlserver(&mut self.client).await;
        self.begin_again().await?;
        seen
    }

    /// From `sp_describe_first_result_set`; empty when the server cannot tell before
    /// running (a procedure that builds its result in a temporary table, say).
    async fn columns(&mut self, rendered: &RenderedQuery) -> Result<Vec<String>, SourceError> {
        check_query(&rendered.sql)?;
        self.settle().await?;
        let mut describe = tiberius::Query::new("EXEC sp_describe_first_result_set @tsql = @P1, @params = @P2");
        describe.bind(rendered.sql.as_str());
        describe.bind(parameter_declarations(&rendered.binds));
        let rows = match describe
            .query(&mut self.client)
            .and_then(|s| s.into_first_result())
            .await
        {
            Ok(rows) => rows,
            Err(tiberius::error::Error::Server(_)) => {
                // Babelfish refuses to describe a query with parameters; nothing of the
                // query ran.
                self.begin_again().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(classify_query(e)),
        };
        Ok(rows
            .iter()
            .filter(|r| !r.get::<bool, _>("is_hidden").unwrap_or(false))
            .filter_map(|r| r.get::<&str, _>("name").map(str::to_string))
            .collect())
    }

    fn stream<'a>(&'a mut self, rendered: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>> {
        let answered = self.answered.clone();
        let start = async move {
            let procedure = check_query(&rendered.sql)?;
            self.settle().await?;
            self.unchecked = true;
            self.procedure = procedure;
            self.answered.store(false, Ordering::Relaxed);
            let SqlServer { client, names, .. } = self;
            // Result indexes restart with each query: names kept from the last one (the
            // login check's, say) are not this one's.
            *names = None;
            let rows = query(rendered).query(client).await.map_err(classify_query)?;
            Ok::<_, SourceError>((rows, names))
        };
        stream::once(start)
            .map_ok(move |(rows, names)| result_rows(rows, names, answered.clone()))
            .try_flatten()
            .boxed()
    }

    async fn finish(&mut self) -> Result<(), SourceError> {
        self.settle().await
    }

    async fn login_check(&mut self) -> sluice_core::LoginCheck {
        let check = crate::login_check::sqlserver(self).await;
        if let Err(e) = self.begin_again().await {
            return sluice_core::LoginCheck::could_not_check(e.message);
        }
        check
    }
}

/// The rows of an answer, each result set with its own column names. `answered` is set
/// once the answer is read to its end.
fn result_rows<'a>(
    rows: tiberius::QueryStream<'a>,
    names: &'a mut Option<(usize, Arc<[String]>)>,
    answered: Arc<AtomicBool>,
) -> BoxStream<'a, Result<Row, SourceError>> {
    // A statement that returns no result set at all (an EXEC of a procedure that
    // writes) wrote, or tried to: its work is rolled back, and the run must not pass
    // for an empty read.
    let read_a_result = Arc::new(AtomicBool::new(false));
    let at_end = read_a_result.clone();
    let no_result = stream::once(future::lazy(move |_| {
        answered.store(true, Ordering::Relaxed);
        (!at_end.load(Ordering::Relaxed)).then(|| {
            Err(SourceError::new(
                SourceErrorKind::Query,
                "the query returned no result set, so it is not a SELECT (what it wrote was rolled back); Sluice reads only: the template must be a SELECT, or an EXEC of a procedure that returns rows",
            ))
        })
    }))
    .filter_map(future::ready);
    rows.filter_map(move |item| {
        future::ready(match item {
            Ok(QueryItem::Metadata(_)) => {
                read_a_result.store(true, Ordering::Relaxed);
                None
            }
            Ok(QueryItem::Row(row)) => Some(Ok(row)),
            Err(e) => Some(Err(e)),
        })
    })
    .map(move |row| {
        let row = row.map_err(classify_query)?;
        // A procedure may return several result sets; each has its own columns.
        let index = row.result_index();
        let columns = match names {
            Some((i, names)) if *i == index => names.clone(),
            _ => {
                let fresh: Arc<[String]> = row.columns().iter().map(|c| c.name().to_string()).collect();
                *names = Some((index, fresh.clone()));
                fresh
            }
        };
        let values = row
            .cells()
            .map(|(column, data)| value(column.column_type(), data))
            .collect();
        Ok(Row { columns, values })
    })
    .chain(no_result)
    .boxed()
}

/// A TDS value as a typed [`Value`]. `money` arrives from the driver as a float of
/// ten-thousandths and is turned back into its exact four-decimal text.
pub(crate) fn value(column_type: ColumnType, data: &ColumnData<'static>) -> Value {
    fn convert<'a, T: FromSql<'a>>(data: &'a ColumnData<'static>, f: impl FnOnce(T) -> Value) -> Value {
        match T::from_sql(data) {
            Ok(Some(v)) => f(v),
            Ok(None) => Value::Null,
            Err(e) => Value::Unsupported(format!("{data:?} ({e})")),
        }
    }
    match data {
        ColumnData::U8(v) => v.map_or(Value::Null, |v| Value::Int(v.into())),
        ColumnData::I16(v) => v.map_or(Value::Null, |v| Value::Int(v.into())),
        ColumnData::I32(v) => v.map_or(Value::Null, |v| Value::Int(v.into())),
        ColumnData::I64(v) => v.map_or(Value::Null, Value::Int),
        ColumnData::F32(v) => v.map_or(Value::Null, |v| Value::Float(v.into())),
        ColumnData::F64(Some(v)) if matches!(column_type, ColumnType::Money | ColumnType::Money4) => {
            Value::decimal(format!("{v:.4}"))
        }
        ColumnData::F64(v) => v.map_or(Value::Null, Value::Float),
        ColumnData::Bit(v) => v.map_or(Value::Null, Value::Bool),
        ColumnData::String(v) => v.as_ref().map_or(Value::Null, |s| Value::Text(s.to_string())),
        ColumnData::Guid(v) => v.map_or(Value::Null, Value::Uuid),
        ColumnData::Binary(v) => v.as_ref().map_or(Value::Null, |b| Value::Bytes(b.to_vec())),
        ColumnData::Numeric(v) => v.map_or(Value::Null, |n| {
            Value::decimal(decimal_text(n.value(), n.scale().into()))
        }),
        ColumnData::Xml(v) => v.as_ref().map_or(Value::Null, |x| Value::Text(x.to_string())),
        // `datetime` counts 1/300 s; SQL Server shows (and compares) it to the
        // millisecond, .003 not .003333333.
        ColumnData::DateTime(_) => convert(data, |v: NaiveDateTime| Value::Timestamp(v.and_utc().round_subsecs(3))),
        ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            convert(data, |v: NaiveDateTime| Value::Timestamp(v.and_utc()))
        }
        ColumnData::Date(_) => convert(data, |v: NaiveDate| Value::Date(v)),
        ColumnData::Time(_) => convert(data, |v: NaiveTime| Value::Time(v)),
        ColumnData::DateTimeOffset(_) => convert(data, |v: DateTime<FixedOffset>| Value::Timestamp(v.to_utc())),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use tiberius::numeric::Numeric;
    use tiberius::time::{Date, DateTime2, DateTimeOffset, SmallDateTime, Time};

    fn timestamp(s: &str) -> Value {
        Value::Timestamp(DateTime::parse_from_rfc3339(s).unwrap().to_utc())
    }

    #[test]
    fn every_listed_type_becomes_a_typed_value() {
        // 2024-03-01 is day 738,945 since 0001-01-01 and day 45,350 since 1900-01-01.
        let date = Date::new(738_945);
        let noon = Time::new(12 * 3600 * 10_000_000 + 1_234_567, 7); // 12:00:00.1234567
        let cases: Vec<(ColumnType, ColumnData<'static>, Value)> = vec![
            (
                ColumnType::Datetime,
                ColumnData::DateTime(Some(tiberius::time::DateTime::new(45_350, 300 * 3600))),
                timestamp("2024-03-01T01:00:00Z"),
            ),
            (
                ColumnType::Datetime2,
                ColumnData::DateTime2(Some(DateTime2::new(date, noon))),
                timestamp("2024-03-01T12:00:00.1234567Z"),
            ),
            (
                ColumnType::Datetime4,
                ColumnData::SmallDateTime(Some(SmallDateTime::new(45_350, 90))),
                timestamp("2024-03-01T01:30:00Z"),
            ),
            (
                ColumnType::DatetimeOffsetn,
                // Wall clock 12:00 at +02:00 is 10:00 UTC; TDS carries the UTC time.
                ColumnData::DateTimeOffset(Some(DateTimeOffset::new(
                    DateTime2::new(date, Time::new(10 * 3600, 0)),
                    120,
                ))),
                timestamp("2024-03-01T10:00:00Z"),
            ),
            (
                ColumnType::Daten,
                ColumnData::Date(Some(date)),
                Value::Date(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()),
            ),
            (
                ColumnType::Timen,
                ColumnData::Time(Some(Time::new(9 * 3600 + 30 * 60, 0))),
                Value::Time(NaiveTime::from_hms_opt(9, 30, 0).unwrap()),
            ),
            (
                ColumnType::Money,
                ColumnData::F64(Some(123_456_789.012_3)),
                Value::Decimal("123456789.0123".into()),
            ),
            (
                ColumnType::Money4,
                ColumnData::F64(Some(-12.5)),
                Value::Decimal("-12.5".into()),
            ),
            (
                ColumnType::Decimaln,
                ColumnData::Numeric(Some(Numeric::new_with_scale(-1_234_567_890_123_456_789_012_345, 6))),
                Value::Decimal("-1234567890123456789.012345".into()),
            ),
            (
                ColumnType::Numericn,
                ColumnData::Numeric(Some(Numeric::new_with_scale(5, 3))),
                Value::Decimal("0.005".into()),
            ),
            (
                ColumnType::Guid,
                ColumnData::Guid(Some(uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef))),
                Value::Uuid(uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
            ),
            (
                ColumnType::NVarchar,
                ColumnData::String(Some(Cow::Owned("Zoë ✓ ".repeat(2000)))),
                Value::Text("Zoë ✓ ".repeat(2000)),
            ),
            (
                ColumnType::BigVarBin,
                ColumnData::Binary(Some(Cow::Owned(vec![0, 1, 254, 255]))),
                Value::Bytes(vec![0, 1, 254, 255]),
            ),
            (ColumnType::Intn, ColumnData::I64(Some(-9)), Value::Int(-9)),
            (ColumnType::Int1, ColumnData::U8(Some(200)), Value::Int(200)),
            (ColumnType::Bitn, ColumnData::Bit(Some(true)), Value::Bool(true)),
            (ColumnType::Floatn, ColumnData::F64(Some(0.25)), Value::Float(0.25)),
            (ColumnType::Datetime2, ColumnData::DateTime2(None), Value::Null),
            (ColumnType::Money, ColumnData::F64(None), Value::Null),
            (ColumnType::NVarchar, ColumnData::String(None), Value::Null),
        ];
        for (column_type, data, expected) in cases {
            assert_eq!(value(column_type, &data), expected, "{column_type:?} {data:?}");
        }
    }

    #[test]
    fn one_select_or_one_exec_passes_the_guard() {
        for sql in [
            "SELECT id, amount FROM dbo.sales WHERE updated_at >= @P1 AND updated_at < @P2",
            "select [commit], N'ünïcode; COMMIT' AS note FROM [dbo].[sales] s WITH (NOLOCK) -- COMMIT; DELETE",
            "WITH recent AS (SELECT id FROM sales WHERE updated_at >= @P1) SELECT id FROM recent UNION ALL SELECT 0;",
            "/* a /* nested */ comment; DELETE */ SELECT 'it''s; BEGIN TRAN' AS x FROM t (NOLOCK)",
            "SELECT TOP (10) id FROM sales ORDER BY id OFFSET 0 ROWS FETCH NEXT 5 ROWS ONLY",
            "EXEC dbo.sales_between @from = @P1, @to = @P2",
            "EXECUTE sales_between @P1, @P2",
            "exec reporting.dbo.sales_between @P1",
        ] {
            let procedure = sql.to_ascii_uppercase().starts_with("EXEC");
            assert_eq!(check_query(sql), Ok(procedure), "{sql}");
        }
    }

    #[test]
    fn writes_transaction_control_and_second_statements_are_refused_with_the_cause() {
        let mut wrong = Vec::new();
        for (sql, cause) in [
            (
                "COMMIT; DELETE FROM dbo.victim; BEGIN TRAN; SELECT 1 AS x",
                "holds COMMIT",
            ),
            ("SELECT 1 AS x COMMIT", "holds COMMIT"),
            ("SET IMPLICIT_TRANSACTIONS OFF; SELECT 1", "holds SET"),
            ("SAVE TRAN s; SELECT 1", "holds SAVE"),
            ("ROLLBACK", "holds ROLLBACK"),
            ("SELECT 1; SELECT 2", "more than one statement"),
            ("SELECT 1 AS a SELECT 2", "more than one statement"),
            ("SELECT 1 END", "more than one statement"),
            ("SELECT * INTO copy FROM victim", "SELECT ... INTO"),
            ("SELECT * FROM victim WITH (UPDLOCK)", "table hint UPDLOCK"),
            ("SELECT * FROM victim WITH (NOLOCK, TABLOCKX)", "table hint TABLOCKX"),
            ("SELECT * FROM victim (HOLDLOCK)", "table hint HOLDLOCK"),
            (
                "SELECT * FROM victim v JOIN t WITH (xlock) ON 1 = 1",
                "table hint XLOCK",
            ),
            ("WITH d AS (DELETE FROM victim) SELECT 1", "holds DELETE"),
            ("SELECT * FROM OPENQUERY(srv, 'SELECT 1')", "OPENQUERY"),
            ("EXEC sp_executesql N'DELETE FROM victim'", "system procedure"),
            ("EXEC sys.sp_executesql N'SELECT 1'", "system procedure"),
            ("EXEC ('DELETE FROM victim')", "is a EXECUTE statement"),
            ("EXEC @proc", "not a procedure's plain name"),
            ("EXEC srv.db.dbo.p", "not a procedure's plain name"),
            ("EXEC [dbo].[p;x]", "not a procedure's plain name"),
            ("SELECT 1 GO DELETE FROM victim", "holds DELETE"),
            ("/* /* */ SELECT 1 */ DELETE FROM victim", "holds DELETE"),
            ("SELECT 1 AS x\u{2028}COMMIT", "holds COMMIT"),
            ("SELECT 1 AS x /* unclosed", "cannot be read as T-SQL"),
            ("SELECT 'unclosed", "cannot be read as T-SQL"),
            ("SELECT 1 AS ｘ; ＤＥＬＥＴＥ FROM victim", "outside ASCII"),
            ("DECLARE @x int", "holds DECLARE"),
            ("TRUNCATE TABLE victim", "holds TRUNCATE"),
            ("SHOW TABLES", "is a SHOW statement"),
            ("", "cannot be read as T-SQL"),
        ] {
            match check_query(sql) {
                Err(e)
                    if e.kind == SourceErrorKind::Query
                        && e.message.contains(cause)
                        && e.message
                            .contains("a source's query is one SELECT or one EXEC of a procedure") => {}
                other => wrong.push(format!("{sql}: {other:?}")),
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn huge_or_deeply_nested_queries_are_refused_without_a_panic() {
        let nested = format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000));
        let chain = format!("SELECT 1{}", "+1".repeat(9_000));
        let long = format!("SELECT '{}'", "x".repeat(MAX_QUERY_BYTES));
        let subqueries = format!("SELECT {}1{}", "(SELECT ".repeat(200), ")".repeat(200));
        // A worker thread's stack, as the functions run on.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                for (sql, cause) in [
                    (nested, "cannot be read as T-SQL"),
                    (subqueries, "cannot be read as T-SQL"),
                    (long, "longer than"),
                ] {
                    let e = check_query(&sql).unwrap_err();
                    assert!(e.message.contains(cause), "{e}");
                }
                assert_eq!(check_query(&chain), Ok(false), "a long sum is a query");
                let e = check_query(&format!("SELECT 1{}", "+1".repeat(MAX_TOKENS))).unwrap_err();
                assert!(e.message.contains("tokens"), "{e}");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn procedures_get_their_parameter_declarations() {
        let t = chrono::Utc::now();
        assert_eq!(
            parameter_declarations(&[Bind::Timestamp(t), Bind::Timestamp(t), Bind::UnixSeconds(0)]),
            "@P1 datetime2, @P2 datetime2, @P3 bigint"
        );
    }
}
