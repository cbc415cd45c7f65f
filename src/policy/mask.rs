//! Column masking, the policy half: which result columns of one SQL statement carry data derived
//! from a masked column, and which statements masking cannot make safe. A taint analysis on the
//! real PostgreSQL parse tree ([pg_query]); pure: no I/O, no async, no tokio.
//!
//! # How the proxy uses it
//!
//! The proxy resolves the `[[mask]]` columns on the upstream into a [`MaskCatalog`] (tables,
//! views and their ordered columns, the masked attributes, the user-defined functions) and asks
//! [`analyze_output`] about every statement before it is sent (Query, Parse). For each column of
//! the RowDescription that answers it:
//!
//! * origin nonzero (table OID + attribute number): mask with [`MaskCatalog::origin_mask`];
//! * and in every case also with [`OutputTaint::column`]: the stronger of the two wins.
//!   Expressions (`upper(ssn)`), set operations and FULL JOIN merged columns have a zero origin;
//!   COPY has no origins at all, so for COPY the analysis alone decides.
//!
//! [`OutputTaint::refuse`] names statements that masking cannot fix; the proxy does not send
//! them. [`OutputTaint::references_masked`] says the statement reads a masked column somewhere
//! (even only in WHERE): error and notice texts from such a statement may quote the value
//! (`invalid input syntax for type integer: "123-45-6789"`) and must be redacted.
//!
//! # Rules
//!
//! * A value is tainted when any column reference inside its expression resolves to a masked
//!   column: through function arguments, operators, casts, CASE (its conditions too), window
//!   clauses, aliases, FROM subqueries, CTEs (recursive ones to a fixpoint), views (through the
//!   catalog's view masks, which the proxy computes with [`view_taint`]), joins (USING and
//!   NATURAL merge columns by name), LATERAL, and set operations (column by column, every arm).
//! * Whole-row references (`u`, `u.*` or `users` as a value: `row_to_json(u)`, `to_jsonb(u)`,
//!   `ROW(u.*)`, `json_agg(u)`) carry the strongest mask of the relation's columns. `(u).col`
//!   carries `col`'s.
//! * `count(...)` is clean whatever its argument: it reveals how many rows (or non-NULL values)
//!   there are, which `count(*) ... WHERE col IS NOT NULL` reveals anyway.
//! * Filters are not taint: WHERE, JOIN ON, GROUP BY and ORDER BY decide which rows come back,
//!   not what their values are. Masking cannot close such oracles (`WHERE ssn LIKE '1%'`); a
//!   policy rule must, if wanted. Accordingly a sublink (`(SELECT ...)`, `x IN (SELECT ...)`,
//!   `ARRAY(SELECT ...)`) is tainted by its output columns and by any reference to a masked
//!   column of an *outer* row (correlation), not by its own WHERE. `EXISTS (...)` outputs no
//!   columns: it is tainted only through correlation (`EXISTS (SELECT WHERE u.ssn LIKE '1%')` is
//!   `u.ssn LIKE '1%'` in disguise).
//! * Several masks feeding one value: the strongest wins, `null > redact > hash > partial`
//!   (ordered by what the masked value still reveals: nothing, NULL-ness, equality, a suffix).
//! * Fail closed: a column reference that cannot be resolved (not in any relation of scope, or
//!   a relation of unknown shape is in scope) is tainted with the strongest mask of every
//!   relation in scope. A relation is looked up by its unqualified name in every schema (vigil
//!   does not know the session's `search_path`): an unqualified `users` is any schema's `users`,
//!   and their masks combine. Qualified names match exactly. Names compare exactly: the parser
//!   has already folded unquoted identifiers to lower case (`SSN` is `ssn`, `"SSN"` is not).
//! * When the number of output columns cannot be determined (`*` over a relation the catalog does
//!   not know, a set-returning function without a column definition list, `(expr).*`),
//!   [`OutputTaint::columns`] is `None` and [`OutputTaint::fallback`] masks every column: the
//!   strongest mask of any masked relation the statement names anywhere.
//!
//! # Refused (see [`Refusal`]), when the catalog has masks
//!
//! * Calls of functions the catalog lists as [`FunctionRisk::ReadsMasked`] (anywhere, also in
//!   attribute notation `t.f` / `(t).f`, and through operators they implement), and of
//!   [`FunctionRisk::Opaque`] ones in a statement that names a masked relation: their bodies can
//!   read masked tables, or store and print their arguments, where vigil cannot see. How
//!   functions are rated: [`MaskCatalog::rate_functions`].
//! * Installing or changing extensions, `ALTER FUNCTION`, languages, conversions, transforms,
//!   operator classes, foreign servers, tables and user mappings: code or data the catalog read
//!   at the session's start does not describe. Domains with constraints, and `ALTER DOMAIN`: a
//!   CHECK runs on every value cast to the domain, and the statement shows only the cast.
//! * Built-in functions that run SQL given as text or read tables by name, the server's files or
//!   raw pages (`query_to_xml`, `table_to_xml`, `cursor_to_xml`, `ts_stat`, `dblink`,
//!   `pg_read_file`, pageinspect's `get_raw_page`, ...).
//! * Built-in functions that carry values out of the result set (`set_config`, `pg_notify`,
//!   `setval`, large objects, `pg_logical_emit_message`), in a statement naming a masked relation.
//! * `DO`, and creating functions, procedures, triggers, event triggers, rules, aggregates,
//!   operators or casts: code vigil cannot see could read masked data later.
//! * Reading `pg_toast` relations (out-of-line values of every table). The planner statistics
//!   views (`pg_stats`, `pg_stats_ext`, `pg_stats_ext_exprs`, `pg_statistic`) are not refused:
//!   their sampled values (`most_common_vals`, `histogram_bounds`, ...) are masked.
//! * Writing masked-derived values anywhere (INSERT, UPDATE, MERGE, CREATE TABLE AS, SELECT
//!   INTO, materialized views), creating a view over masked data (it would not be masked until
//!   the proxy reloads its catalog), COPY of masked data to a server file or program, binary COPY
//!   of masked data (COPY text and CSV rows are masked by `pg::masker`).
//! * ALTER, RENAME or SET SCHEMA of a masked relation, renaming a schema that holds one, or
//!   renaming a listed function: the catalog would no longer describe them.
//!
//! # What the analysis cannot see
//!
//! * Row-selection oracles: WHERE/JOIN/GROUP BY/ORDER BY over masked columns, and
//!   `count(...)`, reveal facts about masked values without outputting them.
//! * Triggers, rules, column defaults and policies that already exist on the upstream, and
//!   user-defined casts and type I/O functions: the catalog names functions called by name (and
//!   operators by the function behind them) only. Functions created on the upstream after the
//!   proxy read its catalog (by another session) are rated as built-ins until it reads it again
//!   (the proxy does so between transactions once the catalog is a minute old).
//! * A catalog that is stale or incomplete: relations it does not list are taken to have no
//!   masked columns and are reported in [`OutputTaint::unknown_relations`] so the proxy can look
//!   them up and ask again. Partitions and inheritance children must be listed with their own
//!   masks. Views must be listed with masks from [`view_taint`].
//! * Statements run by name: EXECUTE, FETCH and CALL's procedure body. The proxy keeps the taint
//!   of PREPARE and DECLARE (see [`Named`]); an unknown name masks every column.
//! * Side channels that do not go through the result: timing, error positions, plan shapes, and
//!   other sessions' query texts (`pg_stat_activity.query` may quote a literal someone typed).

#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use pg_query::protobuf as pb;
use pg_query::NodeEnum as N;
use serde_json::Value;

/// How a masked value is replaced (`[[mask]] method`). Ordered from weakest to strongest by
/// what the masked value still reveals: `partial` a suffix, `hash` equality (joins, distinct
/// counts), `redact` only NULL-ness, `null` nothing. Where several masks feed one value the
/// strongest wins (`Ord::max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Partial,
    Hash,
    Redact,
    Null,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Partial => "partial",
            Method::Hash => "hash",
            Method::Redact => "redact",
            Method::Null => "null",
        }
    }
}

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Method, UnknownMethod> {
        match s {
            "partial" => Ok(Method::Partial),
            "hash" => Ok(Method::Hash),
            "redact" => Ok(Method::Redact),
            "null" => Ok(Method::Null),
            other => Err(UnknownMethod(other.to_owned())),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}`: expected redact, partial, hash or null")]
pub struct UnknownMethod(pub String);

/// Whether a value derives from masked data, and then with which mask. `Clean < Masked(_)`, and
/// `Masked` orders by [`Method`], so `max` combines taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Taint {
    #[default]
    Clean,
    Masked(Method),
}

impl Taint {
    pub fn of(method: Option<Method>) -> Taint {
        method.map_or(Taint::Clean, Taint::Masked)
    }

    pub fn method(self) -> Option<Method> {
        match self {
            Taint::Clean => None,
            Taint::Masked(m) => Some(m),
        }
    }

    pub fn is_masked(self) -> bool {
        self != Taint::Clean
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelKind {
    Table,
    /// A view or a materialized view: its masks come from [`view_taint`] over its definition.
    View,
}

/// One attribute of a relation, as `pg_attribute` has it (dropped ones left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelColumn {
    pub attnum: i16,
    pub name: String,
    pub mask: Option<Method>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub kind: RelKind,
    /// In attribute-number order.
    pub columns: Vec<RelColumn>,
}

impl Relation {
    /// The strongest mask of any column: what a whole-row reference carries.
    pub fn strongest(&self) -> Option<Method> {
        self.columns.iter().filter_map(|c| c.mask).max()
    }
}

/// What a user-defined function may do with masked data; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FunctionRisk {
    /// Its body may store or emit its arguments (user-defined, body not inspected): refused in
    /// statements that name a masked relation. Its result is tainted by its arguments.
    Opaque,
    /// Its body may read masked relations itself (it names one, runs dynamic SQL, or is written
    /// in a language vigil cannot read): refused wherever it is called.
    ReadsMasked,
}

/// A user-defined function as the proxy read it from `pg_proc`, for
/// [`MaskCatalog::rate_functions`].
#[derive(Debug, Clone)]
pub struct FunctionSource {
    pub schema: String,
    pub name: String,
    /// `pg_language.lanname`, or `aggregate` for an aggregate.
    pub language: String,
    /// `prosrc`; a SQL-standard body (`RETURN ...`, `BEGIN ATOMIC`) as
    /// `pg_get_functiondef` prints it; for an aggregate the names of its support functions.
    pub body: String,
}

/// The identifiers of a (lower-cased) text: runs of letters, digits, `_` and `$`.
fn words(text: &str) -> BTreeSet<&str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .filter(|w| !w.is_empty())
        .collect()
}

/// What the proxy resolved on the upstream for one session: configured masks, relations,
/// user-defined functions. Build it with [`MaskCatalog::add_mask`], [`MaskCatalog::add_table`],
/// [`MaskCatalog::add_view`] and [`MaskCatalog::derive_view_masks`], and
/// [`MaskCatalog::add_function`], in any order. Names are exact (as in `pg_class`/`pg_attribute`:
/// case-sensitive, not quoted).
///
/// A configured mask whose table the proxy did not describe still counts: the table is known by
/// name with its masked columns, and an unknown shape otherwise.
#[derive(Debug, Clone, Default)]
pub struct MaskCatalog {
    masks: BTreeMap<(String, String, String), Method>,
    relations: Vec<Relation>,
    by_oid: HashMap<u32, usize>,
    by_name: HashMap<String, Vec<usize>>,
    functions: HashMap<String, FunctionRisk>,
    /// User-defined operators by name, rated by the functions that implement them.
    operators: HashMap<String, FunctionRisk>,
    /// Names of the relations in `pg_catalog` (the same for every session on a server: shared,
    /// see `set_system_relations`).
    system: std::sync::Arc<std::collections::HashSet<String>>,
    /// The session's `search_path`, when the catalog was read, lists another schema before
    /// `pg_catalog`: an unqualified name may then be a relation of that schema.
    pg_catalog_not_first: bool,
    /// `strongest()`, computed once (the proxy asks for every row); every method that changes
    /// a mask or a relation empties it.
    strongest: std::sync::OnceLock<Option<Method>>,
}

impl MaskCatalog {
    pub fn new() -> MaskCatalog {
        MaskCatalog::default()
    }

    /// A configured mask (`[[mask]] columns = ["schema.table.column"]`). Given twice, the
    /// stronger method stays.
    pub fn add_mask(&mut self, schema: &str, table: &str, column: &str, method: Method) {
        self.strongest.take();
        let key = (schema.to_owned(), table.to_owned(), column.to_owned());
        let m = self.masks.entry(key).or_insert(method);
        *m = (*m).max(method);
        let m = *m;
        for r in &mut self.relations {
            if r.kind == RelKind::Table && r.schema == schema && r.name == table {
                for c in r.columns.iter_mut().filter(|c| c.name == column) {
                    c.mask = Some(m);
                }
            }
        }
    }

    /// A table (also a partitioned, foreign or inheritance-child table) with its columns in
    /// attribute order. Its masks come from [`MaskCatalog::add_mask`]. Replaces an earlier
    /// relation with the same OID.
    pub fn add_table<S: Into<String>>(
        &mut self,
        oid: u32,
        schema: &str,
        name: &str,
        columns: impl IntoIterator<Item = (i16, S)>,
    ) {
        let columns = columns
            .into_iter()
            .map(|(attnum, col)| {
                let col = col.into();
                let key = (schema.to_owned(), name.to_owned(), col);
                let mask = self.masks.get(&key).copied();
                RelColumn {
                    attnum,
                    name: key.2,
                    mask,
                }
            })
            .collect();
        self.insert(Relation {
            oid,
            schema: schema.to_owned(),
            name: name.to_owned(),
            kind: RelKind::Table,
            columns,
        });
    }

    /// A view or materialized view with its columns in attribute order, unmasked until
    /// [`MaskCatalog::set_view_masks`] or [`MaskCatalog::derive_view_masks`].
    pub fn add_view<S: Into<String>>(
        &mut self,
        oid: u32,
        schema: &str,
        name: &str,
        columns: impl IntoIterator<Item = (i16, S)>,
    ) {
        let columns = columns
            .into_iter()
            .map(|(attnum, col)| RelColumn {
                attnum,
                name: col.into(),
                mask: None,
            })
            .collect();
        self.insert(Relation {
            oid,
            schema: schema.to_owned(),
            name: name.to_owned(),
            kind: RelKind::View,
            columns,
        });
    }

    /// Sets a view's column masks (one per column, as [`view_taint`] returns them). False when no
    /// view has this OID.
    pub fn set_view_masks(&mut self, oid: u32, masks: &[Option<Method>]) -> bool {
        self.strongest.take();
        let Some(r) = self
            .by_oid
            .get(&oid)
            .and_then(|&i| self.relations.get_mut(i))
        else {
            return false;
        };
        if r.kind != RelKind::View {
            return false;
        }
        for (i, c) in r.columns.iter_mut().enumerate() {
            c.mask = masks.get(i).copied().flatten();
        }
        true
    }

    /// Computes every listed view's masks from its definition (`pg_get_viewdef(oid)`), views
    /// over views included, in any order: repeats [`view_taint`] until nothing changes (masks
    /// only grow, so this ends).
    pub fn derive_view_masks(&mut self, definitions: &[(u32, &str)]) {
        self.strongest.take();
        loop {
            let mut changed = false;
            for &(oid, sql) in definitions {
                let Some(count) = self
                    .relation(oid)
                    .filter(|r| r.kind == RelKind::View)
                    .map(|r| r.columns.len())
                else {
                    continue;
                };
                let found = view_taint(self, sql, count);
                let Some(r) = self
                    .by_oid
                    .get(&oid)
                    .and_then(|&i| self.relations.get_mut(i))
                else {
                    continue;
                };
                for (c, m) in r.columns.iter_mut().zip(found) {
                    let new = c.mask.max(m);
                    if new != c.mask {
                        c.mask = new;
                        changed = true;
                    }
                }
            }
            if !changed {
                return;
            }
        }
    }

    /// A user-defined function (outside `pg_catalog` and `information_schema`). Calls match
    /// by name in any schema.
    pub fn add_function(&mut self, _schema: &str, name: &str, risk: FunctionRisk) {
        let r = self.functions.entry(name.to_owned()).or_insert(risk);
        *r = (*r).max(risk);
    }

    /// A relation of `pg_catalog` (the proxy lists their names).
    pub fn add_system_relation(&mut self, name: &str) {
        std::sync::Arc::make_mut(&mut self.system).insert(name.to_owned());
    }

    /// The names of the relations of `pg_catalog`, as read once for the server (they change
    /// only with its version).
    pub fn set_system_relations(
        &mut self,
        names: std::sync::Arc<std::collections::HashSet<String>>,
    ) {
        self.system = names;
    }

    /// The session's `search_path` as the catalog read found it (`SHOW search_path`): an
    /// unqualified name is taken for a relation of `pg_catalog` only while `pg_catalog` is
    /// searched first, that is listed first or not listed at all.
    pub fn set_search_path(&mut self, path: &str) {
        self.pg_catalog_not_first = match split_identifiers(path) {
            Some(schemas) => schemas.iter().skip(1).any(|s| s == "pg_catalog"),
            // PostgreSQL would not have taken it; vigil does not guess.
            None => true,
        };
    }

    /// Whether a relation as `OutputTaint::unknown_relations` names it (`schema.name`, or
    /// `name`; a part holding a dot or a quote is quoted, see `rel_label`) is a system catalog:
    /// in `pg_catalog`, `information_schema` or a `pg_toast` schema, or, unqualified, named as
    /// a listed relation of `pg_catalog` while the search path puts `pg_catalog` first. The
    /// proxy also stops trusting unqualified names once the session could have made a
    /// relation that shadows one (a temporary relation is searched before `pg_catalog`).
    pub fn is_system_relation(&self, label: &str) -> bool {
        if label.starts_with('"') {
            return false;
        }
        match label.split_once('.') {
            Some((schema, _)) => {
                schema == "pg_catalog"
                    || schema == "information_schema"
                    || schema.starts_with("pg_toast")
            }
            None => !self.pg_catalog_not_first && self.system.contains(label),
        }
    }

    /// Rates the user-defined functions from their sources (see [`FunctionSource`]) and the
    /// user-defined operators by their functions. A function reads masked data
    /// ([`FunctionRisk::ReadsMasked`]) when its body names a relation with masked columns
    /// (tables and the views derived from them, so call this again after
    /// [`MaskCatalog::derive_view_masks`]), runs dynamic SQL (`EXECUTE`), names a relation with a
    /// Unicode escape (`U&"..."`), calls one of the built-in data readers or another function
    /// rated so (to a fixpoint), or is written in a language vigil cannot read. A C or internal
    /// function is rated by the symbol it runs: an alias of a data reader reads. Any other
    /// function is [`FunctionRisk::Opaque`]. Ratings only grow; returns whether one did.
    ///
    /// What it cannot see: names built at run time without `EXECUTE` (in other languages they
    /// already count as reads), a relation reached through a name that is not its own
    /// (a synonym made by a `search_path` setting on the function is still the same name, but
    /// an inheritance child or partition with an unrelated name is not), and what C code does
    /// beyond the symbols listed as data readers.
    pub fn rate_functions(
        &mut self,
        functions: &[FunctionSource],
        operators: &[(String, String)],
    ) -> bool {
        let mut masked: BTreeSet<String> = self
            .masks
            .keys()
            .map(|(_, t, _)| t.to_lowercase())
            .collect();
        masked.extend(
            self.relations
                .iter()
                .filter(|r| r.strongest().is_some())
                .map(|r| r.name.to_lowercase()),
        );
        let sources: Vec<(&FunctionSource, String, BTreeSet<&str>)> = functions
            .iter()
            .map(|f| (f, f.body.to_lowercase(), BTreeSet::new()))
            .collect();
        let sources: Vec<(&FunctionSource, &str, BTreeSet<&str>)> = sources
            .iter()
            .map(|(f, body, _)| (*f, body.as_str(), words(body)))
            .collect();
        let mut changed = false;
        loop {
            // Operators first: a body that uses one built on a reading function reads too.
            for (op, function) in operators {
                let risk = match self.functions.get(function.as_str()) {
                    Some(r) => *r,
                    None if reads_data(&function.to_lowercase()) => FunctionRisk::ReadsMasked,
                    None => FunctionRisk::Opaque,
                };
                if self.operators.get(op).is_none_or(|r| *r < risk) {
                    self.operators.insert(op.clone(), risk);
                    changed = true;
                }
            }
            // Names as they appear in lower-cased bodies (a quoted `"GetSSN"` is `getssn`).
            let reading: Vec<String> = self
                .functions
                .iter()
                .filter(|(_, r)| **r == FunctionRisk::ReadsMasked)
                .map(|(n, _)| n.to_lowercase())
                .collect();
            let reading_ops: Vec<String> = self
                .operators
                .iter()
                .filter(|(_, r)| **r == FunctionRisk::ReadsMasked)
                .map(|(o, _)| o.clone())
                .collect();
            let mut grew = false;
            for (f, body, words) in &sources {
                let reads = match f.language.as_str() {
                    "c" | "internal" => reads_data(body.trim()),
                    "sql" | "plpgsql" | "aggregate" => {
                        masked.iter().any(|t| body.contains(t.as_str()))
                            || words.contains("execute")
                            || body.contains("u&\"")
                            // It may change the search path (`set_config`, `SET`), after
                            // which an unqualified name vigil takes for a system catalog
                            // may be another relation.
                            || body.contains("search_path")
                            || words.iter().any(|w| reads_data(w))
                            || reading.iter().any(|n| {
                                if n.chars()
                                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
                                {
                                    words.contains(n.as_str())
                                } else {
                                    body.contains(n.as_str())
                                }
                            })
                            || reading_ops.iter().any(|o| body.contains(o.as_str()))
                    }
                    _ => true,
                };
                let risk = if reads {
                    FunctionRisk::ReadsMasked
                } else {
                    FunctionRisk::Opaque
                };
                if self
                    .functions
                    .get(f.name.as_str())
                    .is_none_or(|r| *r < risk)
                {
                    self.add_function(&f.schema, &f.name, risk);
                    grew = true;
                }
            }
            if !grew {
                break;
            }
            changed = true;
        }
        changed
    }

    /// The mask for a RowDescription field whose origin is this table OID and attribute number.
    pub fn origin_mask(&self, table_oid: u32, attnum: i16) -> Option<Method> {
        let r = self.relation(table_oid)?;
        r.columns
            .iter()
            .find(|c| c.attnum == attnum)
            .and_then(|c| c.mask)
    }

    pub fn relation(&self, oid: u32) -> Option<&Relation> {
        self.by_oid.get(&oid).and_then(|&i| self.relations.get(i))
    }

    /// Whether anything at all is masked for this session.
    pub fn has_masks(&self) -> bool {
        self.strongest().is_some()
    }

    /// The strongest mask in the catalog: what vigil masks with when it knows nothing better.
    pub fn strongest(&self) -> Option<Method> {
        *self.strongest.get_or_init(|| {
            let configured = self.masks.values().copied().max();
            let views = self.relations.iter().filter_map(Relation::strongest).max();
            configured.max(views)
        })
    }

    fn insert(&mut self, rel: Relation) {
        self.strongest.take();
        match self.by_oid.get(&rel.oid).copied() {
            Some(i) => {
                if let Some(slot) = self.relations.get_mut(i) {
                    *slot = rel;
                }
                self.by_name.clear();
                for (i, r) in self.relations.iter().enumerate() {
                    self.by_name.entry(r.name.clone()).or_default().push(i);
                }
            }
            None => {
                let i = self.relations.len();
                self.by_oid.insert(rel.oid, i);
                self.by_name.entry(rel.name.clone()).or_default().push(i);
                self.relations.push(rel);
            }
        }
    }

    /// The shape of the relation(s) a FROM reference names: every schema's when unqualified.
    /// `None` when the catalog knows no such relation and no mask names it.
    fn shape(&self, schema: Option<&str>, name: &str) -> Option<Shape> {
        let rels: Vec<&Relation> = self
            .by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.relations.get(i))
            .filter(|r| schema.is_none_or(|s| r.schema == s))
            .collect();
        let mut shapes: Vec<Shape> = rels
            .iter()
            .map(|r| {
                Shape::complete(
                    r.columns
                        .iter()
                        .map(|c| Col::new(&c.name, Taint::of(c.mask)))
                        .collect(),
                )
            })
            .collect();
        // Masks on tables the proxy did not describe: known by their masked columns only.
        let mut placeholders: BTreeMap<&str, Vec<Col>> = BTreeMap::new();
        for ((s, t, c), m) in &self.masks {
            if t == name
                && schema.is_none_or(|x| x == s)
                && !rels.iter().any(|r| r.schema == *s && r.name == *t)
            {
                placeholders
                    .entry(s.as_str())
                    .or_default()
                    .push(Col::new(c, Taint::Masked(*m)));
            }
        }
        shapes.extend(placeholders.into_values().map(|cols| Shape {
            cols,
            complete: false,
            rest: Taint::Clean,
        }));
        if schema.is_none_or(|s| s == "pg_catalog") {
            shapes.extend(self.statistics_shape(name));
        }
        let mut it = shapes.into_iter();
        let first = it.next()?;
        Some(it.fold(first, |a, b| a.combine(&b)))
    }

    /// The planner statistics views show sampled column values (`most_common_vals`,
    /// `histogram_bounds`) to whoever may read the column: while anything is masked those
    /// columns carry the strongest mask, and so does every other column vigil does not know
    /// (the views gain columns between PostgreSQL versions).
    fn statistics_shape(&self, name: &str) -> Option<Shape> {
        const DATA: &[&str] = &[
            "most_common_vals",
            "histogram_bounds",
            "most_common_elems",
            "range_length_histogram",
            "range_bounds_histogram",
        ];
        const STATS: &[&str] = &[
            "schemaname",
            "tablename",
            "attname",
            "inherited",
            "null_frac",
            "avg_width",
            "n_distinct",
            "most_common_freqs",
            "correlation",
            "most_common_elem_freqs",
            "elem_count_histogram",
            "range_empty_frac",
        ];
        const EXT: &[&str] = &[
            "schemaname",
            "tablename",
            "statistics_schemaname",
            "statistics_name",
            "statistics_owner",
            "attnames",
            "exprs",
            "kinds",
            "inherited",
            "n_distinct",
            "dependencies",
            "most_common_val_nulls",
            "most_common_freqs",
            "most_common_base_freqs",
        ];
        const EXT_EXPRS: &[&str] = &[
            "schemaname",
            "tablename",
            "statistics_schemaname",
            "statistics_name",
            "statistics_owner",
            "expr",
            "inherited",
            "null_frac",
            "avg_width",
            "n_distinct",
            "most_common_freqs",
            "correlation",
            "most_common_elem_freqs",
            "elem_count_histogram",
        ];
        let strongest = Taint::of(self.strongest());
        if !strongest.is_masked() {
            return None;
        }
        let clean: &[&str] = match name {
            "pg_stats" => STATS,
            "pg_stats_ext" => EXT,
            "pg_stats_ext_exprs" => EXT_EXPRS,
            // The raw catalogs: every column.
            "pg_statistic" | "pg_statistic_ext_data" => &[],
            _ => return None,
        };
        let cols = clean
            .iter()
            .map(|c| Col::new(c, Taint::Clean))
            .chain(DATA.iter().map(|c| Col::new(c, strongest)))
            .collect();
        Some(Shape {
            cols,
            complete: false,
            rest: strongest,
        })
    }

    fn schema_has_masks(&self, schema: &str) -> bool {
        self.masks.keys().any(|(s, _, _)| s == schema)
            || self
                .relations
                .iter()
                .any(|r| r.schema == schema && r.strongest().is_some())
    }
}

/// Masks for each output column of a view, from its definition (`pg_get_viewdef(oid)`), for
/// [`MaskCatalog::set_view_masks`]. Always `columns` entries: when the definition's columns
/// cannot be told apart, or it calls something that is refused, every column gets the fallback.
pub fn view_taint(catalog: &MaskCatalog, view_sql: &str, columns: usize) -> Vec<Option<Method>> {
    let out = analyze_output(catalog, view_sql);
    if out.refuse.is_some() {
        return vec![catalog.strongest(); columns];
    }
    match out.columns {
        Some(c) if c.len() == columns => c.iter().map(|t| t.method()).collect(),
        Some(_) => vec![catalog.strongest(); columns],
        None => vec![out.fallback.method(); columns],
    }
}

/// What one statement returns, column by column, and whether it may be sent at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTaint {
    /// One taint per output column, or `None` when the analysis cannot tell the columns apart
    /// (then every column gets [`OutputTaint::fallback`]). `Some(vec![])` for statements that
    /// return no rows. For PREPARE and DECLARE: the columns of the prepared statement or cursor
    /// (see [`Named`]).
    pub columns: Option<Vec<Taint>>,
    /// The mask for columns the analysis cannot place: the strongest mask of every masked
    /// relation the statement names, and of every column it found.
    pub fallback: Taint,
    /// Do not send: masking cannot make this statement safe.
    pub refuse: Option<Refusal>,
    /// The statement reads a masked column somewhere (WHERE too): redact its errors and notices.
    pub references_masked: bool,
    /// The statement creates or runs a prepared statement or cursor by name.
    pub named: Option<Named>,
    /// For `COPY ... TO STDOUT`: the options that say how its rows are written.
    pub copy: Option<CopyOptions>,
    /// Relations the statement names that the catalog does not know (taken as unmasked); the
    /// proxy may look them up upstream, add them and ask again. `schema.name` or `name`.
    pub unknown_relations: Vec<String>,
}

impl OutputTaint {
    /// This taint with every column masked at least with the catalog's strongest mask: for a
    /// result that reads relations vigil cannot place.
    pub fn masking_all(&self, catalog: &MaskCatalog) -> OutputTaint {
        let mut t = self.clone();
        t.columns = None;
        t.fallback = t.fallback.max(Taint::of(catalog.strongest()));
        t
    }

    /// The taint of result column `index` of a result with `count` columns: the analysis's own
    /// when it found exactly `count` columns, [`OutputTaint::fallback`] otherwise.
    pub fn column(&self, index: usize, count: usize) -> Taint {
        match &self.columns {
            Some(c) if c.len() == count => c.get(index).copied().unwrap_or(self.fallback),
            _ => self.fallback,
        }
    }

    fn no_rows() -> OutputTaint {
        OutputTaint {
            columns: Some(Vec::new()),
            fallback: Taint::Clean,
            refuse: None,
            references_masked: false,
            named: None,
            copy: None,
            unknown_relations: Vec::new(),
        }
    }

    fn refused(catalog: &MaskCatalog, why: Refusal) -> OutputTaint {
        OutputTaint {
            columns: None,
            fallback: Taint::of(catalog.strongest()),
            refuse: Some(why),
            references_masked: catalog.has_masks(),
            named: None,
            copy: None,
            unknown_relations: Vec::new(),
        }
    }
}

/// A statement that runs or defines something by name, whose columns the proxy must remember
/// (`Prepare`, `DeclareCursor`: `columns` describes the prepared query or cursor; the statement
/// itself returns no rows) or look up (`Execute`, `Fetch`: use the remembered taint; when there
/// is none, `columns` is `None` and `fallback` the catalog's strongest mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    Prepare(String),
    Execute(String),
    DeclareCursor(String),
    Fetch(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
    Binary,
}

/// How a `COPY ... TO STDOUT` writes its rows, with PostgreSQL's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: CopyFormat,
    pub delimiter: u8,
    pub null: Vec<u8>,
    /// CSV only.
    pub quote: u8,
    /// CSV only.
    pub escape: u8,
    /// The first row holds column names, not data.
    pub header: bool,
}

/// Why a statement is not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("vigil cannot parse this statement, so it cannot tell which columns to mask ({0})")]
    Unparsable(String),
    #[error("send one statement at a time when masking applies")]
    MultipleStatements,
    #[error("`{0}` may read masked columns where vigil cannot mask them")]
    OpaqueFunction(String),
    #[error("`{0}` reads data vigil cannot see, so it cannot mask it")]
    DataReader(String),
    #[error("`{0}` would carry masked data out of the result, where it cannot be masked")]
    SideEffect(String),
    #[error("DO blocks may read masked columns and print them where vigil cannot mask them")]
    AnonymousCode,
    #[error("creating a {0} is not allowed while columns are masked: its code could read them")]
    CodeDefinition(&'static str),
    #[error("{0} is not allowed while columns are masked: vigil cannot see what the code or data it brings in would read")]
    NotWhileMasked(&'static str),
    #[error("this statement would copy masked data into {0}, where it would not be masked")]
    CopiesMasked(String),
    #[error("view {0} would show masked columns unmasked until vigil reloads its catalog")]
    ViewOverMasked(String),
    #[error("COPY of masked columns to a server file or program bypasses masking")]
    ServerCopy,
    #[error("binary COPY of masked columns is not supported; use text or CSV format")]
    BinaryCopy,
    #[error("COPY of masked columns in encoding {0} is not supported; use UTF8")]
    CopyEncoding(String),
    #[error("changing {0} would defeat its masks")]
    AltersMasked(String),
    #[error("the statement is nested too deeply for vigil to analyze")]
    TooDeep,
}

/// The taint of the result of ONE statement; several are refused ([`analyze_script`] takes
/// several). An empty statement returns no rows.
pub fn analyze_output(catalog: &MaskCatalog, sql: &str) -> OutputTaint {
    let mut all = analyze_script(catalog, sql);
    match all.len() {
        0 => OutputTaint::no_rows(),
        1 => all.pop().unwrap_or_else(OutputTaint::no_rows),
        _ => OutputTaint::refused(catalog, Refusal::MultipleStatements),
    }
}

/// One [`OutputTaint`] per statement of a simple-Query string, in order. A string that does not
/// parse gives one refused entry.
pub fn analyze_script(catalog: &MaskCatalog, sql: &str) -> Vec<OutputTaint> {
    // libpg_query must never see text that could crash it: `sql::parse` checks first.
    analyze_parsed(catalog, crate::policy::sql::parse(sql).as_ref())
}

/// [`analyze_script`] over a string that `sql::parse` parsed (or refused).
pub fn analyze_parsed(
    catalog: &MaskCatalog,
    parsed: Result<&crate::policy::sql::Parsed, &crate::policy::sql::SqlError>,
) -> Vec<OutputTaint> {
    match parsed {
        // Includes what pg_query cannot decode: prost refuses more than 100 nested messages
        // (about 48 chained `+` terms).
        Err(crate::policy::sql::SqlError::TooDeep) => {
            vec![OutputTaint::refused(catalog, Refusal::TooDeep)]
        }
        Err(e) => vec![OutputTaint::refused(
            catalog,
            Refusal::Unparsable(e.to_string()),
        )],
        Ok(parsed) => parsed
            .result
            .stmts
            .iter()
            .map(|raw| match raw.stmt.as_deref() {
                Some(stmt) => analyze_stmt(catalog, stmt),
                None => OutputTaint::no_rows(),
            })
            .collect(),
    }
}

/// Does the statement read a masked column anywhere, WHERE included? True also when vigil
/// cannot tell (it does not parse).
pub fn references_masked(catalog: &MaskCatalog, sql: &str) -> bool {
    analyze_script(catalog, sql)
        .iter()
        .any(|o| o.references_masked)
}

// ---------------------------------------------------------------------------------------------
// The analysis.

/// Deeper nesting is refused. pg_query's own decoding already refuses parse trees deeper than
/// 100 protobuf messages, so this is a second line.
const MAX_DEPTH: usize = 256;

/// Built-in functions that run SQL text, read tables by name, or read the server's files.
const DATA_READERS: &[&str] = &[
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "table_to_xml",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xml_and_xmlschema",
    "ts_stat",
    "pg_read_file",
    "pg_read_binary_file",
    "dblink",
    "dblink_exec",
    "dblink_open",
    "dblink_fetch",
    "dblink_send_query",
    "dblink_get_result",
    // the values of a row picked by its key, as SQL text
    "dblink_build_sql_insert",
    "dblink_build_sql_update",
    "dblink_build_sql_delete",
    // ts_rewrite runs its second argument as a query; tablefunc's and xml2's run queries or
    // read tables named by strings
    "ts_rewrite",
    "crosstab",
    "crosstab2",
    "crosstab3",
    "crosstab4",
    "connectby",
    "xpath_table",
    "pg_background_launch",
    "pg_background_result",
    // logical decoding: every row written since the slot's start, as text
    "pg_logical_slot_get_changes",
    "pg_logical_slot_peek_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_binary_changes",
    // pageinspect: raw table and index pages
    "get_raw_page",
    "heap_page_items",
    "heap_page_item_attrs",
    "tuple_data_split",
    "bt_page_items",
    "brin_page_items",
    "gist_page_items",
];

/// Whether calling a function of this name (the last part, lower case) reads data vigil cannot
/// see: [`DATA_READERS`], and the functions the SQL policy takes as dynamic SQL
/// ([`crate::policy::sql::DYNAMIC_FUNCTIONS`]).
pub fn reads_data(name: &str) -> bool {
    DATA_READERS.contains(&name)
        || crate::policy::sql::DYNAMIC_FUNCTIONS
            .iter()
            .any(|(f, _)| *f == name)
}

/// Built-in functions that store or send their arguments somewhere a later statement (or the
/// protocol) returns them unmasked.
const SIDE_EFFECTS: &[&str] = &[
    "set_config",
    "pg_notify",
    "setval",
    "lo_from_bytea",
    "lo_put",
    "lowrite",
    "lo_import",
    "lo_export",
    "pg_logical_emit_message",
    "pg_file_write",
];

const SYSTEM_COLUMNS: &[&str] = &["ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Col {
    name: String,
    taint: Taint,
}

impl Col {
    fn new(name: &str, taint: Taint) -> Col {
        Col {
            name: name.to_owned(),
            taint,
        }
    }
}

/// The columns of a relation, subquery or result. When `complete`, `cols` are exactly its
/// columns in order; otherwise `cols` are the ones known by name and `rest` is the taint of
/// any other.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    cols: Vec<Col>,
    complete: bool,
    rest: Taint,
}

impl Shape {
    fn complete(cols: Vec<Col>) -> Shape {
        Shape {
            cols,
            complete: true,
            rest: Taint::Clean,
        }
    }

    fn unknown(rest: Taint) -> Shape {
        Shape {
            cols: Vec::new(),
            complete: false,
            rest,
        }
    }

    fn whole(&self) -> Taint {
        self.cols
            .iter()
            .map(|c| c.taint)
            .fold(self.rest, Taint::max)
    }

    fn find(&self, name: &str) -> Option<Taint> {
        self.cols
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.taint)
            .max()
    }

    fn push(&mut self, name: String, taint: Taint) {
        self.cols.push(Col { name, taint });
    }

    fn append(&mut self, other: Shape) {
        self.complete &= other.complete;
        self.rest = self.rest.max(other.rest);
        self.cols.extend(other.cols);
    }

    /// Column aliases (`AS t(a, b)`) rename the first columns. Positions in an incomplete
    /// shape are unknown, so there every alias gets the taint of the whole.
    fn rename(&mut self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        if self.complete {
            for (c, n) in self.cols.iter_mut().zip(names) {
                c.name.clone_from(n);
            }
        } else {
            let whole = self.whole();
            self.rest = whole;
            self.cols = names.iter().map(|n| Col::new(n, whole)).collect();
        }
    }

    /// Both shapes' columns, as when a name may mean either: same columns, each the stronger;
    /// otherwise every name of both and an unknown shape.
    fn combine(&self, other: &Shape) -> Shape {
        let same = self.complete
            && other.complete
            && self.cols.len() == other.cols.len()
            && self
                .cols
                .iter()
                .zip(&other.cols)
                .all(|(a, b)| a.name == b.name);
        if same {
            return Shape::complete(
                self.cols
                    .iter()
                    .zip(&other.cols)
                    .map(|(a, b)| Col::new(&a.name, a.taint.max(b.taint)))
                    .collect(),
            );
        }
        let mut cols = self.cols.clone();
        for b in &other.cols {
            match cols.iter_mut().find(|a| a.name == b.name) {
                Some(a) => a.taint = a.taint.max(b.taint),
                None => cols.push(b.clone()),
            }
        }
        Shape {
            cols,
            complete: false,
            rest: self.rest.max(other.rest),
        }
    }

    /// UNION / INTERSECT / EXCEPT: column by column; names from the left.
    fn set_operation(left: Shape, right: Shape) -> Shape {
        match (left.complete, right.complete) {
            (true, true) if left.cols.len() == right.cols.len() => Shape::complete(
                left.cols
                    .iter()
                    .zip(&right.cols)
                    .map(|(a, b)| Col::new(&a.name, a.taint.max(b.taint)))
                    .collect(),
            ),
            // One arm fixes the number of columns; the other may feed any of them.
            (true, false) => {
                let other = right.whole();
                Shape::complete(
                    left.cols
                        .iter()
                        .map(|c| Col::new(&c.name, c.taint.max(other)))
                        .collect(),
                )
            }
            (false, true) => {
                let other = left.whole();
                Shape::complete(
                    right
                        .cols
                        .iter()
                        .map(|c| Col::new(&c.name, c.taint.max(other)))
                        .collect(),
                )
            }
            _ => Shape::unknown(left.whole().max(right.whole())),
        }
    }
}

/// A FROM item as the scope sees it (PostgreSQL's ParseNamespaceItem): its name for qualified
/// references when `rel_visible`, its columns for unqualified ones when `cols_visible`.
#[derive(Debug, Clone)]
struct Item {
    schema: Option<String>,
    name: Option<String>,
    rel_visible: bool,
    cols_visible: bool,
    shape: Shape,
}

impl Item {
    fn named(schema: Option<String>, name: String, shape: Shape) -> Item {
        Item {
            schema,
            name: Some(name),
            rel_visible: true,
            cols_visible: true,
            shape,
        }
    }
}

#[derive(Debug, Clone)]
struct Cte {
    name: String,
    shape: Shape,
}

/// One query level's names, chained to the enclosing levels. `level` grows along the chain:
/// a reference resolved at a level lower than a sublink's own is a correlation.
struct Scope<'s> {
    items: &'s [Item],
    ctes: &'s [Cte],
    parent: Option<&'s Scope<'s>>,
    level: usize,
}

impl Scope<'_> {
    const ROOT: Scope<'static> = Scope {
        items: &[],
        ctes: &[],
        parent: None,
        level: 0,
    };

    fn all_taint(&self) -> Taint {
        let mut t = Taint::Clean;
        let mut s = Some(self);
        while let Some(sc) = s {
            for it in sc.items {
                t = t.max(it.shape.whole());
            }
            s = sc.parent;
        }
        t
    }
}

fn find_item<'a>(
    scope: &'a Scope<'a>,
    schema: Option<&str>,
    name: &str,
) -> Option<(&'a Item, usize)> {
    let mut s = Some(scope);
    while let Some(sc) = s {
        let found = sc.items.iter().find(|i| {
            i.rel_visible
                && i.name.as_deref() == Some(name)
                && match (schema, i.schema.as_deref()) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        });
        if let Some(it) = found {
            return Some((it, sc.level));
        }
        s = sc.parent;
    }
    None
}

fn find_cte<'a>(scope: &'a Scope<'a>, name: &str) -> Option<&'a Shape> {
    let mut s = Some(scope);
    while let Some(sc) = s {
        if let Some(c) = sc.ctes.iter().rev().find(|c| c.name == name) {
            return Some(&c.shape);
        }
        s = sc.parent;
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Name(String),
    Star,
}

enum Out {
    Rows(Shape),
    NoRows,
    Unknown(Taint),
}

struct Analyzer<'c> {
    cat: &'c MaskCatalog,
    /// The strongest mask of the masked relations the statement names anywhere.
    fallback: Taint,
    /// The strongest taint of every column reference resolved so far.
    reads: Taint,
    /// Open sublinks: (their own level, taint of their references to outer levels).
    corr: Vec<(usize, Taint)>,
    refuse: Option<Refusal>,
    unknown: BTreeSet<String>,
    named: Option<Named>,
    copy: Option<CopyOptions>,
    depth: usize,
    too_deep: bool,
}

fn analyze_stmt(cat: &MaskCatalog, stmt: &pb::Node) -> OutputTaint {
    // Every function call and relation anywhere in the statement, from a walk that cannot miss
    // a node type: the typed analysis below handles the common ones precisely.
    let census = match serde_json::to_value(stmt) {
        Ok(v) => {
            let mut c = Census::default();
            c.walk(&v);
            c
        }
        Err(e) => return OutputTaint::refused(cat, Refusal::Unparsable(e.to_string())),
    };
    let fallback = census
        .relations
        .iter()
        .filter_map(|(s, n)| cat.shape(s.as_deref(), n))
        .map(|s| s.whole())
        .max()
        .unwrap_or_default();
    let mut a = Analyzer {
        cat,
        fallback,
        reads: Taint::Clean,
        corr: Vec::new(),
        refuse: None,
        unknown: BTreeSet::new(),
        named: None,
        copy: None,
        depth: 0,
        too_deep: false,
    };
    a.check_functions(&census.functions);
    if cat.has_masks() {
        // An operator whose function reads masked data. (Operators match by name only, so
        // one on opaque functions, such as an extension's `=` for its own type, is not refused
        // next to a masked table as an opaque function call would be: its operands' taint
        // carries to its result, and what its C code does with them is not seen.)
        for op in &census.operators {
            if cat.operators.get(op) == Some(&FunctionRisk::ReadsMasked) {
                a.refuse(Refusal::OpaqueFunction(format!("operator {op}")));
            }
        }
    }
    if cat.has_masks() {
        if let Some((_, name)) = census
            .relations
            .iter()
            .find(|(s, _)| s.as_deref() == Some("pg_toast"))
        {
            // Out-of-line values of every table, masked ones included.
            a.refuse(Refusal::DataReader(format!("pg_toast.{name}")));
        }
    }
    let out = a.top(stmt);
    if a.too_deep {
        a.refuse(Refusal::TooDeep);
    }
    let (columns, fallback) = match out {
        Out::Rows(shape) => {
            let fb = shape.whole().max(fallback);
            let cols = shape
                .complete
                .then(|| shape.cols.iter().map(|c| c.taint).collect());
            (cols, fb)
        }
        Out::NoRows => (Some(Vec::new()), fallback),
        Out::Unknown(t) => (None, t.max(fallback)),
    };
    OutputTaint {
        columns,
        fallback,
        references_masked: a.reads.is_masked() || (a.refuse.is_some() && cat.has_masks()),
        refuse: a.refuse,
        named: a.named,
        copy: a.copy,
        unknown_relations: a.unknown.into_iter().collect(),
    }
}

#[derive(Default)]
struct Census {
    /// Qualified names of every function called.
    functions: Vec<Vec<String>>,
    /// (schema, name) of every relation named.
    relations: Vec<(Option<String>, String)>,
    /// Every operator used (its name, without schema).
    operators: Vec<String>,
}

impl Census {
    fn walk(&mut self, v: &Value) {
        match v {
            Value::Object(m) => {
                // FuncCall, as a node or as a typed field (CALL).
                if let (Some(Value::Array(names)), true) =
                    (m.get("funcname"), m.contains_key("agg_star"))
                {
                    self.functions.push(
                        names
                            .iter()
                            .filter_map(json_name)
                            .map(str::to_owned)
                            .collect(),
                    );
                }
                // A_Expr: an operator (`a ### b`, `OPERATOR(s.###)`, `a ### ANY (...)`).
                if let (Some(Value::Array(names)), true) = (
                    m.get("name"),
                    m.contains_key("lexpr") && m.contains_key("rexpr") && m.contains_key("kind"),
                ) {
                    if let Some(op) = names.iter().filter_map(json_name).next_back() {
                        self.operators.push(op.to_owned());
                    }
                }
                // RangeVar, as a node or as a typed field (INSERT INTO, COPY, ...).
                if let (Some(Value::String(rel)), true) =
                    (m.get("relname"), m.contains_key("relpersistence"))
                {
                    let schema = m
                        .get("schemaname")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned);
                    self.relations.push((schema, rel.clone()));
                }
                for v in m.values() {
                    self.walk(v);
                }
            }
            Value::Array(a) => {
                for v in a {
                    self.walk(v);
                }
            }
            _ => {}
        }
    }
}

fn json_name(v: &Value) -> Option<&str> {
    v.get("node")?.get("String")?.get("sval")?.as_str()
}

/// ColumnRefs and whether a nested statement occurs, in a subtree the typed analysis does not
/// handle.
fn json_refs(v: &Value, refs: &mut Vec<Vec<Field>>, has_query: &mut bool) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "ColumnRef" {
                    if let Some(Value::Array(fields)) = v.get("fields") {
                        refs.push(
                            fields
                                .iter()
                                .map(|f| match json_name(f) {
                                    Some(n) => Field::Name(n.to_owned()),
                                    None => Field::Star,
                                })
                                .collect(),
                        );
                    }
                } else if k.ends_with("Stmt") {
                    *has_query = true;
                }
                json_refs(v, refs, has_query);
            }
        }
        Value::Array(a) => {
            for v in a {
                json_refs(v, refs, has_query);
            }
        }
        _ => {}
    }
}

fn str_of(n: &pb::Node) -> Option<&str> {
    match &n.node {
        Some(N::String(s)) => Some(&s.sval),
        _ => None,
    }
}

fn names(list: &[pb::Node]) -> Vec<String> {
    list.iter().filter_map(str_of).map(str::to_owned).collect()
}

fn fields(c: &pb::ColumnRef) -> Vec<Field> {
    c.fields
        .iter()
        .map(|f| match &f.node {
            Some(N::String(s)) => Field::Name(s.sval.clone()),
            _ => Field::Star,
        })
        .collect()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A list of identifiers as PostgreSQL reads `search_path` (`SplitIdentifierString`): separated
/// by commas, unquoted names folded to lower case (ASCII, as PostgreSQL folds them in UTF-8),
/// quoted ones kept as written with `""` for a quote. `None` when it is not such a list.
fn split_identifiers(text: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut chars = text.chars().peekable();
    let skip_space = |c: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while c.next_if(|x| x.is_whitespace()).is_some() {}
    };
    skip_space(&mut chars);
    if chars.peek().is_none() {
        return Some(names);
    }
    loop {
        let mut name = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' if chars.next_if_eq(&'"').is_some() => name.push('"'),
                    '"' => break,
                    c => name.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|x| *x != ',' && !x.is_whitespace()) {
                name.push(c.to_ascii_lowercase());
            }
            if name.is_empty() {
                return None;
            }
        }
        names.push(name);
        skip_space(&mut chars);
        match chars.next() {
            None => return Some(names),
            Some(',') => skip_space(&mut chars),
            Some(_) => return None,
        }
    }
}

/// `schema.name` or `name`, a part that holds a dot or a double quote written quoted (so that
/// `"pg_catalog.x"`, one name, is not read as `pg_catalog`.`x`).
fn rel_label(rv: &pb::RangeVar) -> String {
    let part = |s: &str| {
        if s.contains(['.', '"']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    if rv.schemaname.is_empty() {
        part(&rv.relname)
    } else {
        format!("{}.{}", part(&rv.schemaname), part(&rv.relname))
    }
}

fn alias_names(alias: Option<&pb::Alias>) -> Vec<String> {
    alias.map(|a| names(&a.colnames)).unwrap_or_default()
}

/// The name PostgreSQL gives an unnamed output column (FigureColname), for the common cases;
/// elsewhere `?column?`. A wrong guess only makes later references to it fail closed.
fn figure_colname(node: &pb::Node) -> String {
    let unnamed = || "?column?".to_owned();
    match &node.node {
        Some(N::ColumnRef(c)) => match fields(c).last() {
            Some(Field::Name(n)) => n.clone(),
            _ => unnamed(),
        },
        Some(N::FuncCall(f)) => f
            .funcname
            .last()
            .and_then(str_of)
            .map_or_else(unnamed, str::to_owned),
        Some(N::TypeCast(t)) => {
            let inner = t.arg.as_deref().map_or_else(unnamed, figure_colname);
            if inner != "?column?" {
                inner
            } else {
                t.type_name
                    .as_ref()
                    .and_then(|n| n.names.last())
                    .and_then(str_of)
                    .map_or_else(unnamed, str::to_owned)
            }
        }
        Some(N::AIndirection(i)) => match i.indirection.iter().rev().find_map(str_of) {
            Some(n) => n.to_owned(),
            None => i.arg.as_deref().map_or_else(unnamed, figure_colname),
        },
        Some(N::CaseExpr(_)) => "case".to_owned(),
        Some(N::AArrayExpr(_)) => "array".to_owned(),
        Some(N::RowExpr(_)) => "row".to_owned(),
        Some(N::CoalesceExpr(_)) => "coalesce".to_owned(),
        Some(N::MinMaxExpr(m)) if m.op == pb::MinMaxOp::IsLeast as i32 => "least".to_owned(),
        Some(N::MinMaxExpr(_)) => "greatest".to_owned(),
        Some(N::SubLink(s)) if s.sub_link_type == pb::SubLinkType::ExistsSublink as i32 => {
            "exists".to_owned()
        }
        Some(N::SubLink(s)) if s.sub_link_type == pb::SubLinkType::ArraySublink as i32 => {
            "array".to_owned()
        }
        Some(N::SubLink(s)) => match s.subselect.as_deref().and_then(|q| q.node.as_ref()) {
            Some(N::SelectStmt(q)) => match q.target_list.first().and_then(|t| t.node.as_ref()) {
                Some(N::ResTarget(rt)) if !rt.name.is_empty() => rt.name.clone(),
                Some(N::ResTarget(rt)) => rt.val.as_deref().map_or_else(unnamed, figure_colname),
                _ => unnamed(),
            },
            _ => unnamed(),
        },
        _ => unnamed(),
    }
}

fn is_setop(s: &pb::SelectStmt) -> bool {
    s.op > pb::SetOperation::SetopNone as i32
}

/// COPY's `ENCODING` option when it names anything but UTF8.
fn copy_encoding(options: &[pb::Node]) -> Option<String> {
    options.iter().find_map(|o| {
        let Some(N::DefElem(d)) = &o.node else {
            return None;
        };
        if !d.defname.eq_ignore_ascii_case("encoding") {
            return None;
        }
        let value = match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
            Some(N::String(s)) => s.sval.clone(),
            _ => "?".to_string(),
        };
        (!is_utf8_name(&value)).then_some(value)
    })
}

/// Whether an encoding name is PostgreSQL's UTF8 (it ignores case and punctuation in them).
pub(crate) fn is_utf8_name(name: &str) -> bool {
    let clean: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    clean == "utf8" || clean == "unicode"
}

fn copy_options(options: &[pb::Node]) -> CopyOptions {
    let mut format = CopyFormat::Text;
    let (mut delimiter, mut null, mut quote, mut escape, mut header) =
        (None, None, None, None, false);
    for o in options {
        let Some(N::DefElem(d)) = &o.node else {
            continue;
        };
        let arg = d.arg.as_deref().and_then(|a| a.node.as_ref());
        let text = match arg {
            Some(N::String(s)) => Some(s.sval.as_str()),
            _ => None,
        };
        let byte = text.and_then(|s| s.bytes().next());
        match d.defname.as_str() {
            "format" => {
                format = match text {
                    Some("csv") => CopyFormat::Csv,
                    Some("binary") => CopyFormat::Binary,
                    _ => CopyFormat::Text,
                }
            }
            "delimiter" => delimiter = byte,
            "null" => null = text.map(|s| s.as_bytes().to_vec()),
            "quote" => quote = byte,
            "escape" => escape = byte,
            "header" => {
                header = match arg {
                    None => true,
                    Some(N::Boolean(b)) => b.boolval,
                    Some(N::Integer(i)) => {
                        crate::policy::sql::constants::read();
                        i.ival != 0
                    }
                    Some(N::String(s)) => {
                        !matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "0")
                    }
                    Some(_) => true,
                }
            }
            _ => {}
        }
    }
    let csv = format == CopyFormat::Csv;
    let quote = quote.unwrap_or(b'"');
    CopyOptions {
        format,
        delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
        null: null.unwrap_or_else(|| if csv { Vec::new() } else { b"\\N".to_vec() }),
        quote,
        escape: escape.unwrap_or(quote),
        header,
    }
}

impl Analyzer<'_> {
    fn refuse(&mut self, why: Refusal) {
        if self.refuse.is_none() {
            self.refuse = Some(why);
        }
    }

    /// Records a resolved reference at `level`.
    fn note(&mut self, level: usize, t: Taint) -> Taint {
        self.reads = self.reads.max(t);
        for (base, acc) in &mut self.corr {
            if level < *base {
                *acc = (*acc).max(t);
            }
        }
        t
    }

    /// A reference that cannot be resolved: as if it were any column of any relation in scope,
    /// at any level.
    fn uncertain(&mut self, scope: &Scope<'_>, t: Taint) -> Taint {
        let all = scope.all_taint();
        self.note(0, t.max(all))
    }

    fn check_functions(&mut self, functions: &[Vec<String>]) {
        for f in functions {
            if let Some(name) = f.last() {
                self.check_function(name);
            }
        }
    }

    /// A call of a function named `name` (any schema): refused when its body may read masked
    /// data, or when it may store or emit masked arguments (see the module docs).
    fn check_function(&mut self, name: &str) {
        if !self.cat.has_masks() {
            return;
        }
        let names_masked = self.fallback.is_masked();
        match self.cat.functions.get(name) {
            Some(FunctionRisk::ReadsMasked) => self.refuse(Refusal::OpaqueFunction(name.into())),
            Some(FunctionRisk::Opaque) if names_masked => {
                self.refuse(Refusal::OpaqueFunction(name.into()))
            }
            _ => {}
        }
        if reads_data(name) {
            self.refuse(Refusal::DataReader(name.into()));
        }
        if names_masked && SIDE_EFFECTS.contains(&name) {
            self.refuse(Refusal::SideEffect(name.into()));
        }
    }

    /// `rel.name` or `(rel).name` where `name` is no column of `rel`: PostgreSQL calls the
    /// function `name(rel)` (attribute notation), if there is one.
    fn attribute_call(&mut self, name: &str) {
        if self.cat.functions.contains_key(name) || reads_data(name) {
            self.check_function(name);
        }
    }

    fn masked_relation(&self, rv: Option<&pb::RangeVar>) -> bool {
        rv.and_then(|rv| {
            self.cat
                .shape(non_empty(&rv.schemaname).as_deref(), &rv.relname)
        })
        .is_some_and(|s| s.whole().is_masked())
    }

    /// Masked data in a result that is about to be stored or shown elsewhere.
    fn shape_masked(&self, shape: &Shape) -> bool {
        shape.whole().is_masked() || (!shape.complete && self.fallback.is_masked())
    }

    fn top(&mut self, stmt: &pb::Node) -> Out {
        let Some(n) = &stmt.node else {
            return Out::NoRows;
        };
        let root = Scope::ROOT;
        let has_masks = self.cat.has_masks();
        if has_masks {
            if let Some(r) = code_refusal(n) {
                self.refuse(r);
                return Out::NoRows;
            }
        }
        match n {
            N::SelectStmt(_)
            | N::InsertStmt(_)
            | N::UpdateStmt(_)
            | N::DeleteStmt(_)
            | N::MergeStmt(_) => Out::Rows(self.query(stmt, &root)),
            N::CopyStmt(c) => self.copy(c),
            N::ExplainStmt(e) => {
                // The plan is text without data values; the statement still runs under
                // ANALYZE, so what it would do is checked.
                if let Some(q) = e.query.as_deref() {
                    let _ = self.top(q);
                }
                self.named = None;
                self.copy = None;
                Out::Rows(Shape::complete(vec![Col::new("QUERY PLAN", Taint::Clean)]))
            }
            N::DeclareCursorStmt(d) => {
                let out = self.inner(d.query.as_deref());
                self.named = Some(Named::DeclareCursor(d.portalname.clone()));
                out
            }
            N::PrepareStmt(p) => {
                let out = self.inner(p.query.as_deref());
                self.named = Some(Named::Prepare(p.name.clone()));
                out
            }
            N::ExecuteStmt(e) => {
                for p in &e.params {
                    self.expr(p, &root);
                }
                self.named = Some(Named::Execute(e.name.clone()));
                self.by_name_only()
            }
            N::FetchStmt(f) if f.ismove => Out::NoRows,
            N::FetchStmt(f) => {
                self.named = Some(Named::Fetch(f.portalname.clone()));
                self.by_name_only()
            }
            N::CreateTableAsStmt(c) => {
                let into = c
                    .into
                    .as_ref()
                    .and_then(|i| i.rel.as_ref())
                    .map_or_else(|| "a new table".to_owned(), rel_label);
                let query = c.query.as_deref();
                if let Some(N::ExecuteStmt(_)) = query.and_then(|q| q.node.as_ref()) {
                    if has_masks {
                        self.refuse(Refusal::CopiesMasked(into));
                    }
                } else if let Out::Rows(shape) = self.inner(query) {
                    if self.shape_masked(&shape) {
                        self.refuse(Refusal::CopiesMasked(into));
                    }
                }
                Out::NoRows
            }
            N::ViewStmt(v) => {
                let name = v.view.as_ref().map_or_else(String::new, rel_label);
                if let Out::Rows(shape) = self.inner(v.query.as_deref()) {
                    if self.shape_masked(&shape) {
                        self.refuse(Refusal::ViewOverMasked(name));
                    }
                }
                Out::NoRows
            }
            N::RenameStmt(r) => {
                if self.masked_relation(r.relation.as_ref()) {
                    self.refuse(Refusal::AltersMasked(
                        r.relation.as_ref().map_or_else(String::new, rel_label),
                    ));
                } else if r.rename_type == pb::ObjectType::ObjectSchema as i32
                    && self.cat.schema_has_masks(&r.subname)
                {
                    self.refuse(Refusal::AltersMasked(format!("schema {}", r.subname)));
                } else if let Some(f) = self.renamed_function(r) {
                    self.refuse(Refusal::AltersMasked(format!("function {f}")));
                }
                Out::NoRows
            }
            N::AlterTableStmt(a) if self.masked_relation(a.relation.as_ref()) => {
                self.refuse(Refusal::AltersMasked(
                    a.relation.as_ref().map_or_else(String::new, rel_label),
                ));
                Out::NoRows
            }
            N::AlterObjectSchemaStmt(a) if self.masked_relation(a.relation.as_ref()) => {
                self.refuse(Refusal::AltersMasked(
                    a.relation.as_ref().map_or_else(String::new, rel_label),
                ));
                Out::NoRows
            }
            N::CallStmt(c) => {
                // OUT parameters come back as one row; their number is the procedure's.
                let mut t = Taint::Clean;
                if let Some(f) = c.funccall.as_deref() {
                    t = self.func_call(f, &root);
                }
                Out::Unknown(t)
            }
            N::VariableShowStmt(s) if s.name == "all" => Out::Rows(Shape::complete(vec![
                Col::new("name", Taint::Clean),
                Col::new("setting", Taint::Clean),
                Col::new("description", Taint::Clean),
            ])),
            N::VariableShowStmt(s) => {
                Out::Rows(Shape::complete(vec![Col::new(&s.name, Taint::Clean)]))
            }
            N::TransactionStmt(_)
            | N::VariableSetStmt(_)
            | N::ClosePortalStmt(_)
            | N::DeallocateStmt(_)
            | N::DiscardStmt(_)
            | N::ListenStmt(_)
            | N::UnlistenStmt(_)
            | N::NotifyStmt(_)
            | N::LockStmt(_) => Out::NoRows,
            _ => Out::Unknown(self.fallback),
        }
    }

    fn inner(&mut self, q: Option<&pb::Node>) -> Out {
        match q {
            Some(q) => self.top(q),
            None => Out::NoRows,
        }
    }

    /// EXECUTE and FETCH: the columns are those of a statement seen earlier.
    fn by_name_only(&mut self) -> Out {
        let t = Taint::of(self.cat.strongest());
        self.reads = self.reads.max(t);
        Out::Unknown(t)
    }

    fn renamed_function(&self, r: &pb::RenameStmt) -> Option<String> {
        let Some(N::ObjectWithArgs(o)) = r.object.as_deref().and_then(|o| o.node.as_ref()) else {
            return None;
        };
        let name = o.objname.last().and_then(str_of)?;
        self.cat
            .functions
            .contains_key(name)
            .then(|| name.to_owned())
    }

    fn copy(&mut self, c: &pb::CopyStmt) -> Out {
        if c.is_from {
            return Out::NoRows;
        }
        let root = Scope::ROOT;
        let shape = if let Some(q) = c.query.as_deref() {
            self.query(q, &root)
        } else if let Some(rv) = &c.relation {
            let full = self.table_shape(rv);
            let shape = if c.attlist.is_empty() {
                full
            } else {
                Shape::complete(
                    names(&c.attlist)
                        .iter()
                        .map(|n| {
                            let t = full.find(n).unwrap_or_else(|| full.whole());
                            Col::new(n, t)
                        })
                        .collect(),
                )
            };
            self.note(0, shape.whole());
            shape
        } else {
            Shape::unknown(self.fallback)
        };
        let options = copy_options(&c.options);
        let masked = self.shape_masked(&shape);
        if !c.filename.is_empty() || c.is_program {
            if masked {
                self.refuse(Refusal::ServerCopy);
            }
            return Out::NoRows;
        }
        if masked && options.format == CopyFormat::Binary {
            self.refuse(Refusal::BinaryCopy);
        }
        if let Some(encoding) = copy_encoding(&c.options).filter(|_| masked) {
            // In SJIS, BIG5 and their kind a character can hold the delimiter's or the escape's
            // byte: vigil could not split the rows it masks.
            self.refuse(Refusal::CopyEncoding(encoding));
        }
        self.copy = Some(options);
        Out::Rows(shape)
    }

    // ----- queries -----

    fn query(&mut self, node: &pb::Node, parent: &Scope<'_>) -> Shape {
        self.depth += 1;
        let out = if self.depth > MAX_DEPTH {
            self.too_deep = true;
            Shape::unknown(self.fallback)
        } else {
            match &node.node {
                Some(N::SelectStmt(s)) => self.select(s, parent),
                Some(N::InsertStmt(s)) => self.insert(s, parent),
                Some(N::UpdateStmt(s)) => self.update(s, parent),
                Some(N::DeleteStmt(s)) => self.delete(s, parent),
                Some(N::MergeStmt(s)) => self.merge(s, parent),
                _ => {
                    let t = self.generic(node, parent);
                    Shape::unknown(t.max(self.fallback))
                }
            }
        };
        self.depth -= 1;
        out
    }

    fn select(&mut self, s: &pb::SelectStmt, parent: &Scope<'_>) -> Shape {
        let level = parent.level + 1;
        let ctes = self.with_clause(s.with_clause.as_ref(), parent, level);
        let out = if is_setop(s) {
            let holder = Scope {
                items: &[],
                ctes: &ctes,
                parent: Some(parent),
                level,
            };
            let left = match s.larg.as_deref() {
                Some(l) => self.select(l, &holder),
                None => Shape::unknown(self.fallback),
            };
            let right = match s.rarg.as_deref() {
                Some(r) => self.select(r, &holder),
                None => Shape::unknown(self.fallback),
            };
            let out = Shape::set_operation(left, right);
            let result = [Item {
                schema: None,
                name: None,
                rel_visible: false,
                cols_visible: true,
                shape: out.clone(),
            }];
            let sc = Scope {
                items: &result,
                ctes: &ctes,
                parent: Some(parent),
                level,
            };
            self.order_by(&s.sort_clause, &sc, &out);
            self.opt(s.limit_offset.as_deref(), &sc);
            self.opt(s.limit_count.as_deref(), &sc);
            out
        } else if !s.values_lists.is_empty() {
            let sc = Scope {
                items: &[],
                ctes: &ctes,
                parent: Some(parent),
                level,
            };
            let out = self.values(&s.values_lists, &sc);
            self.order_by(&s.sort_clause, &sc, &out);
            out
        } else {
            let mut items: Vec<Item> = Vec::new();
            for f in &s.from_clause {
                let (new, _) = self.range_item(f, &items, &ctes, parent, level);
                items.extend(new);
            }
            let sc = Scope {
                items: &items,
                ctes: &ctes,
                parent: Some(parent),
                level,
            };
            self.opt(s.where_clause.as_deref(), &sc);
            self.opt(s.having_clause.as_deref(), &sc);
            self.list(&s.window_clause, &sc);
            self.list(&s.distinct_clause, &sc);
            self.opt(s.limit_offset.as_deref(), &sc);
            self.opt(s.limit_count.as_deref(), &sc);
            let out = self.target_list(&s.target_list, &sc);
            self.group_by(&s.group_clause, &sc, &out);
            self.order_by(&s.sort_clause, &sc, &out);
            out
        };
        if let Some(into) = &s.into_clause {
            if self.shape_masked(&out) {
                let name = into.rel.as_ref().map_or_else(String::new, rel_label);
                self.refuse(Refusal::CopiesMasked(name));
            }
        }
        out
    }

    fn with_clause(
        &mut self,
        with: Option<&pb::WithClause>,
        parent: &Scope<'_>,
        level: usize,
    ) -> Vec<Cte> {
        let mut ctes: Vec<Cte> = Vec::new();
        let Some(with) = with else {
            return ctes;
        };
        for c in &with.ctes {
            let Some(N::CommonTableExpr(cte)) = &c.node else {
                continue;
            };
            let aliases = names(&cte.aliascolnames);
            let Some(q) = cte.ctequery.as_deref() else {
                continue;
            };
            let mut shape = if with.recursive {
                self.recursive_cte(&cte.ctename, &aliases, q, &ctes, parent, level)
            } else {
                let sc = Scope {
                    items: &[],
                    ctes: &ctes,
                    parent: Some(parent),
                    level,
                };
                let mut shape = self.query(q, &sc);
                shape.rename(&aliases);
                shape
            };
            // SEARCH and CYCLE add columns; CYCLE's path holds whole rows.
            if cte.search_clause.is_some() || cte.cycle_clause.is_some() {
                shape.rest = shape.whole();
                shape.complete = false;
            }
            ctes.push(Cte {
                name: cte.ctename.clone(),
                shape,
            });
        }
        ctes
    }

    /// A CTE that may reference itself: its columns feed themselves, so analyze until the
    /// taints stop growing.
    fn recursive_cte(
        &mut self,
        name: &str,
        aliases: &[String],
        q: &pb::Node,
        earlier: &[Cte],
        parent: &Scope<'_>,
        level: usize,
    ) -> Shape {
        const ROUNDS: usize = 16;
        let mut current = Shape {
            cols: aliases.iter().map(|n| Col::new(n, Taint::Clean)).collect(),
            complete: false,
            rest: Taint::Clean,
        };
        for round in 0..ROUNDS {
            let mut visible = earlier.to_vec();
            visible.push(Cte {
                name: name.to_owned(),
                shape: current.clone(),
            });
            let sc = Scope {
                items: &[],
                ctes: &visible,
                parent: Some(parent),
                level,
            };
            let mut next = self.query(q, &sc);
            next.rename(aliases);
            let next = if round == 0 {
                next
            } else {
                current.grow(&next)
            };
            if next == current {
                return current;
            }
            current = next;
        }
        Shape::unknown(current.whole())
    }

    fn values(&mut self, rows: &[pb::Node], scope: &Scope<'_>) -> Shape {
        let mut cols: Vec<Col> = Vec::new();
        let mut width = None;
        let mut ragged = false;
        for row in rows {
            let exprs: &[pb::Node] = match &row.node {
                Some(N::List(l)) => &l.items,
                _ => std::slice::from_ref(row),
            };
            if *width.get_or_insert(exprs.len()) != exprs.len() {
                ragged = true;
            }
            for (i, e) in exprs.iter().enumerate() {
                let t = self.expr(e, scope);
                match cols.get_mut(i) {
                    Some(c) => c.taint = c.taint.max(t),
                    None => cols.push(Col {
                        name: format!("column{}", i + 1),
                        taint: t,
                    }),
                }
            }
        }
        let mut out = Shape::complete(cols);
        if ragged {
            out = Shape::unknown(out.whole());
        }
        out
    }

    fn target_list(&mut self, list: &[pb::Node], scope: &Scope<'_>) -> Shape {
        let mut out = Shape::complete(Vec::new());
        for n in list {
            let Some(N::ResTarget(rt)) = &n.node else {
                let t = self.expr(n, scope);
                out.push("?column?".to_owned(), t);
                continue;
            };
            let Some(val) = rt.val.as_deref() else {
                continue;
            };
            if let Some(shape) = self.star(val, scope) {
                out.append(shape);
                continue;
            }
            let t = self.expr(val, scope);
            let name = if rt.name.is_empty() {
                figure_colname(val)
            } else {
                rt.name.clone()
            };
            out.push(name, t);
        }
        out
    }

    /// `*`, `t.*` and `(expr).*` in a target list: the columns they expand to.
    fn star(&mut self, val: &pb::Node, scope: &Scope<'_>) -> Option<Shape> {
        match &val.node {
            Some(N::ColumnRef(c)) => {
                let f = fields(c);
                let (Field::Star, quals) = f.split_last()? else {
                    return None;
                };
                let quals: Vec<&str> = quals
                    .iter()
                    .filter_map(|q| match q {
                        Field::Name(n) => Some(n.as_str()),
                        Field::Star => None,
                    })
                    .collect();
                let found = match quals.as_slice() {
                    [] => {
                        let mut shape = Shape::complete(Vec::new());
                        for it in scope.items.iter().filter(|i| i.cols_visible) {
                            shape.append(it.shape.clone());
                        }
                        Some((shape, scope.level))
                    }
                    [rel] => find_item(scope, None, rel).map(|(i, l)| (i.shape.clone(), l)),
                    [.., schema, rel] => {
                        find_item(scope, Some(schema), rel).map(|(i, l)| (i.shape.clone(), l))
                    }
                };
                Some(match found {
                    Some((shape, level)) => {
                        self.note(level, shape.whole());
                        shape
                    }
                    None => Shape::unknown(self.uncertain(scope, Taint::Clean)),
                })
            }
            Some(N::AIndirection(i)) => {
                let Some(N::AStar(_)) = i.indirection.last().and_then(|n| n.node.as_ref()) else {
                    return None;
                };
                // (u).* where u is a relation: its columns. Otherwise a composite value of
                // unknown type.
                if let (Some(N::ColumnRef(c)), 1) = (
                    i.arg.as_deref().and_then(|a| a.node.as_ref()),
                    i.indirection.len(),
                ) {
                    if let [Field::Name(n)] = fields(c).as_slice() {
                        if !self.is_column(n, scope) {
                            if let Some((it, level)) = find_item(scope, None, n) {
                                let shape = it.shape.clone();
                                self.note(level, shape.whole());
                                return Some(shape);
                            }
                        }
                    }
                }
                let t = self.expr(val, scope);
                Some(Shape::unknown(t))
            }
            _ => None,
        }
    }

    fn order_by(&mut self, list: &[pb::Node], scope: &Scope<'_>, out: &Shape) {
        for n in list {
            let inner = match &n.node {
                Some(N::SortBy(s)) => s.node.as_deref(),
                _ => Some(n),
            };
            let Some(inner) = inner else {
                continue;
            };
            // A bare name in ORDER BY means an output column first.
            if let Some(N::ColumnRef(c)) = &inner.node {
                if let [Field::Name(name)] = fields(c).as_slice() {
                    if let Some(t) = out.find(name) {
                        self.note(scope.level, t);
                        continue;
                    }
                }
            }
            self.expr(inner, scope);
        }
    }

    fn group_by(&mut self, list: &[pb::Node], scope: &Scope<'_>, out: &Shape) {
        for n in list {
            // A bare name in GROUP BY means an input column first, then an output column.
            if let Some(N::ColumnRef(c)) = &n.node {
                if let [Field::Name(name)] = fields(c).as_slice() {
                    if !self.is_column(name, scope) {
                        if let Some(t) = out.find(name) {
                            self.note(scope.level, t);
                            continue;
                        }
                    }
                }
            }
            self.expr(n, scope);
        }
    }

    /// Is `name` a known column of an item at the innermost level?
    fn is_column(&self, name: &str, scope: &Scope<'_>) -> bool {
        scope
            .items
            .iter()
            .any(|i| i.cols_visible && i.shape.find(name).is_some())
    }

    // ----- FROM -----

    fn range_item(
        &mut self,
        node: &pb::Node,
        prev: &[Item],
        ctes: &[Cte],
        parent: &Scope<'_>,
        level: usize,
    ) -> (Vec<Item>, Shape) {
        self.depth += 1;
        let out = if self.depth > MAX_DEPTH {
            self.too_deep = true;
            let shape = Shape::unknown(self.fallback);
            (Vec::new(), shape)
        } else {
            self.range_item_inner(node, prev, ctes, parent, level)
        };
        self.depth -= 1;
        out
    }

    fn range_item_inner(
        &mut self,
        node: &pb::Node,
        prev: &[Item],
        ctes: &[Cte],
        parent: &Scope<'_>,
        level: usize,
    ) -> (Vec<Item>, Shape) {
        // Functions in FROM and LATERAL subqueries see the items before them.
        let lateral = Scope {
            items: prev,
            ctes,
            parent: Some(parent),
            level,
        };
        match &node.node {
            Some(N::RangeVar(rv)) => {
                let mut shape = self.range_var(rv, &lateral);
                shape.rename(&alias_names(rv.alias.as_ref()));
                let (schema, name) = match &rv.alias {
                    Some(a) => (None, a.aliasname.clone()),
                    None => (non_empty(&rv.schemaname), rv.relname.clone()),
                };
                (vec![Item::named(schema, name, shape.clone())], shape)
            }
            Some(N::RangeSubselect(r)) => {
                let plain = Scope {
                    items: &[],
                    ctes,
                    parent: Some(parent),
                    level,
                };
                let sc = if r.lateral { &lateral } else { &plain };
                let mut shape = match r.subquery.as_deref() {
                    Some(q) => self.query(q, sc),
                    None => Shape::unknown(self.fallback),
                };
                shape.rename(&alias_names(r.alias.as_ref()));
                let item = Item {
                    schema: None,
                    name: r.alias.as_ref().map(|a| a.aliasname.clone()),
                    rel_visible: r.alias.is_some(),
                    cols_visible: true,
                    shape: shape.clone(),
                };
                (vec![item], shape)
            }
            Some(N::RangeFunction(f)) => self.range_function(f, &lateral),
            Some(N::JoinExpr(j)) => self.join(j, prev, ctes, parent, level),
            Some(N::RangeTableSample(t)) => {
                self.list(&t.args, &lateral);
                self.opt(t.repeatable.as_deref(), &lateral);
                match t.relation.as_deref() {
                    Some(r) => self.range_item(r, prev, ctes, parent, level),
                    None => (Vec::new(), Shape::unknown(self.fallback)),
                }
            }
            other => {
                // XMLTABLE, JSON_TABLE: values derive from the expressions inside.
                let t = self.generic(node, &lateral);
                let alias = match other {
                    Some(N::RangeTableFunc(f)) => f.alias.as_ref(),
                    Some(N::JsonTable(f)) => f.alias.as_ref(),
                    _ => None,
                };
                let shape = Shape::unknown(t);
                let item = Item {
                    schema: None,
                    name: alias.map(|a| a.aliasname.clone()),
                    rel_visible: alias.is_some(),
                    cols_visible: true,
                    shape: shape.clone(),
                };
                (vec![item], shape)
            }
        }
    }

    fn range_var(&mut self, rv: &pb::RangeVar, scope: &Scope<'_>) -> Shape {
        if rv.schemaname.is_empty() {
            if let Some(shape) = find_cte(scope, &rv.relname) {
                return shape.clone();
            }
        }
        self.table_shape(rv)
    }

    fn table_shape(&mut self, rv: &pb::RangeVar) -> Shape {
        match self
            .cat
            .shape(non_empty(&rv.schemaname).as_deref(), &rv.relname)
        {
            Some(shape) => shape,
            None => {
                self.unknown.insert(rel_label(rv));
                Shape::unknown(Taint::Clean)
            }
        }
    }

    fn range_function(&mut self, f: &pb::RangeFunction, scope: &Scope<'_>) -> (Vec<Item>, Shape) {
        let mut t = Taint::Clean;
        let mut defs: Vec<String> = coldef_names(&f.coldeflist);
        let mut fname: Option<String> = None;
        for item in &f.functions {
            match &item.node {
                // ROWS FROM items: [call, column definitions]
                Some(N::List(l)) => {
                    if let Some(call) = l.items.first() {
                        t = t.max(self.expr(call, scope));
                        fname.get_or_insert_with(|| figure_colname(call));
                    }
                    if let Some(Some(N::List(cd))) = l.items.get(1).map(|n| &n.node) {
                        defs.extend(coldef_names(&cd.items));
                    }
                }
                _ => t = t.max(self.expr(item, scope)),
            }
        }
        let aliases = alias_names(f.alias.as_ref());
        let alias = f.alias.as_ref().map(|a| a.aliasname.clone());
        let mut shape = if !defs.is_empty() {
            let mut s = Shape::complete(defs.iter().map(|n| Col::new(n, t)).collect());
            if f.ordinality {
                s.push("ordinality".to_owned(), Taint::Clean);
            }
            s.rename(&aliases);
            s
        } else {
            // Without a column definition list the function's columns are unknown; a scalar
            // function's one column is named after the alias or the function.
            let known = if aliases.is_empty() {
                vec![alias.clone().or_else(|| fname.clone()).unwrap_or_default()]
            } else {
                aliases
            };
            Shape {
                cols: known.iter().map(|n| Col::new(n, t)).collect(),
                complete: false,
                rest: t,
            }
        };
        if f.ordinality && defs.is_empty() {
            shape.push("ordinality".to_owned(), Taint::Clean);
        }
        let name = alias.or(fname);
        let item = Item {
            schema: None,
            rel_visible: name.is_some(),
            name,
            cols_visible: true,
            shape: shape.clone(),
        };
        (vec![item], shape)
    }

    fn join(
        &mut self,
        j: &pb::JoinExpr,
        prev: &[Item],
        ctes: &[Cte],
        parent: &Scope<'_>,
        level: usize,
    ) -> (Vec<Item>, Shape) {
        let (litems, lshape) = match j.larg.as_deref() {
            Some(l) => self.range_item(l, prev, ctes, parent, level),
            None => (Vec::new(), Shape::unknown(self.fallback)),
        };
        let mut acc: Vec<Item> = prev.to_vec();
        acc.extend(litems.iter().cloned());
        let (ritems, rshape) = match j.rarg.as_deref() {
            Some(r) => self.range_item(r, &acc, ctes, parent, level),
            None => (Vec::new(), Shape::unknown(self.fallback)),
        };
        let both_known = lshape.complete && rshape.complete;
        let using: Vec<String> = if j.is_natural {
            if both_known {
                lshape
                    .cols
                    .iter()
                    .filter(|c| rshape.find(&c.name).is_some())
                    .map(|c| c.name.clone())
                    .collect()
            } else {
                Vec::new()
            }
        } else {
            names(&j.using_clause)
        };
        let mut shape = join_shape(&lshape, &rshape, &using);
        if j.is_natural && !both_known {
            shape.complete = false;
        }
        if let Some(q) = j.quals.as_deref() {
            let mut all = acc;
            all.extend(ritems.iter().cloned());
            let sc = Scope {
                items: &all,
                ctes,
                parent: Some(parent),
                level,
            };
            self.expr(q, &sc);
        }
        let mut out = Vec::new();
        match &j.alias {
            Some(a) => {
                // An alias hides the joined relations' names.
                shape.rename(&names(&a.colnames));
                out.push(Item::named(None, a.aliasname.clone(), shape.clone()));
            }
            None => {
                for mut it in litems.into_iter().chain(ritems) {
                    it.cols_visible = false;
                    out.push(it);
                }
                out.push(Item {
                    schema: None,
                    name: None,
                    rel_visible: false,
                    cols_visible: true,
                    shape: shape.clone(),
                });
            }
        }
        if let Some(ua) = &j.join_using_alias {
            let merged = Shape::complete(shape.cols.iter().take(using.len()).cloned().collect());
            out.push(Item {
                schema: None,
                name: Some(ua.aliasname.clone()),
                rel_visible: true,
                cols_visible: false,
                shape: merged,
            });
        }
        (out, shape)
    }

    // ----- data-modifying statements -----

    fn target_item(&mut self, rv: &pb::RangeVar) -> Item {
        let shape = self.table_shape(rv);
        match &rv.alias {
            Some(a) => Item::named(None, a.aliasname.clone(), shape),
            None => Item::named(non_empty(&rv.schemaname), rv.relname.clone(), shape),
        }
    }

    /// Values written into a relation must not derive from masked data: it would be readable
    /// there unmasked (or masked differently for other roles).
    fn written(&mut self, t: Taint, rv: &pb::RangeVar) {
        if t.is_masked() {
            self.refuse(Refusal::CopiesMasked(rel_label(rv)));
        }
    }

    fn insert(&mut self, s: &pb::InsertStmt, parent: &Scope<'_>) -> Shape {
        let level = parent.level + 1;
        let ctes = self.with_clause(s.with_clause.as_ref(), parent, level);
        let Some(rv) = &s.relation else {
            return Shape::unknown(self.fallback);
        };
        let target = self.target_item(rv);
        let sc = Scope {
            items: &[],
            ctes: &ctes,
            parent: Some(parent),
            level,
        };
        let source = match s.select_stmt.as_deref() {
            Some(q) => self.query(q, &sc),
            None => Shape::complete(Vec::new()),
        };
        let source_taint = if source.complete {
            source.whole()
        } else {
            source.whole().max(self.fallback)
        };
        self.written(source_taint, rv);
        let excluded = Item {
            schema: None,
            name: Some("excluded".to_owned()),
            rel_visible: true,
            cols_visible: false,
            shape: Shape::unknown(source_taint),
        };
        let items = [target, excluded];
        let sc = Scope {
            items: &items,
            ctes: &ctes,
            parent: Some(parent),
            level,
        };
        if let Some(oc) = &s.on_conflict_clause {
            let t = self.assignments(&oc.target_list, &sc);
            self.written(t, rv);
            self.opt(oc.where_clause.as_deref(), &sc);
        }
        let returning = Scope {
            items: items.get(..1).unwrap_or_default(),
            ctes: &ctes,
            parent: Some(parent),
            level,
        };
        self.target_list(&s.returning_list, &returning)
    }

    fn update(&mut self, s: &pb::UpdateStmt, parent: &Scope<'_>) -> Shape {
        let level = parent.level + 1;
        let ctes = self.with_clause(s.with_clause.as_ref(), parent, level);
        let Some(rv) = &s.relation else {
            return Shape::unknown(self.fallback);
        };
        let mut items = vec![self.target_item(rv)];
        for f in &s.from_clause {
            let (new, _) = self.range_item(f, &items, &ctes, parent, level);
            items.extend(new);
        }
        let sc = Scope {
            items: &items,
            ctes: &ctes,
            parent: Some(parent),
            level,
        };
        // A value derived only from the column it is written back to stays where it was, under
        // the same mask (`SET balance = balance + 1`): judged with that column clean. Anything
        // else it reads still taints it.
        let mut t = Taint::Clean;
        for n in &s.target_list {
            match &n.node {
                Some(N::ResTarget(rt)) if rt.indirection.is_empty() => {
                    let mut own = items.clone();
                    if let Some(target) = own.first_mut() {
                        for c in target.shape.cols.iter_mut().filter(|c| c.name == rt.name) {
                            c.taint = Taint::Clean;
                        }
                    }
                    let own_scope = Scope {
                        items: &own,
                        ctes: &ctes,
                        parent: Some(parent),
                        level,
                    };
                    t = t.max(self.opt(rt.val.as_deref(), &own_scope));
                }
                _ => t = t.max(self.assignments(std::slice::from_ref(n), &sc)),
            }
        }
        self.written(t, rv);
        self.opt(s.where_clause.as_deref(), &sc);
        self.target_list(&s.returning_list, &sc)
    }

    fn delete(&mut self, s: &pb::DeleteStmt, parent: &Scope<'_>) -> Shape {
        let level = parent.level + 1;
        let ctes = self.with_clause(s.with_clause.as_ref(), parent, level);
        let Some(rv) = &s.relation else {
            return Shape::unknown(self.fallback);
        };
        let mut items = vec![self.target_item(rv)];
        for f in &s.using_clause {
            let (new, _) = self.range_item(f, &items, &ctes, parent, level);
            items.extend(new);
        }
        let sc = Scope {
            items: &items,
            ctes: &ctes,
            parent: Some(parent),
            level,
        };
        self.opt(s.where_clause.as_deref(), &sc);
        self.target_list(&s.returning_list, &sc)
    }

    fn merge(&mut self, s: &pb::MergeStmt, parent: &Scope<'_>) -> Shape {
        let level = parent.level + 1;
        let ctes = self.with_clause(s.with_clause.as_ref(), parent, level);
        let Some(rv) = &s.relation else {
            return Shape::unknown(self.fallback);
        };
        let mut items = vec![self.target_item(rv)];
        if let Some(src) = s.source_relation.as_deref() {
            let (new, _) = self.range_item(src, &items, &ctes, parent, level);
            items.extend(new);
        }
        let sc = Scope {
            items: &items,
            ctes: &ctes,
            parent: Some(parent),
            level,
        };
        self.opt(s.join_condition.as_deref(), &sc);
        for w in &s.merge_when_clauses {
            let Some(N::MergeWhenClause(m)) = &w.node else {
                continue;
            };
            self.opt(m.condition.as_deref(), &sc);
            let t = self
                .assignments(&m.target_list, &sc)
                .max(self.list(&m.values, &sc));
            self.written(t, rv);
        }
        self.target_list(&s.returning_list, &sc)
    }

    /// `SET col = expr, (a, b) = (...)`, with subscripts: the taint of what is written.
    fn assignments(&mut self, list: &[pb::Node], scope: &Scope<'_>) -> Taint {
        let mut t = Taint::Clean;
        for n in list {
            match &n.node {
                Some(N::ResTarget(rt)) => {
                    t = t.max(self.opt(rt.val.as_deref(), scope));
                    t = t.max(self.list(&rt.indirection, scope));
                }
                _ => t = t.max(self.expr(n, scope)),
            }
        }
        t
    }

    // ----- expressions -----

    fn opt(&mut self, node: Option<&pb::Node>, scope: &Scope<'_>) -> Taint {
        node.map_or(Taint::Clean, |n| self.expr(n, scope))
    }

    fn list(&mut self, nodes: &[pb::Node], scope: &Scope<'_>) -> Taint {
        let mut t = Taint::Clean;
        for n in nodes {
            t = t.max(self.expr(n, scope));
        }
        t
    }

    fn expr(&mut self, node: &pb::Node, scope: &Scope<'_>) -> Taint {
        self.depth += 1;
        let t = if self.depth > MAX_DEPTH {
            self.too_deep = true;
            let fb = self.fallback;
            self.uncertain(scope, fb)
        } else {
            self.expr_inner(node, scope)
        };
        self.depth -= 1;
        t
    }

    fn expr_inner(&mut self, node: &pb::Node, scope: &Scope<'_>) -> Taint {
        let Some(n) = &node.node else {
            return Taint::Clean;
        };
        match n {
            N::ColumnRef(c) => self.column_ref(&fields(c), scope),
            N::AConst(_)
            | N::ParamRef(_)
            | N::SqlvalueFunction(_)
            | N::SetToDefault(_)
            | N::CurrentOfExpr(_)
            | N::String(_)
            | N::Integer(_)
            | N::Float(_)
            | N::Boolean(_)
            | N::AStar(_) => Taint::Clean,
            N::AExpr(a) => {
                let l = self.opt(a.lexpr.as_deref(), scope);
                l.max(self.opt(a.rexpr.as_deref(), scope))
            }
            N::BoolExpr(b) => self.list(&b.args, scope),
            N::FuncCall(f) => self.func_call(f, scope),
            N::TypeCast(c) => self.opt(c.arg.as_deref(), scope),
            N::CollateClause(c) => self.opt(c.arg.as_deref(), scope),
            N::AIndirection(i) => self.indirection(i, scope),
            N::AIndices(i) => {
                let l = self.opt(i.lidx.as_deref(), scope);
                l.max(self.opt(i.uidx.as_deref(), scope))
            }
            N::AArrayExpr(a) => self.list(&a.elements, scope),
            N::RowExpr(r) => self.list(&r.args, scope),
            N::CoalesceExpr(c) => self.list(&c.args, scope),
            N::MinMaxExpr(m) => self.list(&m.args, scope),
            N::CaseExpr(c) => {
                let a = self.opt(c.arg.as_deref(), scope);
                let w = self.list(&c.args, scope);
                a.max(w).max(self.opt(c.defresult.as_deref(), scope))
            }
            N::CaseWhen(w) => {
                let e = self.opt(w.expr.as_deref(), scope);
                e.max(self.opt(w.result.as_deref(), scope))
            }
            N::NullTest(t) => self.opt(t.arg.as_deref(), scope),
            N::BooleanTest(t) => self.opt(t.arg.as_deref(), scope),
            N::NamedArgExpr(a) => self.opt(a.arg.as_deref(), scope),
            N::SubLink(s) => self.sublink(s, scope),
            N::GroupingFunc(g) => self.list(&g.args, scope),
            N::GroupingSet(g) => self.list(&g.content, scope),
            N::XmlExpr(x) => {
                let a = self.list(&x.named_args, scope);
                a.max(self.list(&x.args, scope))
            }
            N::XmlSerialize(x) => self.opt(x.expr.as_deref(), scope),
            N::ResTarget(r) => {
                let v = self.opt(r.val.as_deref(), scope);
                v.max(self.list(&r.indirection, scope))
            }
            N::MultiAssignRef(m) => self.opt(m.source.as_deref(), scope),
            N::List(l) => self.list(&l.items, scope),
            N::SortBy(s) => self.opt(s.node.as_deref(), scope),
            N::WindowDef(w) => self.window(w, scope),
            _ => self.generic(node, scope),
        }
    }

    /// A node the typed analysis does not handle (SQL/JSON constructors, ...): every column
    /// reference inside counts; a nested query makes it fail closed.
    fn generic(&mut self, node: &pb::Node, scope: &Scope<'_>) -> Taint {
        let fb = self.fallback;
        let Ok(v) = serde_json::to_value(node) else {
            return self.uncertain(scope, fb);
        };
        let mut refs = Vec::new();
        let mut has_query = false;
        json_refs(&v, &mut refs, &mut has_query);
        let mut t = Taint::Clean;
        for f in refs {
            t = t.max(self.column_ref(&f, scope));
        }
        if has_query {
            t = t.max(self.note(0, fb));
        }
        t
    }

    fn window(&mut self, w: &pb::WindowDef, scope: &Scope<'_>) -> Taint {
        let p = self.list(&w.partition_clause, scope);
        let o = self.list(&w.order_clause, scope);
        let s = self.opt(w.start_offset.as_deref(), scope);
        p.max(o)
            .max(s)
            .max(self.opt(w.end_offset.as_deref(), scope))
    }

    fn func_call(&mut self, f: &pb::FuncCall, scope: &Scope<'_>) -> Taint {
        let mut t = self.list(&f.args, scope);
        t = t.max(self.list(&f.agg_order, scope));
        t = t.max(self.opt(f.agg_filter.as_deref(), scope));
        if let Some(w) = f.over.as_deref() {
            t = t.max(self.window(w, scope));
        }
        let name = f.funcname.last().and_then(str_of);
        let schema = f
            .funcname
            .len()
            .checked_sub(2)
            .and_then(|i| f.funcname.get(i))
            .and_then(str_of);
        let builtin_count = name == Some("count")
            && schema.is_none_or(|s| s == "pg_catalog")
            && !self.cat.functions.contains_key("count");
        if builtin_count {
            // How many rows, or non-NULL values: nothing about the values themselves.
            return Taint::Clean;
        }
        t
    }

    fn sublink(&mut self, s: &pb::SubLink, scope: &Scope<'_>) -> Taint {
        let test = self.opt(s.testexpr.as_deref(), scope);
        self.corr.push((scope.level + 1, Taint::Clean));
        let shape = match s.subselect.as_deref() {
            Some(q) => self.query(q, scope),
            None => Shape::unknown(self.fallback),
        };
        let corr = self.corr.pop().map_or(Taint::Clean, |(_, t)| t);
        let out = if s.sub_link_type == pb::SubLinkType::ExistsSublink as i32 {
            corr
        } else {
            shape.whole().max(corr)
        };
        test.max(out)
    }

    fn indirection(&mut self, i: &pb::AIndirection, scope: &Scope<'_>) -> Taint {
        let subscripts = self.list(&i.indirection, scope);
        // (u).col where u is a relation: that column.
        if let (Some(N::ColumnRef(c)), Some(field)) = (
            i.arg.as_deref().and_then(|a| a.node.as_ref()),
            i.indirection.first().and_then(str_of),
        ) {
            if let [Field::Name(n)] = fields(c).as_slice() {
                if !self.column_anywhere(n, scope) {
                    if let Some((it, level)) = find_item(scope, None, n) {
                        let t = match it.shape.find(field) {
                            Some(t) => t,
                            None => {
                                let t = it.shape.whole();
                                self.attribute_call(field);
                                t
                            }
                        };
                        return self.note(level, t).max(subscripts);
                    }
                }
            }
        }
        // `(value).name`: a field of a composite value, or the function `name(value)`.
        for field in i.indirection.iter().filter_map(str_of) {
            self.attribute_call(field);
        }
        self.opt(i.arg.as_deref(), scope).max(subscripts)
    }

    /// Could `name` be a column at some level (known, or an item of unknown shape)?
    fn column_anywhere(&self, name: &str, scope: &Scope<'_>) -> bool {
        let mut s = Some(scope);
        while let Some(sc) = s {
            if sc
                .items
                .iter()
                .any(|i| i.cols_visible && (i.shape.find(name).is_some() || !i.shape.complete))
            {
                return true;
            }
            s = sc.parent;
        }
        false
    }

    fn column_ref(&mut self, f: &[Field], scope: &Scope<'_>) -> Taint {
        use Field::{Name, Star};
        match f {
            [Name(c)] => self.column(c, scope),
            [Star] => {
                let t = scope
                    .items
                    .iter()
                    .filter(|i| i.cols_visible)
                    .map(|i| i.shape.whole())
                    .max()
                    .unwrap_or_default();
                self.note(scope.level, t)
            }
            [Name(r), Name(c)] => match self.qualified(None, r, Some(c), scope) {
                Some(t) => t,
                // column r's field c
                None => self.column(r, scope),
            },
            [Name(s), Name(r), Name(c)] => {
                if let Some(t) = self.qualified(Some(s), r, Some(c), scope) {
                    return t;
                }
                // relation s, column r, field c
                match self.qualified(None, s, Some(r), scope) {
                    Some(t) => t,
                    None => self.uncertain(scope, Taint::Clean),
                }
            }
            [Name(_), Name(s), Name(r), Name(c)] => {
                match self.qualified(Some(s), r, Some(c), scope) {
                    Some(t) => t,
                    None => self.uncertain(scope, Taint::Clean),
                }
            }
            [Name(r), Star] => self.whole_row(None, r, scope),
            [Name(s), Name(r), Star] | [Name(_), Name(s), Name(r), Star] => {
                self.whole_row(Some(s), r, scope)
            }
            _ => self.uncertain(scope, Taint::Clean),
        }
    }

    fn whole_row(&mut self, schema: Option<&str>, rel: &str, scope: &Scope<'_>) -> Taint {
        match self.qualified(schema, rel, None, scope) {
            Some(t) => t,
            None => self.uncertain(scope, Taint::Clean),
        }
    }

    /// An unqualified name: a column of the innermost level that has one, else a whole-row
    /// reference to a relation of that name (PostgreSQL's order).
    fn column(&mut self, name: &str, scope: &Scope<'_>) -> Taint {
        let mut s = Some(scope);
        while let Some(sc) = s {
            let mut hit: Option<Taint> = None;
            let mut maybe = false;
            for it in sc.items.iter().filter(|i| i.cols_visible) {
                match it.shape.find(name) {
                    Some(t) => hit = Some(hit.map_or(t, |h| h.max(t))),
                    None => maybe |= !it.shape.complete,
                }
            }
            // Known in some relation: PostgreSQL resolves it there, or reports it ambiguous.
            if let Some(t) = hit {
                return self.note(sc.level, t);
            }
            // Perhaps a column of a relation whose columns vigil does not know.
            if maybe {
                return self.uncertain(scope, Taint::Clean);
            }
            s = sc.parent;
        }
        if let Some((it, level)) = find_item(scope, None, name) {
            let t = it.shape.whole();
            return self.note(level, t);
        }
        if SYSTEM_COLUMNS.contains(&name) {
            return Taint::Clean;
        }
        self.uncertain(scope, Taint::Clean)
    }

    /// `rel.col` (or the whole row when `col` is `None`); `None` when no relation in scope has
    /// that name.
    fn qualified(
        &mut self,
        schema: Option<&str>,
        rel: &str,
        col: Option<&str>,
        scope: &Scope<'_>,
    ) -> Option<Taint> {
        let (it, level) = find_item(scope, schema, rel)?;
        let t = match col {
            None => it.shape.whole(),
            Some(c) => match it.shape.find(c) {
                Some(t) => t,
                None => {
                    let t = if it.shape.complete {
                        // Not a column by the catalog: PostgreSQL would fail, or the catalog
                        // is stale.
                        it.shape.whole()
                    } else {
                        it.shape.rest
                    };
                    self.attribute_call(c);
                    t
                }
            },
        };
        Some(self.note(level, t))
    }
}

impl Shape {
    /// The next round of a recursive CTE: columns only ever gain taint.
    fn grow(&self, next: &Shape) -> Shape {
        if self.complete && next.complete && self.cols.len() == next.cols.len() {
            return Shape::complete(
                self.cols
                    .iter()
                    .zip(&next.cols)
                    .map(|(a, b)| Col::new(&a.name, a.taint.max(b.taint)))
                    .collect(),
            );
        }
        self.combine(next)
    }
}

/// Statements that bring in code or data the catalog read at the session's start does not
/// describe, refused while masks apply (see the module docs): anonymous code, functions and
/// what calls functions under other names (triggers, rules, aggregates, operators, casts), a
/// domain's CHECK (it runs on every value cast to the domain, where the statement shows only
/// the cast), extensions, changed functions, languages, conversions, transforms, operator
/// classes, and foreign tables that may read the masked tables over a loopback server.
fn code_refusal(n: &N) -> Option<Refusal> {
    let define = |what| Some(Refusal::CodeDefinition(what));
    let not_while = |what| Some(Refusal::NotWhileMasked(what));
    match n {
        N::DoStmt(_) => Some(Refusal::AnonymousCode),
        N::CreateFunctionStmt(f) => define(if f.is_procedure {
            "procedure"
        } else {
            "function"
        }),
        N::CreateTrigStmt(_) | N::CreateEventTrigStmt(_) => define("trigger"),
        N::RuleStmt(_) => define("rule"),
        N::DefineStmt(d) if d.kind == pb::ObjectType::ObjectAggregate as i32 => define("aggregate"),
        N::DefineStmt(d) if d.kind == pb::ObjectType::ObjectOperator as i32 => define("operator"),
        N::CreateCastStmt(_) => define("cast"),
        N::CreateDomainStmt(d) if !d.constraints.is_empty() => {
            not_while("a domain with constraints")
        }
        N::AlterDomainStmt(_) => not_while("ALTER DOMAIN"),
        N::CreateExtensionStmt(_) | N::AlterExtensionStmt(_) | N::AlterExtensionContentsStmt(_) => {
            not_while("installing or changing an extension")
        }
        N::AlterFunctionStmt(_) => not_while("ALTER FUNCTION"),
        N::CreatePlangStmt(_)
        | N::CreateConversionStmt(_)
        | N::CreateTransformStmt(_)
        | N::CreateOpClassStmt(_)
        | N::AlterOpFamilyStmt(_) => {
            not_while("defining a language, conversion, transform or operator class")
        }
        N::CreateForeignTableStmt(_)
        | N::ImportForeignSchemaStmt(_)
        | N::CreateForeignServerStmt(_)
        | N::AlterForeignServerStmt(_)
        | N::CreateUserMappingStmt(_)
        | N::AlterUserMappingStmt(_)
        | N::CreateFdwStmt(_)
        | N::AlterFdwStmt(_) => not_while("defining foreign data access"),
        _ => None,
    }
}

fn coldef_names(list: &[pb::Node]) -> Vec<String> {
    list.iter()
        .filter_map(|n| match &n.node {
            Some(N::ColumnDef(c)) => Some(c.colname.clone()),
            _ => None,
        })
        .collect()
}

/// The columns of `l JOIN r USING (using)`: the merged columns first (either side's value may
/// come out, FULL JOIN coalesces), then the rest of the left, then the rest of the right.
fn join_shape(l: &Shape, r: &Shape, using: &[String]) -> Shape {
    let side = |s: &Shape, n: &str| {
        s.find(n)
            .unwrap_or(if s.complete { s.whole() } else { s.rest })
    };
    let mut cols: Vec<Col> = using
        .iter()
        .map(|u| Col::new(u, side(l, u).max(side(r, u))))
        .collect();
    for c in l.cols.iter().chain(&r.cols) {
        if !using.contains(&c.name) {
            cols.push(c.clone());
        }
    }
    Shape {
        cols,
        complete: l.complete && r.complete,
        rest: l.rest.max(r.rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Method::{Hash as H, Redact as R};
    use Taint::Clean as C;

    const fn m(method: Method) -> Taint {
        Taint::Masked(method)
    }

    /// public.users(id, name, email, ssn): email hashed, ssn redacted; public.orders(id,
    /// user_id, total); the view public.v_users over users; public."Users"(id, ssn), unmasked,
    /// to pin case sensitivity; functions leak_ssn (reads masked data) and stash (opaque).
    fn catalog() -> MaskCatalog {
        let mut c = MaskCatalog::new();
        c.add_mask("public", "users", "email", Method::Hash);
        c.add_table(
            100,
            "public",
            "users",
            [(1, "id"), (2, "name"), (3, "email"), (4, "ssn")],
        );
        // Masks and tables may come in any order.
        c.add_mask("public", "users", "ssn", Method::Redact);
        c.add_table(
            200,
            "public",
            "orders",
            [(1, "id"), (2, "user_id"), (3, "total")],
        );
        c.add_table(400, "public", "Users", [(1, "id"), (2, "ssn")]);
        c.add_view(300, "public", "v_users", [(1, "id"), (2, "s"), (3, "name")]);
        c.derive_view_masks(&[(300, VIEW_DEF)]);
        c.add_function("public", "leak_ssn", FunctionRisk::ReadsMasked);
        c.add_function("public", "stash", FunctionRisk::Opaque);
        c
    }

    /// As `pg_get_viewdef` prints `create view v_users as select id, upper(ssn) as s, name
    /// from users`.
    const VIEW_DEF: &str =
        " SELECT users.id,\n    upper(users.ssn) AS s,\n    users.name\n   FROM users;";

    fn run(sql: &str) -> OutputTaint {
        analyze_output(&catalog(), sql)
    }

    #[test]
    fn columns_table() {
        let r = m(R);
        let h = m(H);
        let cases: &[(&str, &[Taint])] = &[
            // plain, aliases, qualification, stars
            ("select ssn from users", &[r]),
            ("select email from users", &[h]),
            ("select ssn as x from users", &[r]),
            ("select u.ssn from users u", &[r]),
            ("select ssn from public.users", &[r]),
            ("select public.users.ssn from public.users", &[r]),
            ("select users.ssn from public.users", &[r]),
            ("select * from users", &[C, C, h, r]),
            ("table users", &[C, C, h, r]),
            ("select u.* from users u", &[C, C, h, r]),
            ("select id, u.*, 1 from users u", &[C, C, C, h, r, C]),
            ("select * from users u, orders o", &[C, C, h, r, C, C, C]),
            ("select o.*, u.id from users u, orders o", &[C, C, C, C]),
            ("select * from users as u(a, b, c, d)", &[C, C, h, r]),
            ("select d from users as u(a, b, c, d)", &[r]),
            // quoted identifiers: unquoted names fold to lower case
            (r#"select "ssn" from users"#, &[r]),
            (r#"select ssn from "Users""#, &[C]),
            ("select ssn from Users", &[r]),
            ("select SSN from USERS", &[r]),
            // not a column of users: fails closed to the strongest mask in scope
            (r#"select "SSN" from users"#, &[r]),
            // subqueries and CTEs
            ("select s from (select ssn as s from users) t", &[r]),
            ("select x.ssn, x.id from (select * from users) x", &[r, C]),
            ("select a from (select ssn from users) t(a)", &[r]),
            ("with t as (select ssn from users) select * from t", &[r]),
            ("with t(a) as (select ssn from users) select a from t", &[r]),
            (
                "with a as (select id, ssn from users), b as (select ssn as x, id from a) select x, id from b",
                &[r, C],
            ),
            ("with t as (select id from users) select * from t", &[C]),
            // recursive CTEs: taint flows around the loop until it settles
            (
                "with recursive r(a, b) as (select 'x'::text, ssn from users union all select b, b from r) select a from r",
                &[r],
            ),
            (
                "with recursive r(n) as (select 1 union all select n + 1 from r where n < 5) select n from r",
                &[C],
            ),
            (
                "with recursive r as (select id, ssn from users union all select id, ssn from r) select id, ssn from r",
                &[C, r],
            ),
            // joins
            ("select id from users join orders using (id)", &[C]),
            ("select * from users join orders using (id)", &[C, C, h, r, C, C]),
            ("select * from users natural join orders", &[C, C, h, r, C, C]),
            ("select j.ssn from (users join orders using (id)) j", &[r]),
            ("select x.id from users join orders using (id) as x", &[C]),
            (
                "select u.name, o.total from users u left join orders o on o.user_id = u.id",
                &[C, C],
            ),
            ("select name from users u join orders o on o.user_id = u.id", &[C]),
            // ambiguous: PostgreSQL refuses it; both candidates are clean
            ("select id from users, orders", &[C]),
            // LATERAL and functions in FROM
            ("select x.s from users u, lateral (select upper(u.ssn) as s) x", &[r]),
            ("select x.s from users u cross join lateral (select u.id as s) x", &[C]),
            ("select g from users u, lateral generate_series(1, u.id) g", &[C]),
            ("select x from users u, unnest(array[u.ssn]) x", &[r]),
            ("select t.a from users u, unnest(array[u.email]) as t(a)", &[h]),
            (
                "select r.a, r.b from users u, jsonb_to_record(to_jsonb(u)) as r(a text, b int)",
                &[r, r],
            ),
            // expressions over masked columns
            ("select upper(ssn) from users", &[r]),
            ("select ssn || '' from users", &[r]),
            ("select ssn::text from users", &[r]),
            ("select cast(ssn as varchar(20)) from users", &[r]),
            ("select coalesce(ssn, 'none') from users", &[r]),
            ("select nullif(ssn, '') from users", &[r]),
            ("select greatest(ssn, name) from users", &[r]),
            ("select case when ssn like '1%' then 'a' else 'b' end from users", &[r]),
            ("select case ssn when 'x' then 1 end from users", &[r]),
            ("select concat_ws(',', name, email) from users", &[h]),
            ("select format('%s', ssn) from users", &[r]),
            ("select substr(ssn, 1, 3), length(ssn) from users", &[r, r]),
            ("select ssn is null from users", &[r]),
            ("select ssn collate \"C\" from users", &[r]),
            ("select (ssn)[1] from users", &[r]),
            ("select array[ssn] from users", &[r]),
            ("select id + length(ssn) from users", &[r]),
            // several masks feed one value: the strongest wins (redact over hash)
            ("select concat(email, ssn) from users", &[r]),
            ("select email || name from users", &[h]),
            // aggregates and windows
            ("select string_agg(ssn, ',') from users", &[r]),
            ("select max(ssn), min(email) from users", &[r, h]),
            ("select array_agg(ssn) from users", &[r]),
            ("select array_agg(id order by ssn) from users", &[r]),
            ("select count(*) filter (where ssn like '1%') from users", &[C]),
            ("select count(ssn), count(distinct email) from users", &[C, C]),
            ("select rank() over (order by ssn) from users", &[r]),
            ("select sum(id) over (partition by name) from users", &[C]),
            // whole rows
            ("select row_to_json(u) from users u", &[r]),
            ("select to_jsonb(u) from users u", &[r]),
            ("select to_jsonb(users) from users", &[r]),
            ("select row(u.*) from users u", &[r]),
            ("select json_agg(u) from users u", &[r]),
            ("select u from users u", &[r]),
            ("select (u).ssn, (u).id from users u", &[r, C]),
            ("select row_to_json(o) from users u, orders o", &[C]),
            ("select (u.*)::text from users u", &[r]),
            ("select to_json(t) from (select id, email from users) t", &[h]),
            // sublinks
            ("select (select ssn from users limit 1)", &[r]),
            ("select (select max(email) from users)", &[h]),
            ("select array(select ssn from users)", &[r]),
            ("select 'x' in (select ssn from users)", &[r]),
            ("select id in (select id from users) from orders", &[C]),
            ("select (select count(*) from users where ssn like '1%')", &[C]),
            ("select exists (select 1 from users where ssn = '1')", &[C]),
            (
                "select u.id, exists (select 1 from orders o where o.user_id = u.id and u.ssn like '1%') from users u",
                &[C, r],
            ),
            (
                "select (select count(*) from orders o where o.user_id = u.id) from users u",
                &[C],
            ),
            (
                "select (select count(*) from orders o where o.total::text = u.ssn) from users u",
                &[r],
            ),
            // set operations
            ("select name from users union select ssn from users", &[r]),
            ("select ssn from users union all select 'x'", &[r]),
            ("select id from users union all select id from orders", &[C]),
            ("select id, name from users intersect select id, email from users", &[C, h]),
            ("select ssn from users except select 'x'", &[r]),
            (
                "select * from (select name from users union select ssn from users) t order by 1",
                &[r],
            ),
            // VALUES
            ("values (1, 'a'), (2, 'b')", &[C, C]),
            ("select * from (values ((select ssn from users limit 1))) v(x)", &[r]),
            // views, through the catalog's view masks
            ("select * from v_users", &[C, r, C]),
            ("select s from v_users", &[r]),
            ("select name, id from v_users", &[C, C]),
            ("select lower(v.s) from v_users v", &[r]),
            ("select upper(v.s) from v_users v join orders o on o.user_id = v.id", &[r]),
            // data-modifying statements with RETURNING
            ("insert into orders (id) values (1) returning id", &[C]),
            ("insert into users (id, name) values (1, 'a') returning ssn", &[r]),
            ("insert into users as u (id) values (1) returning u.*", &[C, C, h, r]),
            ("update users set name = 'x' returning *", &[C, C, h, r]),
            ("update users set name = 'x' where ssn = '1' returning id", &[C]),
            ("update orders o set total = 1 from users u where u.id = o.user_id returning u.email", &[h]),
            ("delete from users where id = 1 returning email", &[h]),
            ("delete from orders using users u where u.id = user_id returning u.ssn", &[r]),
            (
                "with d as (delete from users where id = 1 returning *) select ssn, id from d",
                &[r, C],
            ),
            // COPY
            ("copy users to stdout", &[C, C, h, r]),
            ("copy users (ssn, id) to stdout", &[r, C]),
            ("copy (select ssn from users) to stdout with (format csv)", &[r]),
            ("copy orders to stdout (format binary)", &[C, C, C]),
            // benign twins
            ("select count(*) from users", &[C]),
            ("select id from users", &[C]),
            ("select name, length(name) from users", &[C, C]),
            ("select 1", &[C]),
            ("select * from orders", &[C, C, C]),
            ("select id from users where ssn = '123-45-6789' order by ssn", &[C]),
            ("select ctid, id from users", &[C, C]),
            ("select now(), current_user", &[C, C]),
            ("select $1::text", &[C]),
            // no rows
            ("begin", &[]),
            ("set search_path = public", &[]),
            ("insert into orders (id) values (1)", &[]),
            // SQL/JSON constructors go through the generic walk
            ("select json_object('k': ssn) from users", &[r]),
            ("select json_object('k': name) from users", &[C]),
            ("select json_array(email) from users", &[h]),
            // EXPLAIN prints plans, not data
            ("explain analyze select ssn from users", &[C]),
            ("show search_path", &[C]),
            // planner statistics hold sampled values
            (
                "select attname, null_frac, most_common_vals from pg_stats where tablename = 'users'",
                &[C, C, r],
            ),
            ("select s.histogram_bounds from pg_catalog.pg_stats s", &[r]),
            ("select stavalues1 from pg_statistic", &[r]),
        ];
        let mut failed = Vec::new();
        for (sql, want) in cases {
            let got = run(sql);
            if got.columns.as_deref() != Some(*want) || got.refuse.is_some() {
                failed.push(format!("{sql}\n    want {want:?}\n    got  {got:?}"));
            }
        }
        assert!(
            failed.is_empty(),
            "{} cases:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }

    /// When vigil cannot tell the columns apart it masks every column with the fallback.
    #[test]
    fn unknown_shape_table() {
        let cases: &[(&str, Taint)] = &[
            ("select * from generate_series(1, 3)", C),
            ("select * from users u, unnest(array[u.ssn]) x", m(R)),
            ("select * from users, jsonb_each(to_jsonb(users))", m(R)),
            ("select (to_jsonb(u)).* from users u", m(R)),
            ("select * from not_in_catalog", C),
            ("select * from not_in_catalog, users", m(R)),
            ("call some_procedure(1)", C),
            ("vacuum users", m(R)),
            ("select * from pg_stats", m(R)),
        ];
        let mut failed = Vec::new();
        for (sql, want) in cases {
            let got = run(sql);
            if got.columns.is_some() || got.fallback != *want || got.refuse.is_some() {
                failed.push(format!("{sql}\n    want {want:?}\n    got  {got:?}"));
            }
        }
        assert!(
            failed.is_empty(),
            "{} cases:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }

    /// A column vigil cannot resolve is masked when any relation in scope has masks.
    #[test]
    fn unresolved_fail_closed() {
        let out = run("select x from users, not_in_catalog");
        assert_eq!(out.columns, Some(vec![m(R)]));
        assert_eq!(out.unknown_relations, vec!["not_in_catalog".to_owned()]);
        let out = run("select x from orders, not_in_catalog");
        assert_eq!(out.columns, Some(vec![C]));
        // A schema the catalog does not know is not `public`.
        let out = run("select ssn from other.users");
        assert_eq!(out.columns, Some(vec![C]));
        assert_eq!(out.unknown_relations, vec!["other.users".to_owned()]);
        let out = run("select t.x from users, not_in_catalog t");
        assert_eq!(out.columns, Some(vec![C]));
    }

    /// Names reported for relations the catalog does not list, and which of them are taken
    /// for system catalogs.
    #[test]
    fn system_relations_only_where_no_other_relation_can_answer_to_the_name() {
        let out = run(r#"select * from "pg_catalog.v", "a""b", pg_catalog."x.y", s."t""#);
        assert_eq!(
            out.unknown_relations,
            vec![
                r#""a""b""#.to_owned(),
                r#""pg_catalog.v""#.to_owned(),
                r#"pg_catalog."x.y""#.to_owned(),
                "s.t".to_owned(),
            ]
        );
        let mut c = catalog();
        c.add_system_relation("pg_settings");
        for (label, system) in [
            ("pg_settings", true),
            ("pg_catalog.anything", true),
            ("information_schema.tables", true),
            ("pg_toast.pg_toast_1", true),
            ("tables", false),
            (r#""pg_catalog.v""#, false),
            (r#"pg_catalog."x.y""#, true),
            (r#""pg_catalog".v"#, false),
        ] {
            assert_eq!(c.is_system_relation(label), system, "{label}");
        }
        // pg_catalog searched first (listed first, or not listed at all): unqualified names of
        // its relations are its own; after another schema, they may be that schema's.
        for (path, system) in [
            ("\"$user\", public", true),
            ("pg_catalog, public", true),
            ("public, pg_catalog", false),
            ("pg_temp, \"pg_catalog\"", false),
            ("", true),
            // Unquoted names are folded; quoted ones are not, and may hold commas.
            ("public, PG_CATALOG", false),
            ("\"PG_CATALOG\", public", true),
            ("\"a,b\", \"pg_catalog\"", false),
            ("\"a,pg_catalog\"", true),
            ("\"a\"\"b\" , pg_catalog", false),
            // Not a list PostgreSQL would take: not trusted.
            ("\"unterminated, pg_catalog", false),
            ("a b", false),
        ] {
            c.set_search_path(path);
            assert_eq!(c.is_system_relation("pg_settings"), system, "{path}");
            assert!(c.is_system_relation("pg_catalog.pg_settings"), "{path}");
        }
    }

    #[test]
    fn refusals_table() {
        let cases: &[&str] = &[
            "select leak_ssn()",
            "select id from orders where leak_ssn() is not null",
            "select stash(name) from users",
            "select query_to_xml('select ssn from users', true, false, '')",
            "select * from dblink('dbname=app', 'select ssn from users') as t(s text)",
            "select set_config('x.y', ssn, false) from users",
            "select pg_notify('c', ssn) from users",
            "do $$ begin raise notice '%', (select ssn from users limit 1); end $$",
            "create function f() returns text language sql as $$ select ssn from users $$",
            "create trigger t after insert on orders for each row execute function f()",
            "create rule r as on insert to orders do also select 1",
            "copy users to '/tmp/users.txt'",
            "copy (select ssn from users) to program 'cat'",
            "copy users to stdout (format binary)",
            "copy (select email from users) to stdout with binary",
            "create table t as select ssn from users",
            "create materialized view mv as select upper(ssn) from users",
            "create table t as execute p",
            "select ssn into t from users",
            "select * into t from users",
            "insert into orders (id) select length(ssn) from users",
            "insert into orders select * from users",
            "insert into orders (id) values ((select length(ssn) from users limit 1))",
            "update orders set total = (select length(ssn) from users limit 1)",
            "update users set name = ssn",
            "update users set ssn = email",
            "update users set ssn = ssn || email",
            "update users set ssn = (select ssn from users u2 where u2.id = 1)",
            "insert into users (id) values (1) on conflict (id) do update set name = users.ssn",
            "merge into orders o using users u on o.user_id = u.id when matched then update set total = length(u.ssn)",
            "with x as (insert into orders (id) select length(ssn) from users returning id) select * from x",
            "create view v as select upper(ssn) from users",
            "create view v as select * from users",
            "alter table users rename column ssn to x",
            "alter table users rename to people",
            "alter table users add column ssn2 text generated always as (ssn) stored",
            "alter table users set schema other",
            "alter schema public rename to p",
            "alter function leak_ssn() rename to innocent",
            "explain analyze create table t as select ssn from users",
            "select chunk_data from pg_toast.pg_toast_16384",
            "select * from heap_page_items(get_raw_page('users', 0))",
            "create aggregate grab(text) (sfunc = textcat, stype = text)",
            "create operator ### (leftarg = text, rightarg = text, function = stash)",
            "create cast (text as int4) with function stash(text)",
            "select 1; select 2",
            "select from where",
        ];
        let mut failed = Vec::new();
        for sql in cases {
            let got = run(sql);
            if got.refuse.is_none() {
                failed.push(format!("{sql}\n    got  {got:?}"));
            }
        }
        assert!(
            failed.is_empty(),
            "{} cases:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }

    /// The benign twins of the refusals.
    #[test]
    fn not_refused_table() {
        let cases: &[&str] = &[
            "select stash('a')",
            "select stash(total::text) from orders",
            "select set_config('search_path', 'public', false)",
            "select pg_notify('c', 'hello')",
            "copy orders to '/tmp/orders.txt'",
            "copy orders to stdout (format binary)",
            "copy (select id from users) to stdout (format binary)",
            "copy users from stdin",
            "create table t as select id, name from users",
            "select id into t from users",
            "insert into orders (id, user_id) select 1, id from users where ssn like '1%'",
            "update users set name = 'x' where ssn = '1'",
            "update users set ssn = null",
            "update users set ssn = upper(ssn)",
            "update users set ssn = ssn || '-x', name = 'n' where id = 1",
            "insert into users (id, ssn) values (1, '123')",
            "delete from users where ssn = '1'",
            "create view v as select id, name from users",
            "alter table orders add column note text",
            "alter table orders rename to orders2",
            "create index on users (ssn)",
            "prepare p as select upper(ssn) from users",
            "explain select * from users",
            "select null_frac from pg_stats",
            "create type pair as (a int, b int)",
        ];
        let mut failed = Vec::new();
        for sql in cases {
            let got = run(sql);
            if got.refuse.is_some() {
                failed.push(format!("{sql}\n    got  {got:?}"));
            }
        }
        assert!(
            failed.is_empty(),
            "{} cases:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }

    #[test]
    fn nothing_refused_without_masks() {
        let c = MaskCatalog::new();
        for sql in [
            "do $$ begin end $$",
            "create function f() returns int language sql as $$ select 1 $$",
            "select query_to_xml('select 1', true, false, '')",
        ] {
            assert_eq!(analyze_output(&c, sql).refuse, None, "{sql}");
        }
    }

    #[test]
    fn references_masked_table() {
        let c = catalog();
        let cases: &[(&str, bool)] = &[
            ("select id from users where ssn = '1'", true),
            (
                "select id from users u join orders o on o.total::text = u.ssn",
                true,
            ),
            ("select id from users group by email", true),
            ("select * from users", true),
            ("select count(ssn) from users", true),
            ("select exists (select 1 from users where ssn = '1')", true),
            ("select id from users", false),
            ("select count(*) from users", false),
            ("select id as x from users order by x", false),
            ("select * from orders", false),
            ("select 1", false),
            ("select from where", true),
        ];
        for (sql, want) in cases {
            assert_eq!(references_masked(&c, sql), *want, "{sql}");
        }
    }

    #[test]
    fn named_statements() {
        let out = run("prepare p as select upper(ssn), id from users");
        assert_eq!(out.named, Some(Named::Prepare("p".to_owned())));
        assert_eq!(out.columns, Some(vec![m(R), C]));
        let out = run("execute p");
        assert_eq!(out.named, Some(Named::Execute("p".to_owned())));
        assert_eq!((out.columns, out.fallback), (None, m(R)));
        let out = run("declare c cursor for select email from users");
        assert_eq!(out.named, Some(Named::DeclareCursor("c".to_owned())));
        assert_eq!(out.columns, Some(vec![m(H)]));
        let out = run("fetch 10 from c");
        assert_eq!(out.named, Some(Named::Fetch("c".to_owned())));
        assert_eq!((out.columns, out.fallback), (None, m(R)));
        assert_eq!(run("move 10 in c").columns, Some(vec![]));
    }

    #[test]
    fn copy_options_from_the_statement() {
        let out = run("copy users to stdout");
        let text = out.copy.expect("copy options");
        assert_eq!(
            (
                text.format,
                text.delimiter,
                text.null.as_slice(),
                text.header
            ),
            (CopyFormat::Text, b'\t', &b"\\N"[..], false)
        );
        let out = run("copy users to stdout with (format csv, header, delimiter ';', quote '''', null 'NULL')");
        let csv = out.copy.expect("copy options");
        assert_eq!(
            (
                csv.format,
                csv.delimiter,
                csv.quote,
                csv.escape,
                csv.null.as_slice(),
                csv.header
            ),
            (CopyFormat::Csv, b';', b'\'', b'\'', &b"NULL"[..], true)
        );
        let out = run("copy users to stdout csv header escape '\\'");
        let csv = out.copy.expect("copy options");
        assert_eq!(
            (csv.delimiter, csv.quote, csv.escape, csv.header),
            (b',', b'"', b'\\', true)
        );
        assert_eq!(run("select 1").copy, None);
    }

    #[test]
    fn view_taint_of_definitions() {
        let c = catalog();
        assert_eq!(view_taint(&c, VIEW_DEF, 3), vec![None, Some(R), None]);
        // A view over a view.
        assert_eq!(
            view_taint(&c, "select v.s || 'x' as t, v.id from v_users v", 2),
            vec![Some(R), None]
        );
        // Columns that cannot be told apart all get the fallback.
        assert_eq!(
            view_taint(&c, "select * from users, generate_series(1, 2)", 5),
            vec![Some(R); 5]
        );
        // A view that calls a function reading masked data is masked throughout.
        assert_eq!(view_taint(&c, "select leak_ssn() as x", 1), vec![Some(R)]);
    }

    #[test]
    fn derive_view_masks_reaches_a_fixpoint_in_any_order() {
        let mut c = catalog();
        c.add_view(501, "public", "v2", [(1, "a"), (2, "b")]);
        c.add_view(502, "public", "v3", [(1, "c")]);
        // v3 depends on v2, which depends on v_users; listed in the wrong order.
        c.derive_view_masks(&[
            (502, "select a from v2"),
            (501, "select s as a, id as b from v_users"),
        ]);
        assert_eq!(c.origin_mask(502, 1), Some(R));
        assert_eq!(c.origin_mask(501, 1), Some(R));
        assert_eq!(c.origin_mask(501, 2), None);
        assert_eq!(c.origin_mask(300, 2), Some(R));
        assert_eq!(c.origin_mask(100, 3), Some(H));
        assert_eq!(c.origin_mask(100, 1), None);
        assert_eq!(c.origin_mask(999, 1), None);
    }

    /// Unqualified names match every schema's relation of that name: with two `users`, a
    /// column masked in either is masked.
    #[test]
    fn unqualified_names_match_every_schema() {
        let mut c = catalog();
        c.add_mask("crm", "users", "name", Method::Null);
        c.add_table(
            600,
            "crm",
            "users",
            [(1, "id"), (2, "name"), (3, "email"), (4, "ssn")],
        );
        let out = analyze_output(&c, "select name, ssn from users");
        assert_eq!(out.columns, Some(vec![m(Method::Null), m(R)]));
        let out = analyze_output(&c, "select name, ssn from public.users");
        assert_eq!(out.columns, Some(vec![C, m(R)]));
        // A configured mask on a table the proxy did not describe still counts.
        let mut c = MaskCatalog::new();
        c.add_mask("public", "cards", "number", Method::Partial);
        let out = analyze_output(&c, "select number, upper(number), holder from cards");
        assert_eq!(
            out.columns,
            Some(vec![
                m(Method::Partial),
                m(Method::Partial),
                m(Method::Partial)
            ])
        );
        let out = analyze_output(&c, "select c.holder from cards c");
        assert_eq!(out.columns, Some(vec![C]));
    }

    #[test]
    fn column_falls_back_when_the_count_differs() {
        let out = run("select id, ssn from users");
        assert_eq!(out.column(1, 2), m(R));
        assert_eq!(out.column(0, 2), C);
        assert_eq!(out.column(0, 3), m(R));
        let out = run("select * from generate_series(1, 2)");
        assert_eq!(out.column(0, 1), C);
    }

    #[test]
    fn method_order_and_names() {
        assert!(Method::Null > Method::Redact);
        assert!(Method::Redact > Method::Hash);
        assert!(Method::Hash > Method::Partial);
        assert!(m(Method::Partial) > C);
        for s in ["redact", "partial", "hash", "null"] {
            assert_eq!(s.parse::<Method>().map(Method::as_str), Ok(s));
        }
        assert!("mask".parse::<Method>().is_err());
    }

    /// Deep nesting is refused or analyzed, never a crash.
    #[test]
    fn deep_nesting() {
        let mut sql = String::from("select ");
        for _ in 0..500 {
            sql.push_str("upper(");
        }
        sql.push_str("ssn");
        for _ in 0..500 {
            sql.push(')');
        }
        sql.push_str(" from users");
        let out = run(&sql);
        assert!(
            out.refuse.is_some() || out.columns == Some(vec![m(R)]),
            "{out:?}"
        );
        let mut sql = String::from("select ssn from users");
        for _ in 0..300 {
            sql = format!("select * from ({sql}) t");
        }
        let out = run(&sql);
        assert!(
            out.refuse.is_some() || out.columns == Some(vec![m(R)]),
            "{out:?}"
        );
    }

    fn source(name: &str, language: &str, body: &str) -> FunctionSource {
        FunctionSource {
            schema: "public".into(),
            name: name.into(),
            language: language.into(),
            body: body.into(),
        }
    }

    #[test]
    fn functions_are_rated_by_what_their_bodies_read_to_a_fixpoint() {
        let mut c = catalog();
        let functions = [
            // Listed before the function it calls: the rating goes round until nothing grows.
            source("outer_fn", "plpgsql", "begin return inner_fn($1); end"),
            source(
                "inner_fn",
                "sql",
                "select s from public.v_users where id = $1",
            ),
            source(
                "reads_table",
                "sql",
                "select ssn from \"USERS\" where id = $1",
            ),
            source("escaped", "sql", "select ssn from U&\"\\0075sers\""),
            source("dynamic", "plpgsql", "begin return query execute $1; end"),
            source("texty", "sql", "select ts_rewrite($1, $2)"),
            source("alias", "internal", "query_to_xml"),
            source("harmless_c", "c", "pg_trgm_similarity"),
            source("python", "plpython3u", "return 1"),
            source("gather", "aggregate", "public.outer_fn -"),
            source("plain", "sql", "select $1 + 1"),
            // a word that only contains a reader's name
            source("texty_not", "sql", "select my_ts_rewrite_table from orders"),
            // names as PostgreSQL keeps them: mixed case, quoted in bodies
            source("GetSSN", "sql", "select ssn from users where id = $1"),
            source("quoted_call", "sql", "select \"GetSSN\"($1)"),
            source("agg_quoted", "aggregate", "public.\"GetSSN\" -"),
            // a body that uses an operator built on a reading function
            source("uses_op", "sql", "select $1 ### 2"),
            // a body that changes the search path
            source(
                "paths",
                "plpgsql",
                "begin perform set_config('Search_Path', 'public, pg_catalog', false); end",
            ),
        ];
        let operators = [
            ("###".to_string(), "inner_fn".to_string()),
            ("&&&".to_string(), "plain".to_string()),
        ];
        assert!(c.rate_functions(&functions, &operators));
        let risk = |n: &str| c.functions.get(n).copied();
        for n in [
            "outer_fn",
            "inner_fn",
            "reads_table",
            "escaped",
            "dynamic",
            "texty",
            "alias",
            "python",
            "gather",
            "GetSSN",
            "quoted_call",
            "agg_quoted",
            "uses_op",
            "paths",
        ] {
            assert_eq!(risk(n), Some(FunctionRisk::ReadsMasked), "{n}");
        }
        for n in ["harmless_c", "plain", "texty_not"] {
            assert_eq!(risk(n), Some(FunctionRisk::Opaque), "{n}");
        }
        // Nothing grows on a second pass.
        assert!(!c.rate_functions(&functions, &operators));
        // Operators are refused by their functions' rating, attribute notation calls functions.
        let refused = |sql: &str| analyze_output(&c, sql).refuse.is_some();
        assert!(refused("select 1 ### 2"));
        assert!(!refused("select 1 &&& 2"));
        // An operator on an opaque function is not refused next to a masked table (an
        // extension's operators would all be); its result carries its operands' taint.
        assert!(!refused("select ssn &&& 1 from users"));
        assert_eq!(
            analyze_output(&c, "select ssn &&& 1 from users").columns,
            Some(vec![m(R)])
        );
        // A domain's CHECK runs where the statement shows a cast.
        assert!(refused(
            "create domain d as text check (set_config('x.y', value, false) is not null)"
        ));
        assert!(!refused("create domain d2 as text"));
        assert!(refused("select o.outer_fn from orders o"));
        assert!(refused("select (o).outer_fn from orders o"));
        assert!(!refused("select o.total from orders o"));
        assert!(refused("select ts_rewrite('a'::tsquery, 'select 1')"));
        assert!(refused("create extension tablefunc"));
        assert!(refused("alter function plain(int) security definer"));
        assert!(refused(
            "create foreign table f (ssn text) server loop options (table_name 'users')"
        ));
    }
}
