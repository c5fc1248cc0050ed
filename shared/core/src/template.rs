//! Query templates (DESIGN §4): minijinja, with the window variables rendered as
//! bind parameters in the engine's style, never as text.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use minijinja::{Environment, UndefinedBehavior};

/// The variables a template may use.
pub const VARIABLES: [&str; 3] = ["last_update_time", "upper_date_limit", "last_sync_time"];

/// How an engine writes the n-th bind parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceholderStyle {
    /// `$1`, `$2` (PostgreSQL); a variable used twice reuses its number.
    Dollar,
    /// `@P1`, `@P2` (SQL Server); a variable used twice reuses its number.
    AtP,
    /// `@p1`, `@p2` (BigQuery's named parameters); a variable used twice reuses its number.
    AtLowerP,
    /// `?` (MySQL, SQLite, Snowflake); one bind per occurrence.
    Question,
    /// `:1`, `:2` (Oracle); one bind per occurrence, as Oracle binds SQL by position.
    Colon,
}

impl PlaceholderStyle {
    /// Whether a variable used twice is bound once and its placeholder repeated.
    fn reuses_numbers(self) -> bool {
        matches!(
            self,
            PlaceholderStyle::Dollar | PlaceholderStyle::AtP | PlaceholderStyle::AtLowerP
        )
    }

    fn write(self, sql: &mut String, n: usize) {
        match self {
            PlaceholderStyle::Dollar => sql.push('$'),
            PlaceholderStyle::AtP => sql.push_str("@P"),
            PlaceholderStyle::AtLowerP => sql.push_str("@p"),
            PlaceholderStyle::Colon => sql.push(':'),
            PlaceholderStyle::Question => return sql.push('?'),
        }
        sql.push_str(&n.to_string());
    }
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// A UTC timestamp (`last_update_time`, `upper_date_limit`).
    Timestamp(DateTime<Utc>),
    /// Unix seconds (`last_sync_time`).
    UnixSeconds(i64),
}

/// The SQL to send and the values to bind, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedQuery {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// A template that is wrong, with the line it is wrong on and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template syntax error on line {line}: {detail}")]
    Syntax { line: usize, detail: String },
    #[error(
        "unknown template variable `{name}` on line {line}; the known variables are \
         last_update_time, upper_date_limit and last_sync_time"
    )]
    UnknownVariable { name: String, line: usize },
    #[error(
        "`{{{{ {name} }}}}` is inside a quoted string on line {line}; it is sent as a bind \
         parameter, so write it without quotes: `date >= {{{{ {name} }}}}`"
    )]
    QuotedVariable { name: String, line: usize },
}

/// A compiled query template.
#[derive(Debug)]
pub struct QueryTemplate {
    env: Environment<'static>,
    variables: BTreeSet<String>,
}

const TEMPLATE: &str = "query";
// Private-use characters mark where a variable was rendered; no SQL contains them.
const MARK: char = '\u{E000}';

impl QueryTemplate {
    /// Compiles `source`, refusing syntax errors and unknown variables.
    pub fn compile(source: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template_owned(TEMPLATE, source.to_string())
            .map_err(syntax_error)?;
        let variables = env
            .get_template(TEMPLATE)
            .map_err(syntax_error)?
            .undeclared_variables(false)
            .into_iter()
            .collect::<BTreeSet<_>>();
        if let Some(name) = variables.iter().find(|v| !VARIABLES.contains(&v.as_str())) {
            return Err(TemplateError::UnknownVariable {
                line: line_of(source, name),
                name: name.clone(),
            });
        }
        Ok(QueryTemplate { env, variables })
    }

    /// Whether the template bounds the window from above. Without it, windows cannot be
    /// narrowed (no catch-up in steps, no halving).
    pub fn uses_upper_limit(&self) -> bool {
        self.variables.contains("upper_date_limit")
    }

    /// Renders the query for the window `[from, to)`.
    pub fn render(
        &self,
        style: PlaceholderStyle,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<RenderedQuery, TemplateError> {
        let marker = |i: usize| format!("{MARK}{i}{MARK}");
        let text = self
            .env
            .get_template(TEMPLATE)
            .and_then(|t| {
                t.render(minijinja::context! {
                    last_update_time => marker(0),
                    upper_date_limit => marker(1),
                    last_sync_time => marker(2),
                })
            })
            .map_err(syntax_error)?;
        let values = [
            Bind::Timestamp(from),
            Bind::Timestamp(to),
            Bind::UnixSeconds(from.timestamp()),
        ];
        substitute(&text, style, &values)
    }
}

fn syntax_error(e: minijinja::Error) -> TemplateError {
    TemplateError::Syntax {
        line: e.line().unwrap_or(1),
        detail: e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string()),
    }
}

fn line_of(source: &str, needle: &str) -> usize {
    source
        .find(needle)
        .map_or(1, |at| source[..at].matches('\n').count() + 1)
}

/// Where the SQL scanner is: code, or inside something a placeholder must not enter.
#[derive(Clone, PartialEq)]
enum Lex {
    Code,
    Quoted(char),
    LineComment,
    BlockComment,
    DollarQuoted(String),
}

/// Replaces the markers with placeholders, refusing markers inside quoted literals.
/// Inside comments the variable's name is written back as text, unbound.
fn substitute(text: &str, style: PlaceholderStyle, values: &[Bind; 3]) -> Result<RenderedQuery, TemplateError> {
    let mut sql = String::with_capacity(text.len());
    let mut binds = Vec::new();
    let mut numbers: [Option<usize>; 3] = [None; 3];
    let mut state = Lex::Code;
    let mut line = 1;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c == MARK {
            let inner = at + MARK.len_utf8();
            let end = text[inner..].find(MARK).expect("markers come in pairs") + inner;
            let index: usize = text[inner..end].parse().expect("marker holds an index");
            while chars.peek().is_some_and(|&(i, _)| i <= end) {
                chars.next();
            }
            let name = VARIABLES[index];
            match state {
                Lex::Code => {
                    let n = match numbers[index] {
                        Some(n) if style.reuses_numbers() => n,
                        _ => {
                            binds.push(values[index]);
                            *numbers[index].insert(binds.len())
                        }
                    };
                    style.write(&mut sql, n);
                }
                Lex::Quoted(_) | Lex::DollarQuoted(_) => {
                    return Err(TemplateError::QuotedVariable {
                        name: name.to_string(),
                        line,
                    });
                }
                _ => sql.push_str(name),
            }
            continue;
        }
        if c == '\n' {
            line += 1;
        }
        sql.push(c);
        let next = chars.peek().map(|&(_, n)| n);
        state = match (&state, c) {
            (Lex::Code, '\'' | '"' | '`') => Lex::Quoted(c),
            (Lex::Code, '-') if next == Some('-') => Lex::LineComment,
            (Lex::Code, '/') if next == Some('*') => {
                sql.push('*');
                chars.next();
                Lex::BlockComment
            }
            (Lex::Code, '$') => match dollar_tag(&text[at..]) {
                Some(tag) => {
                    sql.push_str(&tag[1..]);
                    for _ in 1..tag.chars().count() {
                        chars.next();
                    }
                    Lex::DollarQuoted(tag)
                }
                None => Lex::Code,
            },
            (Lex::Quoted(q), c) if c == *q => {
                // A doubled quote is an escaped quote, still inside.
                if next == Some(*q) {
                    sql.push(*q);
                    chars.next();
                    state.clone()
                } else {
                    Lex::Code
                }
            }
            (Lex::LineComment, '\n') => Lex::Code,
            (Lex::BlockComment, '*') if next == Some('/') => {
                sql.push('/');
                chars.next();
                Lex::Code
            }
            (Lex::DollarQuoted(tag), '$') if text[at..].starts_with(tag.as_str()) => {
                sql.push_str(&tag[1..]);
                for _ in 1..tag.chars().count() {
                    chars.next();
                }
                Lex::Code
            }
            (s, _) => s.clone(),
        };
    }
    Ok(RenderedQuery { sql, binds })
}

/// `$tag$` or `$$` at the start of `s` (PostgreSQL dollar quoting); `$1` is not one.
fn dollar_tag(s: &str) -> Option<String> {
    let rest = &s[1..];
    let end = rest.find('$')?;
    let tag = &rest[..end];
    let valid =
        tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !tag.starts_with(|c: char| c.is_ascii_digit());
    valid.then(|| format!("${tag}$"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn window() -> (DateTime<Utc>, DateTime<Utc>) {
        (
            Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap(),
        )
    }

    const QUERY: &str = "SELECT * FROM t\nWHERE t.date >= {{ last_update_time }}\n  AND t.date < {{ upper_date_limit }}\n  AND t.u > {{ last_sync_time }} AND t.d2 >= {{ last_update_time }}";

    #[test]
    fn renders_dollar_binds_reusing_numbers() {
        let (from, to) = window();
        let q = QueryTemplate::compile(QUERY)
            .unwrap()
            .render(PlaceholderStyle::Dollar, from, to)
            .unwrap();
        assert_eq!(
            q.sql,
            "SELECT * FROM t\nWHERE t.date >= $1\n  AND t.date < $2\n  AND t.u > $3 AND t.d2 >= $1"
        );
        assert_eq!(
            q.binds,
            vec![
                Bind::Timestamp(from),
                Bind::Timestamp(to),
                Bind::UnixSeconds(1735689600)
            ]
        );
    }

    #[test]
    fn renders_question_binds_per_occurrence() {
        let (from, to) = window();
        let q = QueryTemplate::compile(QUERY)
            .unwrap()
            .render(PlaceholderStyle::Question, from, to)
            .unwrap();
        assert_eq!(q.sql.matches('?').count(), 4);
        assert_eq!(q.binds.len(), 4);
        assert_eq!(q.binds[3], Bind::Timestamp(from));
    }

    #[test]
    fn renders_sql_server_binds_reusing_numbers_and_oracle_binds_per_occurrence() {
        let (from, to) = window();
        let t = QueryTemplate::compile(QUERY).unwrap();
        let q = t.render(PlaceholderStyle::AtP, from, to).unwrap();
        assert_eq!(
            q.sql,
            "SELECT * FROM t\nWHERE t.date >= @P1\n  AND t.date < @P2\n  AND t.u > @P3 AND t.d2 >= @P1"
        );
        assert_eq!(q.binds.len(), 3);
        let q = t.render(PlaceholderStyle::Colon, from, to).unwrap();
        assert_eq!(
            q.sql,
            "SELECT * FROM t\nWHERE t.date >= :1\n  AND t.date < :2\n  AND t.u > :3 AND t.d2 >= :4"
        );
        assert_eq!(q.binds.len(), 4);
        assert_eq!(q.binds[3], Bind::Timestamp(from));
        let exec = QueryTemplate::compile(
            "EXEC dbo.sales_between @from = {{ last_update_time }}, @to = {{ upper_date_limit }}",
        )
        .unwrap()
        .render(PlaceholderStyle::AtP, from, to)
        .unwrap();
        assert_eq!(exec.sql, "EXEC dbo.sales_between @from = @P1, @to = @P2");
        let q = t.render(PlaceholderStyle::AtLowerP, from, to).unwrap();
        assert!(q.sql.ends_with("t.u > @p3 AND t.d2 >= @p1"), "{}", q.sql);
        assert_eq!(q.binds.len(), 3);
        let e = QueryTemplate::compile("EXEC dbo.sales N'{{ last_update_time }}'")
            .unwrap()
            .render(PlaceholderStyle::AtP, from, to)
            .unwrap_err();
        assert!(matches!(e, TemplateError::QuotedVariable { .. }), "{e}");
    }

    #[test]
    fn unknown_variable_names_it_the_line_and_the_known_ones() {
        let e = QueryTemplate::compile("SELECT 1\nWHERE d > {{ last_updated }}").unwrap_err();
        assert_eq!(
            e,
            TemplateError::UnknownVariable {
                name: "last_updated".into(),
                line: 2
            }
        );
        assert!(
            e.to_string()
                .contains("last_update_time, upper_date_limit and last_sync_time")
        );
    }

    #[test]
    fn syntax_error_has_its_line() {
        let e = QueryTemplate::compile("SELECT 1\nFROM t\nWHERE d > {{ last_update_time").unwrap_err();
        assert!(matches!(e, TemplateError::Syntax { line: 3, .. }), "{e:?}");
    }

    #[test]
    fn quoted_variable_is_refused_with_the_fix() {
        let (from, to) = window();
        let t = QueryTemplate::compile("SELECT 1\nWHERE d > '{{ last_update_time }}'").unwrap();
        let e = t.render(PlaceholderStyle::Dollar, from, to).unwrap_err();
        assert_eq!(
            e,
            TemplateError::QuotedVariable {
                name: "last_update_time".into(),
                line: 2
            }
        );
        assert!(e.to_string().contains("without quotes"));
    }

    #[test]
    fn quotes_comments_and_dollar_quotes_are_understood() {
        let (from, to) = window();
        let t = QueryTemplate::compile(
            "SELECT 'it''s', \"col\", $$ x $$ -- {{ upper_date_limit }}\n/* {{ last_sync_time }} */ WHERE d >= {{ last_update_time }}",
        )
        .unwrap();
        let q = t.render(PlaceholderStyle::Dollar, from, to).unwrap();
        assert_eq!(
            q.sql,
            "SELECT 'it''s', \"col\", $$ x $$ -- upper_date_limit\n/* last_sync_time */ WHERE d >= $1"
        );
        assert_eq!(q.binds, vec![Bind::Timestamp(from)]);
        let e = QueryTemplate::compile("SELECT $q$ {{ last_update_time }} $q$").unwrap();
        assert!(e.render(PlaceholderStyle::Dollar, from, to).is_err());
    }

    #[test]
    fn knows_whether_the_window_has_an_upper_bound() {
        assert!(QueryTemplate::compile(QUERY).unwrap().uses_upper_limit());
        assert!(
            !QueryTemplate::compile("SELECT 1 WHERE d >= {{ last_update_time }}")
                .unwrap()
                .uses_upper_limit()
        );
    }
}
