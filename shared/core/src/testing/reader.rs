//! A source database the test scripts: its clock, its rows, how fast it answers, and
//! where it fails. A query selects the rows whose instant is in the window its binds
//! give (`[last_update_time, upper_date_limit)`), as the templates of the tests do.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::ports::{Clock, LoginCheck, OpenTransactions, SourceError, SourceReader, SourceSession};
use crate::source::ConnectionSecret;
use crate::template::{Bind, RenderedQuery};
use crate::value::{Row, Value};
use crate::window::Window;

#[derive(Debug, Default)]
struct Script {
    columns: Vec<String>,
    /// Each row with the instant the window selects it by.
    rows: Vec<(DateTime<Utc>, Vec<Value>)>,
    /// The columns are only known from the first row (a stored procedure).
    undescribed: bool,
    /// How long each row takes to arrive.
    row_delay: Duration,
    /// Opening a session fails with this.
    refuse: Option<SourceError>,
    /// A stream fails with this after so many rows.
    break_after: Option<(usize, SourceError)>,
    /// A query whose window holds this instant fails with this error.
    poisoned: Option<(DateTime<Utc>, SourceError)>,
    /// The windows queried, in order.
    queried: Vec<Window>,
    /// What the database shows of other sessions' transactions; none open by default.
    open_transactions: Option<OpenTransactions>,
    /// What the login check finds; not checked when unset.
    login: Option<LoginCheck>,
    /// How many times the login was checked.
    login_checks: usize,
}

/// The database behind a [`ScriptedReader`]; its clock is the given one.
pub struct ScriptedDatabase {
    clock: Arc<dyn Clock>,
    script: Mutex<Script>,
}

impl ScriptedDatabase {
    pub fn new(clock: Arc<dyn Clock>, columns: &[&str]) -> Arc<Self> {
        Arc::new(ScriptedDatabase {
            clock,
            script: Mutex::new(Script {
                columns: columns.iter().map(|c| c.to_string()).collect(),
                ..Script::default()
            }),
        })
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("not poisoned")
    }

    /// Adds (or, with a key already present in the first column, replaces) a row
    /// selected by `at`.
    pub fn upsert(&self, at: DateTime<Utc>, values: Vec<Value>) {
        let mut script = self.script();
        assert_eq!(values.len(), script.columns.len(), "one value per column");
        match script.rows.iter_mut().find(|(_, v)| v[0] == values[0]) {
            Some(row) => *row = (at, values),
            None => script.rows.push((at, values)),
        }
    }

    pub fn answer_slowly(&self, per_row: Duration) {
        self.script().row_delay = per_row;
    }

    pub fn hide_columns(&self) {
        self.script().undescribed = true;
    }

    pub fn refuse(&self, error: Option<SourceError>) {
        self.script().refuse = error;
    }

    pub fn break_after(&self, rows: usize, error: SourceError) {
        self.script().break_after = Some((rows, error));
    }

    /// Makes every query whose window holds `at` fail with `error`.
    pub fn poison(&self, at: DateTime<Utc>, error: SourceError) {
        self.script().poisoned = Some((at, error));
    }

    /// What sessions see of the transactions other sessions hold open.
    pub fn show_transactions(&self, open: OpenTransactions) {
        self.script().open_transactions = Some(open);
    }

    pub fn heal(&self) {
        let mut script = self.script();
        script.refuse = None;
        script.break_after = None;
        script.poisoned = None;
    }

    /// Makes the login check find `check`.
    pub fn login_is(&self, check: LoginCheck) {
        self.script().login = Some(check);
    }

    /// How many times the login was checked.
    pub fn login_checks(&self) -> usize {
        self.script().login_checks
    }

    /// The windows queried so far, and forgets them.
    pub fn queried(&self) -> Vec<Window> {
        std::mem::take(&mut self.script().queried)
    }
}

/// Opens sessions on a [`ScriptedDatabase`], whatever the secret says.
pub struct ScriptedReader(pub Arc<ScriptedDatabase>);

#[async_trait]
impl SourceReader for ScriptedReader {
    fn check(&self, _secret: &ConnectionSecret) -> Result<(), SourceError> {
        Ok(())
    }

    async fn open(
        &self,
        _secret: &ConnectionSecret,
        _query_timeout: Duration,
    ) -> Result<Box<dyn SourceSession>, SourceError> {
        if let Some(e) = self.0.script().refuse.clone() {
            return Err(e);
        }
        Ok(Box::new(ScriptedSession(self.0.clone())))
    }
}

struct ScriptedSession(Arc<ScriptedDatabase>);

/// The window a query's binds give: the first timestamp, and the second if any.
fn window_of(query: &RenderedQuery) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    let mut times = query.binds.iter().filter_map(|b| match b {
        Bind::Timestamp(t) => Some(*t),
        Bind::UnixSeconds(_) => None,
    });
    let from = times.next().unwrap_or(DateTime::UNIX_EPOCH);
    (from, times.next())
}

#[async_trait]
impl SourceSession for ScriptedSession {
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError> {
        Ok(self.0.clock.now())
    }

    async fn open_transactions(&mut self) -> Result<OpenTransactions, SourceError> {
        Ok(self
            .0
            .script()
            .open_transactions
            .clone()
            .unwrap_or(OpenTransactions::Seen(None)))
    }

    async fn login_check(&mut self) -> LoginCheck {
        let mut script = self.0.script();
        script.login_checks += 1;
        script.login.clone().unwrap_or(LoginCheck::NotChecked {
            reason: "a scripted database".into(),
        })
    }

    async fn columns(&mut self, _query: &RenderedQuery) -> Result<Vec<String>, SourceError> {
        let script = self.0.script();
        Ok(match script.undescribed {
            true => Vec::new(),
            false => script.columns.clone(),
        })
    }

    fn stream<'a>(&'a mut self, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>> {
        let (from, to) = window_of(query);
        let mut script = self.0.script();
        script.queried.push(Window {
            from,
            to: to.unwrap_or(DateTime::<Utc>::MAX_UTC),
        });
        let columns: Arc<[String]> = script.columns.clone().into();
        let mut rows: Vec<_> = script
            .rows
            .iter()
            .filter(|(at, _)| *at >= from && to.is_none_or(|to| *at < to))
            .cloned()
            .collect();
        rows.sort_by_key(|(at, _)| *at);
        let mut results: Vec<Result<Row, SourceError>> = rows
            .into_iter()
            .map(|(_, values)| {
                Ok(Row {
                    columns: columns.clone(),
                    values,
                })
            })
            .collect();
        if let Some((n, e)) = &script.break_after
            && *n <= results.len()
        {
            results.truncate(*n);
            results.push(Err(e.clone()));
        }
        if let Some((at, e)) = &script.poisoned
            && *at >= from
            && to.is_none_or(|to| *at < to)
        {
            results = vec![Err(e.clone())];
        }
        let delay = script.row_delay;
        drop(script);
        futures::stream::iter(results)
            .then(move |row| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                row
            })
            .boxed()
    }
}
