//! SQL rules (`[[rule]] sql = [...]`): what does a query string do, read off PostgreSQL's own
//! parse tree, and does it fit a pattern? Pure: no I/O, no tokio, bounded time and stack.
//!
//! [`analyze`] parses a simple-query string (one or many statements) with
//! [pg_query](https://docs.rs/pg_query) (the PostgreSQL 17 parser), walks **every node** of each
//! statement's tree, and describes each statement as [`Operation`]s: the kinds of an action and
//! the one relation it acts on (`DELETE on public.users`, `SELECT on payroll.salaries`, `DROP
//! TABLE on t`). [`SqlMatcher::check`] matches patterns against them. Input that does not parse
//! is an [`SqlError`], and a statement with parts nobody can see (a `DO` block, `EXECUTE` of a
//! prepared statement, a plpgsql function body, `dblink`) is [opaque](Opaque): **callers refuse
//! both** whenever a deny or review rule could apply (fail closed).
//!
//! # Pattern language
//!
//! `KIND [without WHERE] [on RELATION]`, words case-insensitive, checked at config load.
//!
//! * **KIND: words that begin one of the statement's kinds.** `DROP` matches `DROP TABLE`, `DROP
//!   SCHEMA` and every other `DROP ...`; `DROP TABLE` only that; `COPY` every copy, `COPY TO`
//!   every copy out; `CREATE FUNCTION` also `CREATE OR REPLACE FUNCTION`, which has both kinds.
//!   `*` is any kind. A kind that no statement has (`DROPP`) is a config error. `USER` and `GROUP`
//!   after `CREATE`/`ALTER`/`DROP` are `ROLE` (PostgreSQL's synonyms), except `USER MAPPING`.
//! * **`without WHERE`** (after `DELETE`, `UPDATE` or `*`): the statement deletes or updates
//!   without a condition, or with one that holds for every row (see "Without WHERE").
//! * **`on RELATION`**: the operation acts on that relation: `users`, `public.users`,
//!   `payroll.*`, `*` (any relation), `"Mixed Case"."Name"` (quoted: exact). `*` and `?` are
//!   globs. An unqualified name in a pattern matches the relation in any schema. A relation
//!   written unqualified in a statement lives in whichever schema the `search_path` picks, which
//!   vigil cannot know: deny and review rules treat it as possibly in the pattern's schema (it
//!   matches), allow rules as not certainly (it does not). So a deny rule `SELECT on
//!   payroll.*` also refuses `SELECT * FROM orders`: qualify names in statements, or leave the
//!   schema out of a pattern where the name alone is specific enough. Likewise deny and review
//!   rules compare names without regard to case (`"Users"` matches `users`), allow rules as
//!   PostgreSQL does (unquoted names are lower-case). A statement on a whole schema (`DROP
//!   SCHEMA s`, `ALTER SCHEMA s RENAME`, `ALTER SCHEMA s OWNER`, `GRANT ... ON ALL TABLES IN
//!   SCHEMA s`) acts on every relation in it, and `DROP OWNED` / `REASSIGN OWNED` on every
//!   relation of every schema: deny and review rules on any of them match, and an allow rule
//!   covers them only with a pattern that matches every name there (`s.*`).
//!
//! Examples: `DROP`, `TRUNCATE`, `DELETE without WHERE`, `UPDATE without WHERE`, `INSERT`,
//! `COPY PROGRAM`, `ALTER SYSTEM`, `GRANT`, `CREATE FUNCTION`, `DELETE on public.users`,
//! `UPDATE on users`, `SELECT on payroll.*`, `* on secrets.keys` (anything touching it).
//!
//! # Kinds
//!
//! One per statement node, wherever it sits in the tree; an operation may have several:
//!
//! | statement | kinds |
//! |---|---|
//! | `SELECT`, `VALUES`, `TABLE t` | `SELECT` (`SELECT ... INTO t` also a `CREATE TABLE AS` operation on `t`) |
//! | `INSERT` / `UPDATE` / `DELETE` / `MERGE` / `TRUNCATE` | that word |
//! | `INSERT ... ON CONFLICT DO UPDATE` | `INSERT`, and an `UPDATE` operation |
//! | `MERGE` | `MERGE`, and a `DELETE`/`UPDATE`/`INSERT` operation per `WHEN` action |
//! | `COPY` | `COPY FROM STDIN`/`COPY TO STDOUT`, or `COPY FROM\|TO FILE` + `COPY FILE`, or `COPY FROM\|TO PROGRAM` + `COPY PROGRAM`; and `INSERT` (from) or `SELECT` (a table to) |
//! | `DROP`, `CREATE`, `ALTER` + object type | `DROP TABLE`, `DROP MATERIALIZED VIEW`, `CREATE INDEX`, `ALTER SEQUENCE`, ... (`ALTER TABLE t RENAME COLUMN` is `ALTER TABLE`) |
//! | `ALTER TABLE ... DROP COLUMN` | also `DROP COLUMN` (so `DROP` matches it) |
//! | `CREATE TABLE AS`, `CREATE MATERIALIZED VIEW` | those words |
//! | `CREATE [OR REPLACE] FUNCTION\|PROCEDURE\|VIEW\|RULE` | `CREATE FUNCTION` ..., and `CREATE OR REPLACE FUNCTION` ... when replacing |
//! | `GRANT`, `REVOKE` (privileges or roles) | that word |
//! | `SET x`, `RESET x`, `SHOW x`, `set_config('x', ...)` | `SET` and `SET X` (`SET ROLE`, `SET SEARCH_PATH`, `SET SESSION AUTHORIZATION`, `SET TIME ZONE`), likewise `RESET`, `SHOW`; `SET CONSTRAINTS` |
//! | transactions | `BEGIN` (`START TRANSACTION` also has its own kind), `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE SAVEPOINT`, `ROLLBACK TO SAVEPOINT`, `PREPARE TRANSACTION`, `COMMIT PREPARED`, `ROLLBACK PREPARED` |
//! | `EXPLAIN` | `EXPLAIN`; with `ANALYZE` (which runs the statement): `EXPLAIN ANALYZE` |
//! | `VACUUM [FULL]`, `ANALYZE` | `VACUUM` (+ `VACUUM FULL`), `ANALYZE` |
//! | others | `ALTER SYSTEM`, `PREPARE`, `EXECUTE`, `DEALLOCATE`, `DO`, `CALL`, `LISTEN`, `UNLISTEN`, `NOTIFY`, `DECLARE`, `FETCH`, `MOVE`, `CLOSE`, `LOCK`, `CLUSTER`, `REINDEX`, `CHECKPOINT`, `DISCARD`, `LOAD`, `COMMENT`, `SECURITY LABEL`, `REFRESH MATERIALIZED VIEW`, `REASSIGN OWNED`, `DROP OWNED`, `IMPORT FOREIGN SCHEMA`, `ALTER DEFAULT PRIVILEGES` |
//!
//! # What is looked at
//!
//! * Every statement of a multi-statement string, each on its own (callers decide each).
//! * Statements nested anywhere count as if run: DML in CTEs (`WITH d AS (DELETE FROM t
//!   RETURNING *) SELECT * FROM d` deletes), `PREPARE p AS DELETE ...`, `EXPLAIN ANALYZE
//!   DELETE ...`, `CREATE TABLE x AS SELECT ...`, `COPY (DELETE ... RETURNING *) TO STDOUT`,
//!   `CREATE RULE ... DO INSTEAD DELETE ...`, `DECLARE c CURSOR FOR ...`, `CREATE SCHEMA ...
//!   CREATE TABLE ...`, and the body of an SQL-language function or procedure, whether
//!   `BEGIN ATOMIC ... END` or a string (`AS 'DELETE FROM t'`, parsed in turn, up to four
//!   levels): defining deferred SQL counts as running it. A plain `EXPLAIN` runs nothing: the
//!   relations under it are `EXPLAIN` operations.
//! * **Relations** (`Relation`), as written: schema-qualified or not. An operation's relation is
//!   its target: the table a DML statement writes, the objects of a DDL statement (including
//!   `DROP TABLE a, b`, `DROP TRIGGER t ON b`, `COMMENT ON TABLE b`), the tables a `SELECT`
//!   reads. Every other relation a statement names (`USING`, `FROM`, joins, subqueries in
//!   `WHERE`) is a `SELECT` operation of its own: `SELECT on payroll.*` matches `DELETE FROM t
//!   USING payroll.s`. CTE names are relations too (over-matching only).
//!
//! # Without WHERE
//!
//! A `DELETE` or `UPDATE` (or a `MERGE` `WHEN ... THEN DELETE/UPDATE` action) is *without
//! WHERE* when it has no condition, or when its condition is true without reading a row:
//! constants (`WHERE true`, `WHERE 't'`, `WHERE 'yes'::boolean`), comparisons of constants
//! (`1=1`, `'a'='a'`, `2 > 1`, `1 = '1'`, `NULL IS NULL`, `1 IS NOT DISTINCT FROM 1`), a column
//! compared with itself (`id = id`, `id >= id`, `x IS NOT DISTINCT FROM x`, true for every row
//! where it is not null), and `AND`/`OR`/`NOT`/`IS TRUE` combinations of these (`WHERE x = 5 OR
//! 1 = 1`). For `MERGE`, the `ON` condition and the action's `AND` condition must both be such.
//! A condition that names no column at all holds for every row or for none, so it counts as
//! no condition too unless it is provably false: parameters (`WHERE $1`, decided before
//! the value is bound), function calls (`coalesce(true)`, `now() > '2000-01-01'`), `IN`,
//! `BETWEEN`, `LIKE`, casts, arithmetic and subqueries that name no column (`EXISTS (SELECT
//! 1)`). A column type change (`ALTER TABLE ... ALTER COLUMN ... TYPE`,
//! with or without `USING`) rewrites every row: it is also an `UPDATE without WHERE` of that
//! table, and `INSERT ... SELECT ... FROM ... ON CONFLICT DO UPDATE` without a `WHERE` on its
//! update may update every row it reads.
//! **Not detected** (these count as real conditions): conditions that name a column and hold
//! for every row only given the data, the schema or a parameter's value (`id > 0`, `id IS NOT
//! NULL`, `created_at < now() + '1 century'`), a column of a subquery
//! that does not depend on the row (`id IN (SELECT id FROM t)`), a SQL function's parameter
//! used by name (`WHERE flag`), and a `MERGE ... WHEN NOT MATCHED BY SOURCE` action.
//! `TRUNCATE` is its own kind, not a `DELETE without WHERE`. A prepared `DELETE` or `UPDATE`
//! whose condition reads parameters is decided again at each Bind with the values written in
//! ([`bind_literals`]): `WHERE $1 IS NULL OR id = $1` bound to NULL spares no row. Values sent
//! in binary format are not read (only whether they are NULL).
//!
//! # Opaque statements
//!
//! A statement whose effect is not in its tree is [opaque](Opaque); [`SqlMatcher::check`]
//! answers [`Verdict::Unknown`] for it (unless some pattern matches what is visible):
//!
//! * `DO` blocks;
//! * `EXECUTE name` of a prepared statement (SQL level): the name is exposed
//!   ([`Statement::prepared_names`]) for callers that remember what `PREPARE name` held;
//! * `CREATE FUNCTION`/`PROCEDURE` in any language but SQL (plpgsql bodies can run dynamic SQL),
//!   or an SQL body that does not parse;
//! * any reference by name (a call, or `CREATE OPERATOR/AGGREGATE/CAST ... dblink_exec`, `GRANT
//!   ... ON FUNCTION`) to the functions of [`DYNAMIC_FUNCTIONS`], which run SQL given as a
//!   string (`dblink`, `dblink_exec`, `query_to_xml`, `ts_stat`, `crosstab`, pg_cron's
//!   `schedule`, ...), read tables named by a string (`table_to_xml`, `database_to_xml`), or
//!   reach the server's files (`lo_import`, `lo_export`, `pg_read_file`, `pg_ls_dir`, ...);
//! * `set_config()` with a computed parameter name.
//!
//! `COPY ... PROGRAM` is a kind (`COPY PROGRAM`), not opaque.
//!
//! # What it cannot see
//!
//! The classifier reads one query string; it is a guard rail, not a sandbox. It does not see:
//!
//! * what functions, procedures, triggers, rules, views, policies, column defaults and event
//!   triggers that already exist in the database do when a statement runs them (`SELECT
//!   purge()`, `CALL p()`, an `INSERT` firing a trigger, a `SELECT` from a view of
//!   `payroll.salaries`: only the view's name is seen). Routine bodies are checked when they are
//!   created through vigil, not when they run;
//! * which schema an unqualified name resolves to (the `search_path`, which `SET` or
//!   `set_config` may have changed earlier in the session): handled conservatively, see
//!   `on RELATION`;
//! * relations reached without a name in the tree: by OID or `regclass` string
//!   (`'payroll.s'::regclass`), through functions not in [`DYNAMIC_FUNCTIONS`] (extension
//!   functions vigil does not know), or through foreign tables and `postgres_fdw`;
//! * what `EXECUTE` runs (opaque), and the extended protocol's `Parse`/`Bind`, which callers
//!   analyze themselves (one statement each);
//! * data-dependent conditions (see "Without WHERE");
//! * statements longer than [`MAX_SQL_BYTES`] or whose tree could nest deeper than
//!   [`MAX_NESTING`] (errors), and trees more than about 50 levels deep, which pg_query cannot
//!   decode (errors too: `SELECT 1+1+...` with 50 terms, a dozen or so nested scalar
//!   subqueries).
//!
//! Fingerprints ([`Analysis::fingerprint`]) are SHA-256 over the whole tree, constants
//! included: `WHERE 1=1` and `WHERE 1=0` differ. Do not key decisions on
//! `pg_query::fingerprint`, which ignores constants.

mod classify;
mod guard;
mod pattern;
mod shape;
mod tree;
mod truth;

#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;

pub use classify::DYNAMIC_FUNCTIONS;
pub use guard::MAX_NESTING;
pub use pattern::{MatchMode, PatternError, SqlPattern};
pub use shape::{shape, Shape};

/// The longest query string analysed.
pub const MAX_SQL_BYTES: usize = 4 << 20;

/// What a query string does.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// In order; empty for an empty query (only blanks, comments, `;`).
    pub statements: Vec<Statement>,
    /// SHA-256 (hex) of the parse trees, positions left out: equal for strings that differ
    /// only in layout, comments, keyword case and redundant parentheses.
    pub fingerprint: String,
}

/// One statement of a query string.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// Byte range in the analysed string.
    pub span: Range<usize>,
    /// Every kind of its operations, without repeats, in order (`DELETE`, `SELECT`...).
    pub kinds: Vec<String>,
    /// What it does, one entry per action and relation.
    pub operations: Vec<Operation>,
    /// Every relation it names, without repeats.
    pub relations: Vec<Relation>,
    /// It deletes from some relation without a (non-trivial) condition.
    pub delete_without_where: bool,
    /// It updates some relation without a (non-trivial) condition.
    pub update_without_where: bool,
    /// What cannot be seen; empty when the whole effect is in the tree.
    pub opaque: Vec<Opaque>,
    /// A `DELETE` or `UPDATE` condition whose truth for every row may hang on parameters
    /// alone (`$1 IS NULL OR id = $1`): the statement is decided again with the values bound
    /// ([`bind_literals`]). Not for a condition that needs a column to hold (`id = $1`).
    pub params_decide: bool,
}

/// One action of a statement on (at most) one relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Upper-case kinds: the action at several levels of detail (`DROP`, `DROP TABLE`) and
    /// what else it does (`COPY TO PROGRAM`, `COPY PROGRAM`, `SELECT`). The policy decides
    /// each first word apart (`policy::aspects`).
    pub kinds: Vec<String>,
    /// The relation it acts on, if any.
    pub relation: Option<Relation>,
    /// A `DELETE` or `UPDATE` without a condition that could spare a row.
    pub without_where: bool,
}

/// A table, view, sequence or other relation, as the statement names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Relation {
    /// `None` when written without a schema.
    pub schema: Option<String>,
    /// Empty (no relation has an empty name) for every relation of the schema, or of any
    /// schema when `schema` is `None` as well: `DROP SCHEMA s`, `ALTER SCHEMA s RENAME`,
    /// `DROP OWNED`.
    pub name: String,
}

/// Why part of a statement cannot be seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opaque {
    /// `DO $$ ... $$`: an anonymous code block.
    Do,
    /// `EXECUTE name`: runs what an earlier `PREPARE name` held.
    Execute { name: String },
    /// `CREATE FUNCTION`/`PROCEDURE` in a language other than SQL (empty: none given).
    Routine { language: String },
    /// An SQL routine body that cannot be analysed.
    Body { why: String },
    /// A reference to one of [`DYNAMIC_FUNCTIONS`] (or `set_config` with a computed name).
    Function { name: String, why: &'static str },
    /// `COPY ... PROGRAM` (runs a shell command as the server) or `COPY ... TO 'file'` (writes
    /// a server file, such as its configuration).
    ServerCopy { program: bool },
}

/// Why a query string cannot be analysed. Callers refuse it (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    #[error("it is longer than {MAX_SQL_BYTES} bytes")]
    TooLong,
    #[error("it holds a NUL byte")]
    Nul,
    #[error("it nests too deeply to be analysed")]
    TooDeep,
    #[error("PostgreSQL's parser rejects it: {0}")]
    Syntax(String),
    #[error("its parse tree cannot be read: {0}")]
    Tree(String),
}

/// Parses and classifies a query string (one parse; see the module documentation).
pub fn analyze(sql: &str) -> Result<Analysis, SqlError> {
    analyze_parsed(sql, &parse(sql)?)
}

/// Classifies a query string that [`parse`] parsed.
pub fn analyze_parsed(sql: &str, parsed: &Parsed) -> Result<Analysis, SqlError> {
    let mut sha = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let statements = statements(sql, parsed, 0, &mut |bytes| sha.update(bytes))?;
    Ok(Analysis {
        statements,
        fingerprint: hex::encode(sha.finish()),
    })
}

/// Each statement of `parsed`, classified at routine-body nesting `level`; `digest` sees every
/// tree.
fn statements(
    sql: &str,
    parsed: &Parsed,
    level: usize,
    digest: &mut impl FnMut(&[u8]),
) -> Result<Vec<Statement>, SqlError> {
    let mut out = Vec::with_capacity(parsed.result.stmts.len());
    for raw in &parsed.result.stmts {
        let start = usize::try_from(raw.stmt_location)
            .unwrap_or(0)
            .min(sql.len());
        let end = match usize::try_from(raw.stmt_len) {
            Ok(0) | Err(_) => sql.len(),
            Ok(len) => start.saturating_add(len).min(sql.len()),
        };
        let tree = tree::build(&raw.stmt).map_err(|e| SqlError::Tree(e.to_string()))?;
        tree.digest(digest);
        out.push(classify::statement(&tree, start..end, level));
    }
    Ok(out)
}

/// A query string parsed once by libpg_query, for the classifier ([`analyze_parsed`]) and the
/// masking analysis (`mask::analyze_parsed`) both.
pub struct Parsed {
    pub result: pg_query::protobuf::ParseResult,
    /// Where PostgreSQL's scanner found numeric constants, in order (see [`Shape`]).
    pub numbers: Vec<Range<usize>>,
}

/// The checks that must pass before any text reaches libpg_query, whose tree output recurses in
/// C without a stack check: a too deeply nested statement would abort the process. Every caller
/// of `pg_query` in vigil runs this first.
pub fn precheck(sql: &str) -> Result<(), SqlError> {
    prescan(sql).map(drop)
}

fn prescan(sql: &str) -> Result<Vec<Range<usize>>, SqlError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SqlError::TooLong);
    }
    if sql.contains('\0') {
        return Err(SqlError::Nul);
    }
    guard::check(sql).map_err(|e| match e {
        guard::Refusal::Scan(why) => SqlError::Syntax(why),
        guard::Refusal::TooDeep => SqlError::TooDeep,
    })
}

/// Parses a query string with libpg_query, after [`precheck`]'s checks.
/// A parameter value as a Bind gives it, for [`bind_literals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundValue<'a> {
    Null,
    /// In text format.
    Text(&'a str),
    /// In binary format, or not UTF-8: not NULL, and left as the parameter it is.
    Opaque,
}

/// `sql` with its parameters (`$1`, `$2`, ...) written in as literals, so that the policy can
/// decide a prepared statement again with the values a Bind gives it (`WHERE $1 IS NULL OR id
/// = $1` with NULL spares no row). `values[i]` is parameter `i + 1`; a text value longer than
/// 1 KiB is written as a short stand-in. `None` when the text does not scan or names a
/// parameter without a value.
pub fn bind_literals(sql: &str, values: &[BoundValue<'_>]) -> Option<String> {
    let scan = pg_query::scan(sql).ok()?;
    let mut out = String::with_capacity(sql.len() + 8 * values.len());
    let mut from = 0;
    for t in &scan.tokens {
        if t.token != pg_query::protobuf::Token::Param as i32 {
            continue;
        }
        let start = usize::try_from(t.start).ok()?;
        let end = usize::try_from(t.end).ok()?;
        let n: usize = sql.get(start + 1..end)?.parse().ok()?;
        let literal = match values.get(n.checked_sub(1)?)? {
            BoundValue::Opaque => continue,
            BoundValue::Null => "NULL".to_owned(),
            BoundValue::Text(v) => {
                let v = if v.len() > 1024 { "(long value)" } else { v };
                format!("'{}'", v.replace('\'', "''"))
            }
        };
        out.push_str(sql.get(from..start)?);
        out.push_str(&literal);
        from = end;
    }
    out.push_str(sql.get(from..)?);
    Some(out)
}

pub fn parse(sql: &str) -> Result<Parsed, SqlError> {
    let numbers = prescan(sql)?;
    let result = pg_query::parse(sql).map_err(|e| match e {
        pg_query::Error::Parse(why) | pg_query::Error::Scan(why) => SqlError::Syntax(why),
        pg_query::Error::Conversion(_) => SqlError::Nul,
        pg_query::Error::Decode(d) if d.to_string().contains("recursion limit") => {
            SqlError::TooDeep
        }
        other => SqlError::Tree(other.to_string()),
    })?;
    Ok(Parsed {
        result: result.protobuf,
        numbers,
    })
}

/// Whether an analysis read the value of a numeric constant. A decision that did cannot be
/// reused for a string that differs only in its numbers (`WHERE 1 = 1` against `WHERE 1 = 0`);
/// see [`Shape`]. Every place in the analyses that reads a number calls [`constants::read`].
pub mod constants {
    use std::cell::Cell;

    thread_local! {
        static READ: Cell<bool> = const { Cell::new(false) };
    }

    /// Starts watching on this thread (analyses are synchronous: no other analysis runs on
    /// this thread until [`was_read`]).
    pub fn watch() {
        READ.with(|r| r.set(false));
    }

    /// Whether a numeric value was read since [`watch`].
    pub fn was_read() -> bool {
        READ.with(Cell::get)
    }

    /// Notes that the analysis read a numeric constant's value.
    pub(crate) fn read() {
        READ.with(|r| r.set(true));
    }
}

impl Statement {
    fn new(span: Range<usize>, operations: Vec<Operation>, opaque: Vec<Opaque>) -> Statement {
        let mut ops: Vec<Operation> = Vec::with_capacity(operations.len());
        for op in operations {
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
        let mut kinds: Vec<String> = Vec::new();
        let mut relations: Vec<Relation> = Vec::new();
        for op in &ops {
            for k in &op.kinds {
                if !kinds.contains(k) {
                    kinds.push(k.clone());
                }
            }
            if let Some(r) = &op.relation {
                if !relations.contains(r) {
                    relations.push(r.clone());
                }
            }
        }
        let without = |kind: &str| {
            ops.iter()
                .any(|o| o.without_where && o.kinds.iter().any(|k| k == kind))
        };
        Statement {
            span,
            delete_without_where: without("DELETE"),
            update_without_where: without("UPDATE"),
            kinds,
            relations,
            operations: ops,
            opaque,
            params_decide: false,
        }
    }

    /// Whether part of its effect cannot be seen.
    pub fn is_opaque(&self) -> bool {
        !self.opaque.is_empty()
    }

    /// The prepared statements it `EXECUTE`s.
    pub fn prepared_names(&self) -> impl Iterator<Item = &str> {
        self.opaque.iter().filter_map(|o| match o {
            Opaque::Execute { name } => Some(name.as_str()),
            _ => None,
        })
    }
}

impl Relation {
    fn new(schema: &str, name: &str) -> Relation {
        Relation {
            schema: (!schema.is_empty()).then(|| schema.to_owned()),
            name: name.to_owned(),
        }
    }

    /// Every relation of schema `name`.
    fn schema(name: &str) -> Relation {
        Relation {
            schema: Some(name.to_owned()),
            name: String::new(),
        }
    }

    /// Every relation of every schema.
    fn any() -> Relation {
        Relation {
            schema: None,
            name: String::new(),
        }
    }

    /// Stands for every relation of its schema (or of all).
    pub fn is_whole_schema(&self) -> bool {
        self.name.is_empty()
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.is_whole_schema() {
            "*"
        } else {
            &self.name
        };
        match &self.schema {
            Some(s) => write!(f, "{s}.{name}"),
            None => f.write_str(name),
        }
    }
}

impl fmt::Display for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Opaque::Do => f.write_str("a DO block runs code vigil cannot see"),
            Opaque::Execute { name } => write!(
                f,
                "EXECUTE {name} runs a prepared statement vigil cannot see"
            ),
            Opaque::Routine { language } if language.is_empty() => {
                f.write_str("a routine body without a language")
            }
            Opaque::Routine { language } => write!(
                f,
                "a {language} routine body can run statements vigil cannot see"
            ),
            Opaque::Body { why } => write!(f, "an SQL routine body cannot be analysed: {why}"),
            Opaque::Function { name, why } => write!(f, "{name}() {why}"),
            Opaque::ServerCopy { program: true } => f.write_str(
                "COPY ... PROGRAM runs a command on the database server that can do anything",
            ),
            Opaque::ServerCopy { program: false } => f.write_str(
                "COPY ... TO a file writes a file on the database server (its configuration, say)",
            ),
        }
    }
}

/// A compiled set of SQL patterns, each tagged with the caller's id.
#[derive(Debug, Clone, Default)]
pub struct SqlMatcher {
    patterns: Vec<(usize, SqlPattern)>,
    mode: MatchMode,
}

/// The answer for one analysed query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A pattern (the caller's id) matched an operation of a statement (its index).
    Match { pattern: usize, statement: usize },
    /// No pattern matches any operation.
    NoMatch,
    /// No pattern matches what is visible, but a statement is opaque: callers refuse.
    Unknown { reason: String },
}

impl SqlMatcher {
    /// Compiles patterns; `id` is returned in [`Verdict::Match`]. `mode`: [`MatchMode::Permit`]
    /// for allow rules, [`MatchMode::Restrict`] for the others.
    pub fn new(patterns: impl IntoIterator<Item = (usize, SqlPattern)>, mode: MatchMode) -> Self {
        SqlMatcher {
            patterns: patterns.into_iter().collect(),
            mode,
        }
    }

    /// Whether the matcher holds no pattern (then every string is [`Verdict::NoMatch`]).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The id of the first pattern that matches the operation.
    pub fn matching(&self, op: &Operation) -> Option<usize> {
        self.patterns
            .iter()
            .find(|(_, p)| p.matches(op, self.mode))
            .map(|(id, _)| *id)
    }

    /// The first match in any statement (a match wins over opaque statements elsewhere), else
    /// `Unknown` if a statement is opaque, else `NoMatch`.
    pub fn check(&self, analysis: &Analysis) -> Verdict {
        for (index, statement) in analysis.statements.iter().enumerate() {
            if let Some(pattern) = statement.operations.iter().find_map(|op| self.matching(op)) {
                return Verdict::Match {
                    pattern,
                    statement: index,
                };
            }
        }
        if self.is_empty() {
            return Verdict::NoMatch;
        }
        match analysis.statements.iter().find_map(|s| s.opaque.first()) {
            Some(o) => Verdict::Unknown {
                reason: o.to_string(),
            },
            None => Verdict::NoMatch,
        }
    }
}
