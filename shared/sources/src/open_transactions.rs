//! The oldest transaction another session holds open, per engine: the window's upper
//! bound waits at its start so that rows it writes, stamped with times before the
//! bound, are read once it commits (DESIGN §3, docs/decisions.md).
//!
//! Every time is returned in UTC, already less the engine's rounding, and a login
//! that may not see other sessions gets [`OpenTransactions::Unseen`] with the grant
//! that fixes it, never an error: the run then reads up to the clock, as before.

// Each engine uses its own lookup; a build without every engine leaves some unused.
#![cfg_attr(
    not(all(feature = "postgres", feature = "mysql", feature = "sqlserver")),
    allow(dead_code)
)]

use sluice_core::{OpenTransaction, OpenTransactions};

/// Who holds a transaction, in words for a log line: pid, login and application,
/// each cut to printable characters (an application name is anyone's text).
fn holder(kind: &str, id: i64, user: Option<&str>, application: Option<&str>) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect::<String>()
            .trim()
            .to_string()
    };
    let mut who = format!("{kind} {id}");
    let details: Vec<String> = [("user", user), ("application", application)]
        .into_iter()
        .filter_map(|(label, v)| v.map(clean).filter(|v| !v.is_empty()).map(|v| format!("{label} {v}")))
        .collect();
    if !details.is_empty() {
        who.push_str(&format!(" ({})", details.join(", ")));
    }
    who
}

/// A lookup the server refused for a reason of its own (an old version, a view it
/// lacks) leaves the bound at the clock and says why; a lost connection fails the run.
#[cfg(feature = "sql")]
fn refused(e: sqlx::Error) -> Result<OpenTransactions, sluice_core::SourceError> {
    match &e {
        sqlx::Error::Database(db) => Ok(OpenTransactions::Unseen(format!(
            "the server refused the lookup of open transactions ({})",
            db.message()
        ))),
        _ => Err(crate::error::classify_query(e)),
    }
}

/// PostgreSQL: the backends of this database in a transaction (`xact_start`), other
/// than this session. Any client transaction counts, written yet or not: `now()` in
/// it is its start, so a row it writes later is stamped then. Other sessions' times
/// are visible with `pg_read_all_stats` (or as superuser); a replica does not see the
/// primary's transactions at all.
#[cfg(feature = "postgres")]
pub(crate) async fn postgres(conn: &mut sqlx::PgConnection) -> Result<OpenTransactions, sluice_core::SourceError> {
    use chrono::{DateTime, Utc};
    use sqlx::Row;
    const OLDEST: &str = "SELECT pg_is_in_recovery() AS replica,
               pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all,
               t.pid, t.xact_start, t.usename::text AS usename, t.application_name
        FROM (SELECT 1) one
        LEFT JOIN LATERAL (
            SELECT pid, xact_start, usename, application_name FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
              AND (backend_type = 'client backend' OR backend_xid IS NOT NULL)
            ORDER BY xact_start LIMIT 1) t ON true";
    let row = match sqlx::query(OLDEST).fetch_one(conn).await {
        Ok(row) => row,
        Err(e) => return refused(e),
    };
    let get = |e| crate::error::classify_query(e);
    if row.try_get::<bool, _>("replica").map_err(get)? {
        return Ok(OpenTransactions::Unseen(
            "a read replica cannot see the primary's open transactions; the lookback alone covers late commits".into(),
        ));
    }
    if !row.try_get::<bool, _>("sees_all").map_err(get)? {
        return Ok(OpenTransactions::Unseen(
            "the login cannot see other sessions' transactions (GRANT pg_read_all_stats TO the login)".into(),
        ));
    }
    let started_at: Option<DateTime<Utc>> = row.try_get("xact_start").map_err(get)?;
    Ok(OpenTransactions::Seen(started_at.map(|started_at| OpenTransaction {
        started_at,
        session: holder(
            "pid",
            row.try_get::<i32, _>("pid").unwrap_or_default().into(),
            row.try_get::<Option<&str>, _>("usename").ok().flatten(),
            row.try_get::<Option<&str>, _>("application_name").ok().flatten(),
        ),
    })))
}

/// MySQL and MariaDB: InnoDB's transactions (`information_schema.INNODB_TRX`, which
/// needs the PROCESS privilege), other than this connection's and other than
/// read-only ones (Sluice's own among them). Every database of the server counts: a
/// session can write to any of them. InnoDB fills `trx_started` in the server's
/// system time zone, whatever the session's, and to the second: it is converted
/// from `SYSTEM` to UTC and a second is taken off, so that a row stamped by the
/// statement that began the transaction is never before the bound.
#[cfg(feature = "mysql")]
pub(crate) async fn mysql(conn: &mut sqlx::MySqlConnection) -> Result<OpenTransactions, sluice_core::SourceError> {
    use sqlx::Row;
    const OLDEST: &str = "SELECT CAST(t.trx_mysql_thread_id AS SIGNED) AS id,
               CONVERT_TZ(t.trx_started, 'SYSTEM', '+00:00') - INTERVAL 1 SECOND AS started,
               p.USER AS user_name
        FROM information_schema.INNODB_TRX t
        LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
        WHERE t.trx_mysql_thread_id <> CONNECTION_ID()
          AND t.trx_is_read_only = 0 AND t.trx_autocommit_non_locking = 0
        ORDER BY t.trx_started LIMIT 1";
    let row = match sqlx::query(OLDEST).fetch_optional(conn).await {
        Ok(row) => row,
        // ER_SPECIFIC_ACCESS_DENIED_ERROR: the PROCESS privilege is missing.
        Err(sqlx::Error::Database(e))
            if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| e.number() == 1227) =>
        {
            return Ok(OpenTransactions::Unseen(
                "the login cannot see InnoDB's open transactions (GRANT PROCESS ON *.* TO the login)".into(),
            ));
        }
        Err(e) => return refused(e),
    };
    let Some(row) = row else {
        return Ok(OpenTransactions::Seen(None));
    };
    let get = |e| crate::error::classify_query(e);
    let Some(started) = row
        .try_get::<Option<chrono::NaiveDateTime>, _>("started")
        .map_err(get)?
    else {
        return Ok(OpenTransactions::Unseen(
            "the server could not convert its system time zone to UTC for the open transactions' start".into(),
        ));
    };
    Ok(OpenTransactions::Seen(Some(OpenTransaction {
        started_at: started.and_utc(),
        session: holder(
            "connection",
            row.try_get::<i64, _>("id").map_err(get)?,
            row.try_get::<Option<&str>, _>("user_name").ok().flatten(),
            None,
        ),
    })))
}

/// SQL Server and Azure SQL: the first write of each transaction in this database
/// (`sys.dm_tran_database_transactions.database_transaction_begin_time`, the time of
/// its first log record: SQL Server stamps rows with the statement's time, so nothing
/// it writes is older), other than this session's. It needs VIEW SERVER STATE (Azure
/// SQL: VIEW DATABASE STATE). The begin time is the server's local time, rounded to
/// 1/300 s: it is moved to UTC by the server's current offset and a second is taken
/// off. Babelfish has no such view.
#[cfg(feature = "sqlserver")]
pub(crate) async fn sqlserver(
    client: &mut tiberius::Client<tokio_util::compat::Compat<tokio::net::TcpStream>>,
) -> Result<OpenTransactions, sluice_core::SourceError> {
    use futures::TryFutureExt;
    const OLDEST: &str = "SELECT TOP (1) CAST(st.session_id AS bigint) AS session_id,
               DATEADD(second, -1, DATEADD(minute, -DATEPART(TZOFFSET, SYSDATETIMEOFFSET()),
                   CAST(dt.database_transaction_begin_time AS datetime2))) AS started,
               s.login_name, s.program_name
        FROM sys.dm_tran_database_transactions dt
        JOIN sys.dm_tran_session_transactions st ON st.transaction_id = dt.transaction_id
        LEFT JOIN sys.dm_exec_sessions s ON s.session_id = st.session_id
        WHERE dt.database_id = DB_ID() AND dt.database_transaction_begin_time IS NOT NULL
          AND st.session_id <> @@SPID
        ORDER BY dt.database_transaction_begin_time";
    let row = match client.simple_query(OLDEST).and_then(|s| s.into_row()).await {
        Ok(row) => row,
        // Invalid object name: the server has no such view (Babelfish says it its way).
        Err(tiberius::error::Error::Server(e)) if e.code() == 208 || e.message().contains("does not exist") => {
            return Ok(OpenTransactions::Unseen(
                "the server has no sys.dm_tran_database_transactions (Babelfish does not provide it), so open transactions cannot be seen".into(),
            ));
        }
        // Permission denied: VIEW SERVER STATE is missing.
        Err(tiberius::error::Error::Server(e)) if matches!(e.code(), 297 | 300 | 262) => {
            return Ok(OpenTransactions::Unseen(
                "the login cannot see open transactions (GRANT VIEW SERVER STATE TO the login; Azure SQL: GRANT VIEW DATABASE STATE)".into(),
            ));
        }
        Err(tiberius::error::Error::Server(e)) => {
            return Ok(OpenTransactions::Unseen(format!(
                "the server refused the lookup of open transactions ({})",
                e.message()
            )));
        }
        Err(e) => {
            return Err(sluice_core::SourceError::new(
                sluice_core::SourceErrorKind::Connect,
                format!("the connection was lost while looking up open transactions: {e}"),
            ));
        }
    };
    let Some(row) = row else {
        return Ok(OpenTransactions::Seen(None));
    };
    let started = row.try_get::<chrono::NaiveDateTime, _>("started").ok().flatten();
    Ok(OpenTransactions::Seen(started.map(|started| OpenTransaction {
        started_at: started.and_utc(),
        session: holder(
            "session",
            row.try_get::<i64, _>("session_id").ok().flatten().unwrap_or_default(),
            row.try_get::<&str, _>("login_name").ok().flatten(),
            row.try_get::<&str, _>("program_name").ok().flatten(),
        ),
    })))
}

#[cfg(test)]
mod tests {
    use super::holder;

    #[test]
    fn a_holder_is_named_in_printable_words() {
        assert_eq!(
            holder("pid", 4711, Some("app"), Some("psql")),
            "pid 4711 (user app, application psql)"
        );
        assert_eq!(holder("pid", 1, None, Some("")), "pid 1");
        let forged = holder("pid", 2, Some("x\n\u{1b}[31mlies"), Some(&"a".repeat(500)));
        assert!(!forged.chars().any(char::is_control), "{forged}");
        assert!(forged.len() < 160, "{forged}");
    }
}
