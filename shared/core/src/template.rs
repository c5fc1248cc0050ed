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
    #[error(
        "the query holds the character U+E000 on line {line}; Sluice reserves this private-use \
         character to mark where the window variables go: remove it, or write it in SQL as \
         an escape (such as U&'\\E000' or NCHAR(57344))"
    )]
    ReservedCharacter { line: usize },
    #[error(
        "a window variable is changed in the template on line {line} (a filter, a slice or an \
         expression such as `{{{{ last_update_time|replace(...) }}}}`); it is sent as a bind \
         parameter, so write it alone, as `{{{{ last_update_time }}}}`, and convert it in SQL"
    )]
    ChangedVariable { line: usize },
    #[error(
        "the template does too much work when rendered (more than {FUEL} steps: loops within \
         loops); a query template needs no more than a few loops over short lists"
    )]
    TooMuchWork,
    #[error(
        "the template renders to more than {MAX_RENDERED_BYTES} bytes of SQL (loops or \
         repetition); shorten it"
    )]
    TooLong,
    #[error(
        "the template uses `{operator}` inside a tag on line {line}; it builds strings of any \
         size in one step, so Sluice refuses it: a query template needs only \
         `{{{{ last_update_time }}}}`, `{{{{ upper_date_limit }}}}` and simple tags, so write the \
         text out in SQL"
    )]
    Operator { operator: char, line: usize },
}

/// Steps of the template engine a render may take: far more than any real query needs,
/// and few enough that a template of nested loops ends within milliseconds.
pub const FUEL: u64 = 200_000;

/// The most SQL a template may render to: ten times the longest query a source takes.
pub const MAX_RENDERED_BYTES: usize = 10 * crate::source::MAX_QUERY_CHARS;

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
        if source.contains(MARK) {
            return Err(TemplateError::ReservedCharacter {
                line: line_of(source, &MARK.to_string()),
            });
        }
        refuse_operators(source)?;
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Templates come from API callers: a render must end soon and stay small.
        env.set_fuel(Some(FUEL));
        // Filters that pad to a width the template chooses, or repeat a string the
        // template chooses, can allocate gigabytes in one step, which neither fuel nor
        // the output limit sees.
        for filter in ["indent", "center", "format", "replace", "join"] {
            env.remove_filter(filter);
        }
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
        let mut out = Limited(Vec::new());
        self.env
            .get_template(TEMPLATE)
            .and_then(|t| {
                t.render_captured_to(
                    minijinja::context! {
                        last_update_time => marker(0),
                        upper_date_limit => marker(1),
                        last_sync_time => marker(2),
                    },
                    &mut out,
                )
            })
            .map_err(|e| match e.kind() {
                minijinja::ErrorKind::OutOfFuel => TemplateError::TooMuchWork,
                minijinja::ErrorKind::WriteFailure => TemplateError::TooLong,
                _ => syntax_error(e),
            })?;
        // The template is UTF-8 and so is what it renders; a lossy read cannot lose text.
        let text = String::from_utf8_lossy(&out.0);
        let values = [
            Bind::Timestamp(from),
            Bind::Timestamp(to),
            Bind::UnixSeconds(from.timestamp()),
        ];
        substitute(&text, style, &values)
    }
}

/// The rendered SQL, refusing to grow past [`MAX_RENDERED_BYTES`].
struct Limited(Vec<u8>);

impl std::io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other("the rendered query is too long"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn syntax_error(e: minijinja::Error) -> TemplateError {
    TemplateError::Syntax {
        line: e.line().unwrap_or(1),
        detail: e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string()),
    }
}

/// Refuses the operators that build a string of any size in one step of the engine
/// (`'x' * 100000000`, `a ~ a` doubled in a loop, `+` on strings): fuel counts steps,
/// not bytes, so only their absence keeps a render's memory small. Only inside tags:
/// SQL's own `*` and `+` are text.
fn refuse_operators(source: &str) -> Result<(), TemplateError> {
    let mut rest = source;
    let mut offset = 0;
    while let Some(open) = rest.find("{{").into_iter().chain(rest.find("{%")).min() {
        let close = if rest[open..].starts_with("{{") { "}}" } else { "%}" };
        let end = rest[open..].find(close).map_or(rest.len(), |e| open + e);
        if let Some(at) = rest[open..end].find(['~', '*', '+']) {
            let at = offset + open + at;
            return Err(TemplateError::Operator {
                operator: source[at..].chars().next().unwrap_or('~'),
                line: source[..at].matches('\n').count() + 1,
            });
        }
        let next = (end + close.len()).min(rest.len());
        offset += next;
        rest = &rest[next..];
    }
    Ok(())
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
            // The source holds no MARK (compile refuses it), so a MARK here is a variable's
            // marker, whole (MARK, index, MARK) unless a filter, slice or expression took
            // it apart or changed its index.
            let index = match (chars.next(), chars.next()) {
                (Some((_, digit @ '0'..='2')), Some((_, MARK))) => usize::from(digit as u8 - b'0'),
                _ => return Err(TemplateError::ChangedVariable { line }),
            };
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

    /// Each of these once panicked (a process with `panic = "abort"` ends): now each is
    /// an error that names the cause.
    #[test]
    fn no_template_panics_each_bad_one_says_why() {
        let (from, to) = window();
        let render = |q: &str| QueryTemplate::compile(q).and_then(|t| t.render(PlaceholderStyle::Dollar, from, to));
        let e = render("SELECT '\u{E000}' WHERE d >= {{ last_update_time }}").unwrap_err();
        assert_eq!(e, TemplateError::ReservedCharacter { line: 1 });
        assert!(e.to_string().contains("U+E000"), "{e}");
        for changed in [
            "SELECT 1 WHERE d >= {{ last_update_time[1:3] }}",
            "SELECT 1 WHERE d >= {{ last_update_time[0] }}",
            "SELECT 1 WHERE d >= {{ last_update_time[:-1] }}",
            "SELECT 1\nWHERE d >= {{ upper_date_limit|first }}",
        ] {
            let e = render(changed).unwrap_err();
            assert!(matches!(e, TemplateError::ChangedVariable { .. }), "{changed}: {e:?}");
            assert!(e.to_string().contains("write it alone"), "{e}");
        }
    }

    #[test]
    fn nested_loops_run_out_of_fuel_and_long_output_is_refused() {
        let (from, to) = window();
        let render = |q: &str| QueryTemplate::compile(q).and_then(|t| t.render(PlaceholderStyle::Dollar, from, to));
        let x = "x".repeat(1_000);
        let e = render(&format!(
            "SELECT 1 {{% for a in '{x}' %}}{{% for b in '{x}' %}}{{% for c in '{x}' %}}{{% endfor %}}{{% endfor %}}{{% endfor %}}"
        ))
        .unwrap_err();
        assert_eq!(e, TemplateError::TooMuchWork);
        assert!(e.to_string().contains("loops"), "{e}");
        let long = format!(
            "SELECT '{{% for a in '{}' %}}{}{{% endfor %}}'",
            "x".repeat(100),
            "x".repeat(20_000)
        );
        let e = render(&long).unwrap_err();
        assert_eq!(e, TemplateError::TooLong);
        let e = render("SELECT '{{ 'x'|indent(4000000000) }}'").unwrap_err();
        assert!(matches!(e, TemplateError::Syntax { .. }), "{e:?}");
        // A few short loops, as a real query has, render.
        let q = render(
            "SELECT {% for c in ['a', 'b', 'c'] %}{{ c }}, {% endfor %}1 FROM t WHERE d >= {{ last_update_time }}",
        )
        .unwrap();
        assert_eq!(q.sql, "SELECT a, b, c, 1 FROM t WHERE d >= $1");
    }

    #[test]
    fn operators_and_filters_that_build_huge_strings_in_one_step_are_refused() {
        // Each of these allocates gigabytes in a handful of steps of the engine.
        for (q, operator) in [
            ("SELECT '{{ 'x' * 100000000 }}'", '*'),
            (
                "{% set a = 'xx' %}{% for i in range(40) %}{% set a = a ~ a %}{% endfor %}SELECT 1",
                '~',
            ),
            ("SELECT 1\n{{ 'a' + 'b' }}", '+'),
        ] {
            let e = QueryTemplate::compile(q).unwrap_err();
            assert!(
                matches!(e, TemplateError::Operator { operator: o, .. } if o == operator),
                "{q}: {e:?}"
            );
            assert!(e.to_string().contains("write the text out in SQL"), "{e}");
        }
        assert_eq!(
            QueryTemplate::compile("SELECT 1\n{{ 'a' + 'b' }}").unwrap_err(),
            TemplateError::Operator { operator: '+', line: 2 }
        );
        let (from, to) = window();
        for q in [
            "SELECT '{{ 'x'|replace('x', 'yyyy') }}'",
            "SELECT '{{ 'abc'|join('x') }}'",
        ] {
            let e = QueryTemplate::compile(q)
                .and_then(|t| t.render(PlaceholderStyle::Dollar, from, to))
                .unwrap_err();
            assert!(matches!(e, TemplateError::Syntax { .. }), "{q}: {e:?}");
        }
        // SQL's own operators, outside tags, are text.
        let q = QueryTemplate::compile("SELECT a * 2 + 1, b || '~' FROM t WHERE d >= {{ last_update_time }}")
            .unwrap()
            .render(PlaceholderStyle::Dollar, from, to)
            .unwrap();
        assert_eq!(q.sql, "SELECT a * 2 + 1, b || '~' FROM t WHERE d >= $1");
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
