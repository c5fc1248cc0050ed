//! What the engines sqlx drives (PostgreSQL, MySQL/MariaDB, SQLite) share: one
//! session type over a dialect that binds, reads the clock and converts values.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sluice_core::{Bind, LoginCheck, OpenTransactions, RenderedQuery, Row, SourceError, SourceSession, Value};
use sqlx::{Column, Database, Executor, IntoArguments};

use crate::error;

/// How an engine binds window values, reads its clock and converts result values.
pub(crate) trait Dialect: Send + 'static {
    type Db: Database;
    /// A one-row, one-column query of the database's clock, in UTC.
    const NOW: &'static str;
    fn now(row: &<Self::Db as Database>::Row) -> Result<DateTime<Utc>, sqlx::Error>;
    /// The oldest transaction other sessions hold open ([`crate::open_transactions`]).
    fn open_transactions(
        conn: &mut <Self::Db as Database>::Connection,
    ) -> BoxFuture<'_, Result<OpenTransactions, SourceError>> {
        let _ = conn;
        Box::pin(async {
            Ok(OpenTransactions::Unseen(
                "this engine does not show other sessions' transactions to Sluice".into(),
            ))
        })
    }
    fn bind<'q>(
        query: sqlx::query::Query<'q, Self::Db, <Self::Db as Database>::Arguments>,
        bind: Bind,
    ) -> sqlx::query::Query<'q, Self::Db, <Self::Db as Database>::Arguments>;
    /// The type [`Dialect::bind`] sends `bind` as. Describing a query declares them, so
    /// the statement the driver caches expects what the run binds (left to infer,
    /// PostgreSQL would take `extract(epoch ...) >= $3` as numeric).
    fn bind_type(bind: Bind) -> <Self::Db as Database>::TypeInfo;
    /// What a column's values need to be decoded, worked out once per result set.
    type Column: Send + 'static;
    fn column(column: &<Self::Db as Database>::Column) -> Self::Column;
    fn value(row: &<Self::Db as Database>::Row, index: usize, column: &Self::Column) -> Value;
    /// What the session's login may do beyond reading: the engine's function of
    /// [`crate::login_check`].
    fn login_check(session: &mut Session<Self>) -> BoxFuture<'_, LoginCheck>
    where
        Self: Sized;
}

/// One read-only connection of the engine `D`.
pub(crate) struct Session<D: Dialect> {
    pub(crate) conn: <D::Db as Database>::Connection,
}

#[async_trait]
impl<D: Dialect> SourceSession for Session<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
{
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError> {
        let row = sqlx::query(D::NOW)
            .fetch_one(&mut self.conn)
            .await
            .map_err(error::classify_query)?;
        D::now(&row).map_err(error::classify_query)
    }

    async fn open_transactions(&mut self) -> Result<OpenTransactions, SourceError> {
        D::open_transactions(&mut self.conn).await
    }

    async fn columns(&mut self, query: &RenderedQuery) -> Result<Vec<String>, SourceError> {
        let types: Vec<_> = query.binds.iter().map(|b| D::bind_type(*b)).collect();
        describe_columns(&mut self.conn, &query.sql, &types).await
    }

    fn stream<'a>(&'a mut self, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>> {
        stream_rows::<D, _>(&mut self.conn, query)
    }

    async fn login_check(&mut self) -> LoginCheck {
        D::login_check(self).await
    }
}

/// A result set's column names, shared by its rows, and how to decode each column.
type ResultPlan<D> = (Arc<[String]>, Vec<<D as Dialect>::Column>);

/// Streams `query`'s rows from `conn`, converting each with the dialect `D`.
fn stream_rows<'a, D, C>(conn: &'a mut C, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>>
where
    D: Dialect,
    for<'c> &'c mut C: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    C: Send,
{
    let mut q = sqlx::query(sqlx::AssertSqlSafe(query.sql.as_str()));
    for bind in &query.binds {
        q = D::bind(q, *bind);
    }
    let mut plan: Option<ResultPlan<D>> = None;
    q.fetch(conn)
        .map(move |row| {
            let row = row.map_err(error::classify_query)?;
            let (names, columns) = plan.get_or_insert_with(|| {
                let columns = sqlx::Row::columns(&row);
                (
                    columns.iter().map(|c| c.name().to_string()).collect(),
                    columns.iter().map(D::column).collect(),
                )
            });
            let values = columns.iter().enumerate().map(|(i, c)| D::value(&row, i, c)).collect();
            Ok(Row {
                columns: names.clone(),
                values,
            })
        })
        .boxed()
}

/// The columns `sql` returns, from preparing it (the driver caches the statement,
/// so the query that follows reuses it).
async fn describe_columns<DB, C>(conn: &mut C, sql: &str, types: &[DB::TypeInfo]) -> Result<Vec<String>, SourceError>
where
    DB: Database,
    for<'c> &'c mut C: Executor<'c, Database = DB>,
{
    let statement = conn
        .prepare_with(
            sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(sql.to_string())),
            types,
        )
        .await
        .map_err(error::classify_query)?;
    Ok(sqlx::Statement::columns(&statement)
        .iter()
        .map(|c| c.name().to_string())
        .collect())
}

/// A value the driver could not decode: the row is rejected with the type's name.
pub(crate) fn undecodable(type_name: &str, e: impl std::fmt::Display) -> Value {
    Value::Unsupported(format!("{type_name} ({e})"))
}
