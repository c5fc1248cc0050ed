//! The login check (issue 20): what a source's login may do beyond reading, one
//! function per engine, read from the engine's own catalogs through the session (never
//! by trying a write). Each names the statements that take the writes away: the grant,
//! attribute, membership or ownership to drop, built from names the catalog returns
//! quoted, never from a catalog line as is (MySQL's `SHOW GRANTS` carries the password's
//! hash).

// A build that leaves engines out compiles their checks without calling them.
#![cfg_attr(
    not(all(
        feature = "postgres",
        feature = "mysql",
        feature = "sqlite",
        feature = "sqlserver",
        feature = "snowflake",
        feature = "bigquery",
        feature = "oracle"
    )),
    allow(dead_code)
)]

use futures::TryStreamExt;
use sluice_core::{LoginCheck, RenderedQuery, Row, SourceError, SourceSession, Value};

/// Most statements one answer names; the rest are counted.
const MAX_REVOKES: usize = 20;

/// The rows of `sql`, run in the session as it is (read-only, with its timeout).
async fn rows(session: &mut (dyn SourceSession + '_), sql: &str) -> Result<Vec<Row>, SourceError> {
    let query = RenderedQuery {
        sql: sql.to_string(),
        binds: Vec::new(),
    };
    session.stream(&query).try_collect().await
}

fn text(row: &Row, i: usize) -> String {
    match row.values.get(i) {
        Some(Value::Text(s)) => s.clone(),
        Some(other) => other.as_key_text().unwrap_or_default(),
        None => String::new(),
    }
}

/// A yes/no column: a boolean, or 1 for yes (SQL Server's functions answer ints).
fn flag(row: &Row, i: usize) -> bool {
    match row.values.get(i) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Int(n)) => *n == 1,
        Some(Value::Decimal(d)) => d == "1",
        _ => false,
    }
}

fn texts(row: &Row, i: usize) -> Vec<String> {
    match row.values.get(i) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::Text(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `revokes` without repeats, at most [`MAX_REVOKES`] of them and a count of the rest.
fn capped(revokes: Vec<String>) -> Vec<String> {
    let mut unique: Vec<String> = Vec::new();
    for r in revokes {
        if !unique.contains(&r) {
            unique.push(r);
        }
    }
    if unique.len() > MAX_REVOKES {
        let more = unique.len() - MAX_REVOKES;
        unique.truncate(MAX_REVOKES);
        unique.push(format!("(and {more} more of the same kind)"));
    }
    unique
}

fn outcome(result: Result<Vec<String>, SourceError>, read_only: &str) -> LoginCheck {
    match result {
        Ok(revokes) => LoginCheck::from_revokes(capped(revokes), read_only),
        Err(e) => LoginCheck::could_not_check(e.message),
    }
}

// ---------------------------------------------------------------------------------
// PostgreSQL

const PG_ROLE: &str = "SELECT quote_ident(current_user), r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls \
     FROM pg_roles r WHERE r.rolname = current_user";

/// Every role the login is a member of (directly or not), with the role it was
/// granted directly on the way there: revoking that one ends the membership.
const PG_MEMBERSHIPS: &str = "SELECT quote_ident(r.rolname), quote_ident(d.rolname) \
     FROM pg_auth_members m JOIN pg_roles d ON d.oid = m.roleid CROSS JOIN pg_roles r \
     WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND pg_has_role(d.oid, r.oid, 'MEMBER')";

/// Objects the login may change: tables, views and foreign tables of the non-system
/// schemas (INSERT, UPDATE, DELETE, TRUNCATE), schemas (CREATE), the database
/// (CREATE), and `dblink_exec` (EXECUTE), with their owner and the grantees of those
/// privileges (a null ACL is the object kind's default).
const PG_OBJECTS: &str = r"WITH objects AS (
  SELECT 'TABLE' AS kind, format('%I.%I', n.nspname, c.relname) AS object, c.relowner AS owner,
         concat_ws(', ',
           CASE WHEN has_table_privilege(c.oid, 'INSERT') THEN 'INSERT' END,
           CASE WHEN has_table_privilege(c.oid, 'UPDATE') THEN 'UPDATE' END,
           CASE WHEN has_table_privilege(c.oid, 'DELETE') THEN 'DELETE' END,
           CASE WHEN has_table_privilege(c.oid, 'TRUNCATE') THEN 'TRUNCATE' END) AS privileges,
         coalesce(c.relacl, acldefault('r', c.relowner)) AS acl
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'f') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
  UNION ALL
  SELECT 'SCHEMA', quote_ident(n.nspname), n.nspowner,
         CASE WHEN has_schema_privilege(n.oid, 'CREATE') THEN 'CREATE' ELSE '' END,
         coalesce(n.nspacl, acldefault('n', n.nspowner))
  FROM pg_namespace n WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
  UNION ALL
  SELECT 'DATABASE', quote_ident(d.datname), d.datdba,
         CASE WHEN has_database_privilege(d.oid, 'CREATE') THEN 'CREATE' ELSE '' END,
         coalesce(d.datacl, acldefault('d', d.datdba))
  FROM pg_database d WHERE d.datname = current_database()
  UNION ALL
  SELECT 'FUNCTION', format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
         p.proowner, 'EXECUTE', coalesce(p.proacl, acldefault('f', p.proowner))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE p.proname = 'dblink_exec' AND has_function_privilege(p.oid, 'EXECUTE')
)
SELECT kind, object, quote_ident(pg_get_userbyid(owner)), privileges,
       array(SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
             FROM aclexplode(acl) a WHERE a.privilege_type = ANY (string_to_array(privileges, ', ')))
FROM objects WHERE privileges <> '' ORDER BY kind, object LIMIT 1000";

/// Predefined roles whose members write whatever the grants say.
const PG_WRITING_ROLES: [&str; 3] = [
    "pg_write_all_data",
    "pg_write_server_files",
    "pg_execute_server_program",
];

/// An object the login may change, as [`PG_OBJECTS`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PgObject {
    pub kind: String,
    pub object: String,
    pub owner: String,
    pub privileges: String,
    pub grantees: Vec<String>,
}

pub(crate) async fn postgres(session: &mut (dyn SourceSession + '_)) -> LoginCheck {
    outcome(
        postgres_revokes(session).await,
        "PostgreSQL: no superuser, createrole, createdb or bypassrls attribute, no writing role, and no table, schema, database or dblink_exec it may change or owns",
    )
}

async fn postgres_revokes(session: &mut (dyn SourceSession + '_)) -> Result<Vec<String>, SourceError> {
    let role = rows(session, PG_ROLE).await?;
    let Some(role) = role.first() else {
        return Err(SourceError::new(
            sluice_core::SourceErrorKind::Query,
            "pg_roles has no row for the current user",
        ));
    };
    let me = text(role, 0);
    let attributes: Vec<&str> = [
        (1, "NOSUPERUSER"),
        (2, "NOCREATEROLE"),
        (3, "NOCREATEDB"),
        (4, "NOBYPASSRLS"),
    ]
    .into_iter()
    .filter(|(i, _)| flag(role, *i))
    .map(|(_, a)| a)
    .collect();
    let mut revokes: Vec<String> = attributes.iter().map(|a| format!("ALTER ROLE {me} {a}")).collect();
    if flag(role, 1) {
        // A superuser passes every privilege check: nothing else matters until it goes.
        return Ok(revokes);
    }
    let memberships: Vec<(String, String)> = rows(session, PG_MEMBERSHIPS)
        .await?
        .iter()
        .map(|r| (text(r, 0), text(r, 1)))
        .collect();
    let writing_roles: Vec<&(String, String)> = memberships
        .iter()
        .filter(|(role, _)| PG_WRITING_ROLES.contains(&role.as_str()))
        .collect();
    revokes.extend(writing_roles.iter().map(|(_, via)| format!("REVOKE {via} FROM {me}")));
    let objects: Vec<PgObject> = rows(session, PG_OBJECTS)
        .await?
        .iter()
        .map(|r| PgObject {
            kind: text(r, 0),
            object: text(r, 1),
            owner: text(r, 2),
            privileges: text(r, 3),
            grantees: texts(r, 4),
        })
        .collect();
    revokes.extend(pg_object_revokes(
        &me,
        &memberships,
        !writing_roles.is_empty(),
        &objects,
    ));
    Ok(revokes)
}

/// What takes away the login `me`'s writes on `objects`: its ownership, its own grant,
/// PUBLIC's, or its membership of the role that holds the grant. Objects explained by
/// nothing of these are writable through a predefined role, named already when
/// `writing_role` is set; else their privileges are revoked from `me`.
pub(crate) fn pg_object_revokes(
    me: &str,
    memberships: &[(String, String)],
    writing_role: bool,
    objects: &[PgObject],
) -> Vec<String> {
    // Same privileges from the same grantee on several objects make one statement.
    type Merged = Vec<((String, String, String), Vec<String>)>;
    fn add(merged: &mut Merged, key: (String, String, String), object: &str) {
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some((_, objects)) => objects.push(object.to_string()),
            None => merged.push((key, vec![object.to_string()])),
        }
    }
    let mut merged: Merged = Vec::new();
    let mut revokes = Vec::new();
    for o in objects {
        let via = |role: &str| memberships.iter().find(|(r, _)| r == role).map(|(_, via)| via.clone());
        if o.owner == me {
            revokes.push(format!(
                "ALTER {} {} OWNER TO <a role Sluice does not log in as>",
                o.kind, o.object
            ));
            continue;
        }
        if let Some(via) = via(&o.owner) {
            revokes.push(format!("REVOKE {via} FROM {me}"));
            continue;
        }
        let mut explained = false;
        for grantee in &o.grantees {
            if grantee == me || grantee == "PUBLIC" {
                explained = true;
                add(
                    &mut merged,
                    (o.kind.clone(), o.privileges.clone(), grantee.clone()),
                    &o.object,
                );
            } else if let Some(via) = via(grantee) {
                explained = true;
                revokes.push(format!("REVOKE {via} FROM {me}"));
            }
        }
        if !explained && !writing_role {
            add(
                &mut merged,
                (o.kind.clone(), o.privileges.clone(), me.to_string()),
                &o.object,
            );
        }
    }
    for ((kind, privileges, grantee), objects) in merged {
        let on = if kind == "TABLE" {
            String::new()
        } else {
            format!("{kind} ")
        };
        let shown = objects.len().min(MAX_REVOKES);
        let mut list = objects[..shown].join(", ");
        if objects.len() > shown {
            list.push_str(&format!(" (and {} more)", objects.len() - shown));
        }
        revokes.push(format!("REVOKE {privileges} ON {on}{list} FROM {grantee}"));
    }
    revokes
}

// ---------------------------------------------------------------------------------
// MySQL and MariaDB

/// Privileges that change data, structure, users or the server. Not among them:
/// SELECT, SHOW VIEW, EXECUTE (a procedure runs with its definer's rights; see the
/// README), CREATE TEMPORARY TABLES (gone with the session), LOCK TABLES, PROCESS,
/// REFERENCES, USAGE and the like.
const MYSQL_WRITES: [&str; 20] = [
    "ALL",
    "ALL PRIVILEGES",
    "INSERT",
    "UPDATE",
    "DELETE",
    "DELETE HISTORY",
    "CREATE",
    "DROP",
    "ALTER",
    "INDEX",
    "CREATE VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "TRIGGER",
    "EVENT",
    "SUPER",
    "FILE",
    "CREATE USER",
    "CREATE TABLESPACE",
    "SHUTDOWN",
];

pub(crate) async fn mysql(session: &mut (dyn SourceSession + '_)) -> LoginCheck {
    let result = async {
        let user = rows(session, "SELECT CURRENT_USER()").await?;
        let user = user.first().map(|r| text(r, 0)).unwrap_or_default();
        let grants: Vec<String> = rows(session, "SHOW GRANTS").await?.iter().map(|r| text(r, 0)).collect();
        Ok(mysql_revokes(&user, &grants))
    }
    .await;
    outcome(
        result,
        "MySQL/MariaDB: SHOW GRANTS lists no privilege that writes (INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, SUPER, FILE, ...) for the login or its role",
    )
}

/// The REVOKE statements that take the writing privileges of `grants` (the lines of
/// `SHOW GRANTS`) from `current_user` (`CURRENT_USER()`, `user@host`). A grant to a
/// role the login has is taken away by revoking the role.
pub(crate) fn mysql_revokes(current_user: &str, grants: &[String]) -> Vec<String> {
    let (user, host) = current_user.rsplit_once('@').unwrap_or((current_user, "%"));
    let me = format!("'{}'@'{}'", user.replace('\'', "''"), host.replace('\'', "''"));
    let mut revokes = Vec::new();
    for line in grants {
        let Some(grant) = parse_mysql_grant(line) else { continue };
        let writes: Vec<&str> = grant
            .privileges
            .iter()
            .map(String::as_str)
            .filter(|p| {
                let name = p.split('(').next().unwrap_or_default().trim().to_uppercase();
                MYSQL_WRITES.contains(&name.as_str())
            })
            .collect();
        if writes.is_empty() {
            continue;
        }
        if grant.grantee_is(user, host) {
            revokes.push(format!("REVOKE {} ON {} FROM {me}", writes.join(", "), grant.object));
        } else {
            revokes.push(format!("REVOKE {} FROM {me}", grant.grantee));
        }
    }
    revokes
}

/// One `GRANT privileges ON object TO grantee ...` line.
#[derive(Debug, PartialEq, Eq)]
struct MysqlGrant {
    privileges: Vec<String>,
    object: String,
    /// As quoted in the line: `` `user`@`host` `` or a role's `` `name` ``.
    grantee: String,
}

impl MysqlGrant {
    fn grantee_is(&self, user: &str, host: &str) -> bool {
        let parts: Vec<String> = quoted_parts(&self.grantee);
        parts.len() == 2 && parts[0] == user && parts[1] == host
    }
}

/// The unquoted parts of `` `a`@`b` `` (or `'a'@'b'`, or `` `role` ``).
fn quoted_parts(grantee: &str) -> Vec<String> {
    split_outside_quotes(grantee, '@')
        .into_iter()
        .map(|p| {
            let p = p.trim();
            let q = p.chars().next().unwrap_or(' ');
            if matches!(q, '`' | '\'' | '"') && p.len() >= 2 && p.ends_with(q) {
                let doubled: String = [q, q].iter().collect();
                p[1..p.len() - 1].replace(&doubled, &q.to_string())
            } else {
                p.to_string()
            }
        })
        .collect()
}

/// `text` split at `sep` where it is outside quotes and parentheses.
fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quote, mut depth, mut start) = (None::<char>, 0usize, 0usize);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '`' | '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth = depth.saturating_sub(1),
            (None, c) if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Where the keyword `word` (surrounded by spaces) first stands outside quotes.
fn find_keyword(text: &str, word: &str) -> Option<usize> {
    let mut quote = None::<char>;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '`' | '\'' | '"') => quote = Some(c),
            (None, _) if text[i..].starts_with(word) => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_mysql_grant(line: &str) -> Option<MysqlGrant> {
    let rest = line.strip_prefix("GRANT ")?;
    let on = find_keyword(rest, " ON ")?;
    let privileges = split_outside_quotes(&rest[..on], ',')
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let rest = &rest[on + 4..];
    let to = find_keyword(rest, " TO ")?;
    let object = rest[..to].trim().to_string();
    // The grantee ends where the clauses after it begin (IDENTIFIED BY PASSWORD holds
    // the password's hash, which must not be shown).
    let after = &rest[to + 4..];
    let end = [" IDENTIFIED ", " WITH ", " REQUIRE ", " PASSWORD ", " ACCOUNT "]
        .iter()
        .filter_map(|k| find_keyword(after, k))
        .min()
        .unwrap_or(after.len());
    Some(MysqlGrant {
        privileges,
        object,
        grantee: after[..end].trim().to_string(),
    })
}

// ---------------------------------------------------------------------------------
// SQL Server (and Babelfish, which has no fn_my_permissions and no sys.database_permissions)

const MSSQL_LOGIN: &str = "SELECT QUOTENAME(SUSER_NAME()), QUOTENAME(USER_NAME()), QUOTENAME(DB_NAME()), \
     IS_SRVROLEMEMBER('sysadmin'), IS_MEMBER('db_owner'), IS_MEMBER('db_datawriter'), IS_MEMBER('db_ddladmin'), \
     HAS_PERMS_BY_NAME(DB_NAME(), 'DATABASE', 'CREATE TABLE'), HAS_PERMS_BY_NAME(DB_NAME(), 'DATABASE', 'CREATE PROCEDURE'), \
     HAS_PERMS_BY_NAME(DB_NAME(), 'DATABASE', 'ALTER'), HAS_PERMS_BY_NAME(DB_NAME(), 'DATABASE', 'INSERT'), \
     HAS_PERMS_BY_NAME(DB_NAME(), 'DATABASE', 'UPDATE'), HAS_PERMS_BY_NAME(DB_NAME(), 'DATABASE', 'DELETE')";

/// Tables and views the login may change (`sys.objects` lists only those it may see).
const MSSQL_OBJECTS: &str = "SELECT QUOTENAME(s.name) + '.' + QUOTENAME(o.name), \
     HAS_PERMS_BY_NAME(QUOTENAME(s.name) + '.' + QUOTENAME(o.name), 'OBJECT', 'INSERT'), \
     HAS_PERMS_BY_NAME(QUOTENAME(s.name) + '.' + QUOTENAME(o.name), 'OBJECT', 'UPDATE'), \
     HAS_PERMS_BY_NAME(QUOTENAME(s.name) + '.' + QUOTENAME(o.name), 'OBJECT', 'DELETE'), \
     HAS_PERMS_BY_NAME(QUOTENAME(s.name) + '.' + QUOTENAME(o.name), 'OBJECT', 'ALTER') \
     FROM sys.objects o JOIN sys.schemas s ON s.schema_id = o.schema_id WHERE o.type IN ('U', 'V')";

/// The database roles the login is a member of, besides `public`.
const MSSQL_ROLES: &str =
    "SELECT QUOTENAME(name) FROM sys.database_principals WHERE type = 'R' AND name <> 'public' AND IS_MEMBER(name) = 1";

pub(crate) async fn sqlserver(session: &mut (dyn SourceSession + '_)) -> LoginCheck {
    outcome(
        sqlserver_revokes(session).await,
        "SQL Server: not sysadmin, db_owner, db_datawriter or db_ddladmin, no CREATE, ALTER, INSERT, UPDATE or DELETE on the database, and none on any table or view it can see",
    )
}

async fn sqlserver_revokes(session: &mut (dyn SourceSession + '_)) -> Result<Vec<String>, SourceError> {
    let login = rows(session, MSSQL_LOGIN).await?;
    let Some(login) = login.first() else {
        return Err(SourceError::new(
            sluice_core::SourceErrorKind::Query,
            "the login's permissions returned no row",
        ));
    };
    let (server_login, user, database) = (text(login, 0), text(login, 1), text(login, 2));
    if flag(login, 3) {
        // sysadmin passes every permission check.
        return Ok(vec![format!("ALTER SERVER ROLE [sysadmin] DROP MEMBER {server_login}")]);
    }
    if user == "[dbo]" {
        return Ok(vec![format!(
            "ALTER AUTHORIZATION ON DATABASE::{database} TO <a login Sluice does not use> (the login owns the database)"
        )]);
    }
    let mut revokes = Vec::new();
    for (i, role) in [(4, "db_owner"), (5, "db_datawriter"), (6, "db_ddladmin")] {
        if flag(login, i) {
            revokes.push(format!("ALTER ROLE [{role}] DROP MEMBER {user}"));
        }
    }
    let database_level: Vec<&str> = [
        (7, "CREATE TABLE"),
        (8, "CREATE PROCEDURE"),
        (9, "ALTER"),
        (10, "INSERT"),
        (11, "UPDATE"),
        (12, "DELETE"),
    ]
    .into_iter()
    .filter(|(i, _)| flag(login, *i))
    .map(|(_, p)| p)
    .collect();
    if !revokes.is_empty() {
        // A fixed role grants all the rest; naming every table would hide it.
        return Ok(revokes);
    }
    let roles: Vec<String> = rows(session, MSSQL_ROLES).await?.iter().map(|r| text(r, 0)).collect();
    // SQL Server tells the login what it may do, not which grant gives it.
    let from = if roles.is_empty() {
        user.clone()
    } else {
        format!("{user} (or from whichever of its roles {} holds it)", roles.join(", "))
    };
    if !database_level.is_empty() {
        revokes.push(format!("REVOKE {} FROM {from}", database_level.join(", ")));
    }
    for row in rows(session, MSSQL_OBJECTS).await? {
        let privileges: Vec<&str> = [(1, "INSERT"), (2, "UPDATE"), (3, "DELETE"), (4, "ALTER")]
            .into_iter()
            .filter(|(i, _)| flag(&row, *i))
            .map(|(_, p)| p)
            .collect();
        if !privileges.is_empty() {
            revokes.push(format!(
                "REVOKE {} ON {} FROM {from}",
                privileges.join(", "),
                text(&row, 0)
            ));
        }
    }
    Ok(revokes)
}

// ---------------------------------------------------------------------------------
// Snowflake

/// Privileges of a Snowflake role that change data or create objects.
const SNOWFLAKE_WRITES: [&str; 10] = [
    "OWNERSHIP",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "CREATE TABLE",
    "CREATE SCHEMA",
    "CREATE VIEW",
    "CREATE PROCEDURE",
    "ALL",
];

pub(crate) async fn snowflake(session: &mut (dyn SourceSession + '_)) -> LoginCheck {
    let result = async {
        let role = rows(session, "SELECT CURRENT_ROLE()").await?;
        let role = role.first().map(|r| text(r, 0)).unwrap_or_default();
        if role.is_empty() {
            return Err(SourceError::new(
                sluice_core::SourceErrorKind::Query,
                "the session has no current role",
            ));
        }
        let quoted = format!("\"{}\"", role.replace('"', "\"\""));
        let show = format!("SHOW GRANTS TO ROLE {quoted}");
        let grants = rows(session, &show)
            .await
            .map_err(|e| SourceError::new(e.kind, format!("{show} failed: {}", e.message)))?;
        Ok(snowflake_revokes(&quoted, &grants))
    }
    .await;
    outcome(
        result,
        "Snowflake: the session's role holds no OWNERSHIP, INSERT, UPDATE, DELETE, TRUNCATE or CREATE privilege (roles granted to it are not followed)",
    )
}

/// The REVOKE statements for the writing privileges among `SHOW GRANTS TO ROLE` rows
/// (columns privilege, granted_on, name).
fn snowflake_revokes(role: &str, grants: &[Row]) -> Vec<String> {
    grants
        .iter()
        .filter_map(|r| {
            let (privilege, on, name) = (text(r, 1), text(r, 2), text(r, 3));
            SNOWFLAKE_WRITES
                .contains(&privilege.to_uppercase().as_str())
                .then(|| format!("REVOKE {privilege} ON {on} {name} FROM ROLE {role}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The engines whose logins are not checked, or need no check

pub(crate) fn sqlite() -> LoginCheck {
    LoginCheck::read_only("SQLite: the file is opened read-only, so no statement can change it")
}

pub(crate) fn bigquery() -> LoginCheck {
    LoginCheck::NotChecked {
        reason: "BigQuery's permissions are IAM roles, which a query job cannot list; give the service account BigQuery Data Viewer and BigQuery Job User only".into(),
    }
}

pub(crate) fn oracle() -> LoginCheck {
    LoginCheck::NotChecked {
        reason: "Oracle logins are not checked yet (no Oracle server to test the check against); grant the user CREATE SESSION and SELECT only".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_grants_become_revokes_and_never_show_the_password_hash() {
        let grants: Vec<String> = [
            "GRANT `lcrole` TO `lcr`@`%`",
            "GRANT USAGE ON *.* TO `lcr`@`%` IDENTIFIED BY PASSWORD '*F98C1EAD20DA36C0EF48CC14BF42577B93550B03'",
            "GRANT SELECT ON `lcx`.* TO `lcr`@`%`",
            "GRANT UPDATE (`id`) ON `lcx`.`sales` TO `lcr`@`%`",
            "GRANT USAGE ON *.* TO `lcrole`",
            "GRANT INSERT ON `lcx`.`sales` TO `lcrole`",
            "SET DEFAULT ROLE `lcrole` FOR `lcr`@`%`",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            mysql_revokes("lcr@%", &grants),
            [
                "REVOKE UPDATE (`id`) ON `lcx`.`sales` FROM 'lcr'@'%'",
                "REVOKE `lcrole` FROM 'lcr'@'%'",
            ]
        );
        let all = [
            "GRANT ALL PRIVILEGES ON *.* TO `sluice`@`127.0.0.1` IDENTIFIED BY PASSWORD '*E1A533DF' WITH GRANT OPTION"
                .to_string(),
        ];
        let revokes = mysql_revokes("sluice@127.0.0.1", &all);
        assert_eq!(revokes, ["REVOKE ALL PRIVILEGES ON *.* FROM 'sluice'@'127.0.0.1'"]);
        assert!(!revokes.concat().contains("E1A533DF"));
        // MySQL 8 lists dynamic privileges without spaces; a name with " ON " in quotes
        // does not split the line.
        let odd = ["GRANT SELECT,INSERT ON `a ON b`.* TO `u`@`h`".to_string()];
        assert_eq!(mysql_revokes("u@h", &odd), ["REVOKE INSERT ON `a ON b`.* FROM 'u'@'h'"]);
    }

    #[test]
    fn postgres_objects_name_the_grant_ownership_or_membership_to_drop() {
        let object = |kind: &str, object: &str, owner: &str, privileges: &str, grantees: &[&str]| PgObject {
            kind: kind.into(),
            object: object.into(),
            owner: owner.into(),
            privileges: privileges.into(),
            grantees: grantees.iter().map(|g| g.to_string()).collect(),
        };
        let memberships = [("writers".to_string(), "writers".to_string())];
        let objects = [
            object("TABLE", "public.sales", "admin", "INSERT", &["admin", "reader"]),
            object("TABLE", "public.other", "admin", "INSERT", &["admin", "reader"]),
            object(
                "TABLE",
                "public.mine",
                "reader",
                "INSERT, UPDATE, DELETE, TRUNCATE",
                &["reader"],
            ),
            object("TABLE", "public.team", "admin", "DELETE", &["admin", "writers"]),
            object(
                "FUNCTION",
                "public.dblink_exec(text)",
                "admin",
                "EXECUTE",
                &["PUBLIC", "admin"],
            ),
            object("SCHEMA", "public", "pg_database_owner", "CREATE", &["PUBLIC"]),
        ];
        assert_eq!(
            pg_object_revokes("reader", &memberships, false, &objects),
            [
                "ALTER TABLE public.mine OWNER TO <a role Sluice does not log in as>",
                "REVOKE writers FROM reader",
                "REVOKE INSERT ON public.sales, public.other FROM reader",
                "REVOKE EXECUTE ON FUNCTION public.dblink_exec(text) FROM PUBLIC",
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            ]
        );
    }

    #[test]
    fn long_answers_are_cut_and_counted() {
        let many: Vec<String> = (0..25).map(|i| format!("REVOKE INSERT ON t{i} FROM r")).collect();
        let cut = capped(many);
        assert_eq!(cut.len(), MAX_REVOKES + 1);
        assert_eq!(cut.last().unwrap(), "(and 5 more of the same kind)");
    }
}
