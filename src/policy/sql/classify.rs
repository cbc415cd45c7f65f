//! What one statement does, read off its whole parse tree: its operations (a kind and the
//! relation it acts on), the relations it reads, and the parts policy cannot see.
//!
//! The walk visits every node of the generic tree (see `tree.rs`). Each statement node
//! (`DeleteStmt`, `CreateTableAsStmt`, a `SelectStmt` in a CTE...) opens a *frame*: the
//! relations met under its target fields become its operations, every other relation met
//! outside a nested frame is a read (`SELECT on rel`). Nested statements open their own frames
//! wherever they are (CTEs, `PREPARE`, `CREATE RULE` actions, `COPY (query)`, SQL routine
//! bodies), except under a plain `EXPLAIN`, which runs nothing: there every relation is an
//! `EXPLAIN` operation.

use std::ops::Range;

use pg_query::protobuf::{
    AlterTableType, CmdType, GrantTargetType, ObjectType, OnConflictAction, TransactionStmtKind,
    VariableSetKind,
};

use super::tree::{Node, Value};
use super::{truth, Opaque, Operation, Relation, Statement};

/// Functions that run SQL given as a string, reach tables named by a string, or reach the
/// server's files: a call of one (or any other reference by name, such as `CREATE OPERATOR ...
/// (PROCEDURE = dblink_exec)`) makes a statement opaque. Matched on the last part of the name,
/// in any schema and case. Column names and string constants do not count.
pub const DYNAMIC_FUNCTIONS: &[(&str, &str)] = &[
    ("dblink", "runs a query given as a string (dblink)"),
    ("dblink_exec", "runs a statement given as a string (dblink)"),
    ("dblink_open", "runs a query given as a string (dblink)"),
    (
        "dblink_send_query",
        "runs a query given as a string (dblink)",
    ),
    ("query_to_xml", "runs a query given as a string"),
    ("query_to_xmlschema", "runs a query given as a string"),
    (
        "query_to_xml_and_xmlschema",
        "runs a query given as a string",
    ),
    ("table_to_xml", "reads a table named by a string"),
    ("table_to_xmlschema", "reads a table named by a string"),
    (
        "table_to_xml_and_xmlschema",
        "reads a table named by a string",
    ),
    (
        "schema_to_xml",
        "reads every table of a schema named by a string",
    ),
    (
        "schema_to_xmlschema",
        "reads every table of a schema named by a string",
    ),
    (
        "schema_to_xml_and_xmlschema",
        "reads every table of a schema named by a string",
    ),
    ("database_to_xml", "reads every table of the database"),
    ("database_to_xmlschema", "reads every table of the database"),
    (
        "database_to_xml_and_xmlschema",
        "reads every table of the database",
    ),
    ("ts_stat", "runs a query given as a string"),
    ("ts_rewrite", "runs a query given as a string"),
    ("crosstab", "runs queries given as strings (tablefunc)"),
    ("crosstab2", "runs a query given as a string (tablefunc)"),
    ("crosstab3", "runs a query given as a string (tablefunc)"),
    ("crosstab4", "runs a query given as a string (tablefunc)"),
    ("connectby", "reads a table named by a string (tablefunc)"),
    ("xpath_table", "reads a table named by a string (xml2)"),
    (
        "pg_background_launch",
        "runs a statement given as a string (pg_background)",
    ),
    ("schedule", "runs SQL given as a string later (pg_cron)"),
    (
        "schedule_in_database",
        "runs SQL given as a string later (pg_cron)",
    ),
    ("alter_job", "changes SQL that pg_cron runs later"),
    ("lo_import", "reads a file on the database server"),
    ("lo_export", "writes a file on the database server"),
    ("pg_read_file", "reads a file on the database server"),
    ("pg_read_binary_file", "reads a file on the database server"),
    ("pg_ls_dir", "lists a directory on the database server"),
    ("pg_stat_file", "reads file metadata on the database server"),
    (
        "pg_file_write",
        "writes a file on the database server (adminpack)",
    ),
    (
        "pg_file_rename",
        "renames a file on the database server (adminpack)",
    ),
    (
        "pg_file_unlink",
        "deletes a file on the database server (adminpack)",
    ),
    (
        "pg_file_sync",
        "reaches a file on the database server (adminpack)",
    ),
];

/// How deep SQL routine bodies are analysed (`CREATE FUNCTION ... AS 'CREATE FUNCTION ...'`).
const MAX_BODY_LEVEL: usize = 4;

/// Classifies one statement's tree. `level` counts the routine bodies it sits in.
pub(super) fn statement(tree: &Value, span: Range<usize>, level: usize) -> Statement {
    let mut walker = Walker {
        frames: Vec::new(),
        operations: Vec::new(),
        opaque: Vec::new(),
        level,
        params_decide: false,
    };
    walker.value(tree, Ctx::default());
    let mut st = Statement::new(span, walker.operations, walker.opaque);
    st.params_decide = walker.params_decide;
    st
}

/// Every kind an operation can have besides `SET`/`RESET`/`SHOW <parameter>` and the
/// `CREATE`/`ALTER`/`DROP <object type>` families (see [`object_words`]).
pub(super) const FIXED_KINDS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "TRUNCATE",
    "CREATE TABLE AS",
    "CREATE OR REPLACE VIEW",
    "CREATE OR REPLACE FUNCTION",
    "CREATE OR REPLACE PROCEDURE",
    "CREATE OR REPLACE RULE",
    "DROP OWNED",
    "DROP COLUMN",
    "GRANT",
    "REVOKE",
    "COPY FROM PROGRAM",
    "COPY TO PROGRAM",
    "COPY PROGRAM",
    "COPY FROM FILE",
    "COPY TO FILE",
    "COPY FILE",
    "COPY FROM STDIN",
    "COPY TO STDOUT",
    "SET",
    "RESET",
    "SHOW",
    "BEGIN",
    "START TRANSACTION",
    "COMMIT",
    "COMMIT PREPARED",
    "ROLLBACK",
    "ROLLBACK TO SAVEPOINT",
    "ROLLBACK PREPARED",
    "SAVEPOINT",
    "RELEASE SAVEPOINT",
    "PREPARE TRANSACTION",
    "LISTEN",
    "UNLISTEN",
    "NOTIFY",
    "VACUUM FULL",
    "ANALYZE",
    "EXPLAIN ANALYZE",
    "CLUSTER",
    "REINDEX",
    "CHECKPOINT",
    "DISCARD",
    "LOCK",
    "LOAD",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DECLARE",
    "FETCH",
    "MOVE",
    "CLOSE",
    "DO",
    "CALL",
    "ALTER SYSTEM",
    "IMPORT FOREIGN SCHEMA",
    "COMMENT",
    "SECURITY LABEL",
    "REFRESH MATERIALIZED VIEW",
    "REASSIGN OWNED",
];

/// Where relations met in a frame go.
#[derive(Clone, Copy, Default)]
struct Ctx {
    /// Index of the innermost frame.
    frame: Option<usize>,
    /// Inside one of the frame's target fields.
    target: bool,
    /// Under a plain `EXPLAIN`: nothing runs, nested statements open no frame.
    inert: bool,
}

struct Frame {
    kinds: Vec<String>,
    targets: Vec<Relation>,
    without_where: bool,
}

struct Walker {
    frames: Vec<Frame>,
    operations: Vec<Operation>,
    opaque: Vec<Opaque>,
    level: usize,
    /// `Statement::params_decide`.
    params_decide: bool,
}

impl Walker {
    fn value(&mut self, v: &Value, ctx: Ctx) {
        match v {
            Value::Node(n) => self.node(n, ctx),
            Value::List(items) => {
                for item in items {
                    self.value(item, ctx);
                }
            }
            _ => {}
        }
    }

    fn node(&mut self, n: &Node, ctx: Ctx) {
        match n.kind {
            // Constants and column names hold nothing to see.
            "AConst" | "ColumnRef" => return,
            "String" => {
                self.name(n.str("sval"));
                return;
            }
            "RangeVar" => {
                let rel = Relation::new(n.str("schemaname"), n.str("relname"));
                self.relation(rel, ctx);
                return;
            }
            "FuncCall" if !ctx.inert => self.func_call(n),
            _ => {}
        }
        if ctx.inert {
            self.fields(n, ctx, |_| true);
            return;
        }
        // `SET` inside another statement (`ALTER SYSTEM SET`, `ALTER ROLE ... SET`, `CREATE
        // FUNCTION ... SET`) configures that object, not the session.
        let nested_set = n.kind == "VariableSetStmt" && !self.frames.is_empty();
        match statement_kinds(n).filter(|_| !nested_set) {
            Some(kinds) => self.frame(n, kinds),
            None => self.fields(n, ctx, |_| ctx.target),
        }
    }

    fn fields(&mut self, n: &Node, ctx: Ctx, target: impl Fn(&str) -> bool) {
        for (name, value) in &n.fields {
            let ctx = Ctx {
                target: target(name),
                ..ctx
            };
            self.value(value, ctx);
        }
    }

    /// A statement node: its operations come first, then those of what it holds.
    fn frame(&mut self, n: &Node, kinds: Vec<String>) {
        let at = self.operations.len();
        let mut without_where = false;
        let mut inert = false;
        match n.kind {
            "DeleteStmt" | "UpdateStmt" => {
                without_where = truth::always_true(n.node("where_clause"));
                self.params_decide |= !without_where
                    && n.node("where_clause")
                        .is_some_and(truth::may_hold_for_every_row);
            }
            "ExplainStmt" => inert = !explain_runs(n),
            "ExecuteStmt" => self.opaque.push(Opaque::Execute {
                name: n.str("name").to_owned(),
            }),
            "DoStmt" => self.opaque.push(Opaque::Do),
            "CreateFunctionStmt" => self.routine(n),
            "CopyStmt" if n.flag("is_program") => {
                self.opaque.push(Opaque::ServerCopy { program: true })
            }
            "CopyStmt" if !n.flag("is_from") && !n.str("filename").is_empty() => {
                self.opaque.push(Opaque::ServerCopy { program: false })
            }
            _ => {}
        }
        let index = self.frames.len();
        self.frames.push(Frame {
            kinds,
            targets: object_relations(n),
            without_where,
        });
        let targets = target_fields(n.kind);
        let inner = Ctx {
            frame: Some(index),
            target: false,
            inert,
        };
        for (field, value) in &n.fields {
            match (n.kind, *field) {
                // Its target becomes an operation of its own (see `extra_operations`).
                ("SelectStmt", "into_clause") => continue,
                // Part of this statement, not a statement of its own.
                ("CreateForeignTableStmt", "base_stmt") => {
                    if let Some(base) = value.as_node() {
                        let ctx = Ctx {
                            target: true,
                            ..inner
                        };
                        self.fields(base, ctx, |_| true);
                    }
                    continue;
                }
                _ => {}
            }
            let target = inert || targets.is_none_or(|fields| fields.contains(field));
            self.value(value, Ctx { target, ..inner });
        }
        let Some(frame) = self.frames.pop() else {
            return;
        };
        let mut own = Vec::new();
        let main = frame.targets.first().cloned();
        // A nested query that reads no relation does nothing worth an operation (the `VALUES`
        // of an `INSERT`, `(SELECT 1)`).
        let idle = frame.kinds == ["SELECT"] && (!self.frames.is_empty() || self.level > 0);
        if frame.targets.is_empty() && !idle {
            own.push(Operation {
                kinds: frame.kinds,
                relation: None,
                without_where: frame.without_where,
            });
        } else {
            for rel in frame.targets {
                own.push(Operation {
                    kinds: frame.kinds.clone(),
                    relation: Some(rel),
                    without_where: frame.without_where,
                });
            }
        }
        own.extend(extra_operations(n, main));
        let at = at.min(self.operations.len());
        self.operations.splice(at..at, own);
    }

    fn relation(&mut self, rel: Relation, ctx: Ctx) {
        if ctx.target {
            if let Some(frame) = ctx.frame.and_then(|i| self.frames.get_mut(i)) {
                if !frame.targets.contains(&rel) {
                    frame.targets.push(rel);
                }
                return;
            }
        }
        self.operations.push(Operation {
            kinds: vec!["SELECT".to_owned()],
            relation: Some(rel),
            without_where: false,
        });
    }

    /// An identifier: one of [`DYNAMIC_FUNCTIONS`] makes the statement opaque.
    fn name(&mut self, name: &str) {
        if let Some((f, why)) = DYNAMIC_FUNCTIONS
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(name))
        {
            let o = Opaque::Function {
                name: (*f).to_owned(),
                why,
            };
            if !self.opaque.contains(&o) {
                self.opaque.push(o);
            }
        }
    }

    /// `set_config(name, value, local)` is `SET name`.
    fn func_call(&mut self, n: &Node) {
        let is_set_config = n
            .list("funcname")
            .last()
            .and_then(Value::as_node)
            .and_then(Node::sval)
            .is_some_and(|f| f.eq_ignore_ascii_case("set_config"));
        if !is_set_config {
            return;
        }
        let parameter = n
            .list("args")
            .first()
            .and_then(Value::as_node)
            .and_then(truth::fold);
        let mut kinds = vec!["SET".to_owned()];
        match parameter {
            Some(truth::Const::Text(p)) => kinds.push(format!("SET {}", parameter_words(&p))),
            _ => self.opaque.push(Opaque::Function {
                name: "set_config".to_owned(),
                why: "sets a parameter whose name is computed",
            }),
        }
        self.operations.push(Operation {
            kinds,
            relation: None,
            without_where: false,
        });
    }

    /// `CREATE FUNCTION`/`PROCEDURE`: a body in SQL is analysed as part of the statement
    /// (what it would run counts now), any other language is opaque.
    fn routine(&mut self, n: &Node) {
        if n.has("sql_body") {
            // `BEGIN ATOMIC ... END` or `RETURN ...`: parsed with the statement, walked below.
            return;
        }
        let option = |name: &str| {
            n.list("options")
                .iter()
                .filter_map(Value::as_node)
                .rfind(|d| d.kind == "DefElem" && d.str("defname") == name)
                .and_then(|d| d.node("arg"))
        };
        let language = option("language")
            .and_then(Node::sval)
            .unwrap_or_default()
            .to_owned();
        if !language.eq_ignore_ascii_case("sql") {
            self.opaque.push(Opaque::Routine { language });
            return;
        }
        let body: Vec<&str> = option("as")
            .map(|b| b.list("items"))
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_node().and_then(Node::sval))
            .collect();
        let [body] = body.as_slice() else {
            self.opaque.push(Opaque::Body {
                why: "it is not one string".to_owned(),
            });
            return;
        };
        if self.level >= MAX_BODY_LEVEL {
            self.opaque.push(Opaque::Body {
                why: format!("routine bodies nest more than {MAX_BODY_LEVEL} deep"),
            });
            return;
        }
        match super::parse(body)
            .and_then(|parsed| super::statements(body, &parsed, self.level + 1, &mut |_| {}))
        {
            Ok(statements) => {
                for inner in statements {
                    self.operations.extend(inner.operations);
                    for o in inner.opaque {
                        if !self.opaque.contains(&o) {
                            self.opaque.push(o);
                        }
                    }
                }
            }
            Err(e) => self.opaque.push(Opaque::Body { why: e.to_string() }),
        }
    }
}

/// The kinds of a statement node, `None` for other nodes.
fn statement_kinds(n: &Node) -> Option<Vec<String>> {
    let fixed = |k: &str| Some(vec![k.to_owned()]);
    let object =
        |verb: &str, field: &str| Some(vec![format!("{verb} {}", object_words(n.int(field)))]);
    let or_replace = |base: &str| {
        let mut kinds = vec![format!("CREATE {base}")];
        if n.flag("replace") {
            kinds.push(format!("CREATE OR REPLACE {base}"));
        }
        Some(kinds)
    };
    let grant = || {
        fixed(if n.flag("is_grant") {
            "GRANT"
        } else {
            "REVOKE"
        })
    };
    match n.kind {
        "SelectStmt" => fixed("SELECT"),
        "InsertStmt" => fixed("INSERT"),
        "UpdateStmt" => fixed("UPDATE"),
        "DeleteStmt" => fixed("DELETE"),
        "MergeStmt" => fixed("MERGE"),
        "TruncateStmt" => fixed("TRUNCATE"),
        "CopyStmt" => Some(copy_kinds(n)),
        "DropStmt" => object("DROP", "remove_type"),
        "DropdbStmt" => fixed("DROP DATABASE"),
        "DropRoleStmt" => fixed("DROP ROLE"),
        "DropTableSpaceStmt" => fixed("DROP TABLESPACE"),
        "DropUserMappingStmt" => fixed("DROP USER MAPPING"),
        "DropSubscriptionStmt" => fixed("DROP SUBSCRIPTION"),
        "DropOwnedStmt" => fixed("DROP OWNED"),
        "CreateStmt" => fixed("CREATE TABLE"),
        "CreateTableAsStmt" => {
            let matview = n.int("objtype") == ObjectType::ObjectMatview as i64;
            fixed(if matview {
                "CREATE MATERIALIZED VIEW"
            } else {
                "CREATE TABLE AS"
            })
        }
        "ViewStmt" => or_replace("VIEW"),
        "CreateFunctionStmt" => or_replace(if n.flag("is_procedure") {
            "PROCEDURE"
        } else {
            "FUNCTION"
        }),
        "RuleStmt" => or_replace("RULE"),
        "AlterFunctionStmt" => object("ALTER", "objtype"),
        "CreateSchemaStmt" => fixed("CREATE SCHEMA"),
        "CreateSeqStmt" => fixed("CREATE SEQUENCE"),
        "AlterSeqStmt" => fixed("ALTER SEQUENCE"),
        "IndexStmt" => fixed("CREATE INDEX"),
        "CreateTrigStmt" => fixed("CREATE TRIGGER"),
        "CreateEventTrigStmt" => fixed("CREATE EVENT TRIGGER"),
        "AlterEventTrigStmt" => fixed("ALTER EVENT TRIGGER"),
        "CreatePolicyStmt" => fixed("CREATE POLICY"),
        "AlterPolicyStmt" => fixed("ALTER POLICY"),
        // Role membership given the old ways (`CREATE ROLE x IN ROLE admin`, `ALTER GROUP admin
        // ADD USER x`) is a GRANT; a role's default `role` or `session_authorization` is a
        // SET ROLE (SET SESSION AUTHORIZATION) in each of its later sessions.
        "CreateRoleStmt" | "AlterRoleStmt" => {
            let mut kinds = vec![if n.kind == "CreateRoleStmt" {
                "CREATE ROLE".to_owned()
            } else {
                "ALTER ROLE".to_owned()
            }];
            let members = n
                .list("options")
                .iter()
                .filter_map(Value::as_node)
                .any(|o| ["rolemembers", "addroleto", "adminmembers"].contains(&o.str("defname")));
            if members {
                let adds = n.kind == "CreateRoleStmt" || n.int("action") >= 0;
                kinds.push(if adds { "GRANT" } else { "REVOKE" }.to_owned());
            }
            Some(kinds)
        }
        // A default `role` (or `session_authorization`) for a role's or a database's later
        // sessions is a SET ROLE in each of them.
        "AlterRoleSetStmt" | "AlterDatabaseSetStmt" => {
            let mut kinds = vec![if n.kind == "AlterRoleSetStmt" {
                "ALTER ROLE".to_owned()
            } else {
                "ALTER DATABASE".to_owned()
            }];
            if let Some(set) = n.node("setstmt") {
                let name = set.str("name");
                let sets = set.int("kind") == VariableSetKind::VarSetValue as i64;
                if sets && ["role", "session_authorization"].contains(&name) {
                    kinds.push(format!("SET {}", parameter_words(name)));
                }
            }
            Some(kinds)
        }
        "GrantStmt" | "GrantRoleStmt" => grant(),
        "AlterDefaultPrivilegesStmt" => fixed("ALTER DEFAULT PRIVILEGES"),
        "VariableSetStmt" => Some(set_kinds(n)),
        "VariableShowStmt" => Some(vec![
            "SHOW".to_owned(),
            format!("SHOW {}", parameter_words(n.str("name"))),
        ]),
        "TransactionStmt" => Some(transaction_kinds(n)),
        "ListenStmt" => fixed("LISTEN"),
        "UnlistenStmt" => fixed("UNLISTEN"),
        "NotifyStmt" => fixed("NOTIFY"),
        "VacuumStmt" if !n.flag("is_vacuumcmd") => fixed("ANALYZE"),
        "VacuumStmt" => {
            let mut kinds = vec!["VACUUM".to_owned()];
            if option_set(n, "full") {
                kinds.push("VACUUM FULL".to_owned());
            }
            Some(kinds)
        }
        "ExplainStmt" if explain_runs(n) => fixed("EXPLAIN ANALYZE"),
        "ExplainStmt" => fixed("EXPLAIN"),
        "ClusterStmt" => fixed("CLUSTER"),
        "ReindexStmt" => fixed("REINDEX"),
        "CheckPointStmt" => fixed("CHECKPOINT"),
        "DiscardStmt" => fixed("DISCARD"),
        "LockStmt" => fixed("LOCK"),
        "ConstraintsSetStmt" => Some(vec!["SET".to_owned(), "SET CONSTRAINTS".to_owned()]),
        "LoadStmt" => fixed("LOAD"),
        "PrepareStmt" => fixed("PREPARE"),
        "ExecuteStmt" => fixed("EXECUTE"),
        "DeallocateStmt" => fixed("DEALLOCATE"),
        "DeclareCursorStmt" => fixed("DECLARE"),
        "FetchStmt" => fixed(if n.flag("ismove") { "MOVE" } else { "FETCH" }),
        "ClosePortalStmt" => fixed("CLOSE"),
        "DoStmt" => fixed("DO"),
        "CallStmt" => fixed("CALL"),
        "AlterSystemStmt" => fixed("ALTER SYSTEM"),
        "AlterTableStmt" => {
            let mut kinds = vec![format!("ALTER {}", object_words(n.int("objtype")))];
            let drops_column = n.list("cmds").iter().filter_map(Value::as_node).any(|c| {
                c.kind == "AlterTableCmd" && c.int("subtype") == AlterTableType::AtDropColumn as i64
            });
            if drops_column {
                kinds.push("DROP COLUMN".to_owned());
            }
            Some(kinds)
        }
        "RenameStmt" => {
            let renamed = n.int("rename_type");
            let on = [
                ObjectType::ObjectColumn,
                ObjectType::ObjectAttribute,
                ObjectType::ObjectTabconstraint,
            ];
            if on.iter().any(|o| *o as i64 == renamed) {
                object("ALTER", "relation_type")
            } else if renamed == ObjectType::ObjectDomconstraint as i64 {
                fixed("ALTER DOMAIN")
            } else {
                object("ALTER", "rename_type")
            }
        }
        "AlterObjectSchemaStmt" | "AlterOwnerStmt" | "AlterObjectDependsStmt" => {
            object("ALTER", "object_type")
        }
        "AlterDomainStmt" => fixed("ALTER DOMAIN"),
        "AlterEnumStmt" | "AlterTypeStmt" => fixed("ALTER TYPE"),
        "CompositeTypeStmt" | "CreateEnumStmt" | "CreateRangeStmt" => fixed("CREATE TYPE"),
        "CreateExtensionStmt" => fixed("CREATE EXTENSION"),
        "AlterExtensionStmt" | "AlterExtensionContentsStmt" => fixed("ALTER EXTENSION"),
        "CreatedbStmt" => fixed("CREATE DATABASE"),
        "AlterDatabaseStmt" | "AlterDatabaseRefreshCollStmt" => fixed("ALTER DATABASE"),
        "CreateTableSpaceStmt" => fixed("CREATE TABLESPACE"),
        "AlterTableSpaceOptionsStmt" => fixed("ALTER TABLESPACE"),
        "AlterTableMoveAllStmt" => object("ALTER", "objtype"),
        "CreateFdwStmt" => fixed("CREATE FOREIGN DATA WRAPPER"),
        "AlterFdwStmt" => fixed("ALTER FOREIGN DATA WRAPPER"),
        "CreateForeignServerStmt" => fixed("CREATE SERVER"),
        "AlterForeignServerStmt" => fixed("ALTER SERVER"),
        "CreateForeignTableStmt" => fixed("CREATE FOREIGN TABLE"),
        "CreateUserMappingStmt" => fixed("CREATE USER MAPPING"),
        "AlterUserMappingStmt" => fixed("ALTER USER MAPPING"),
        "ImportForeignSchemaStmt" => fixed("IMPORT FOREIGN SCHEMA"),
        "CreateAmStmt" => fixed("CREATE ACCESS METHOD"),
        "CreatePlangStmt" => fixed("CREATE LANGUAGE"),
        "CreateDomainStmt" => fixed("CREATE DOMAIN"),
        "DefineStmt" => object("CREATE", "kind"),
        "CreateOpClassStmt" => fixed("CREATE OPERATOR CLASS"),
        "CreateOpFamilyStmt" => fixed("CREATE OPERATOR FAMILY"),
        "AlterOpFamilyStmt" => fixed("ALTER OPERATOR FAMILY"),
        "AlterOperatorStmt" => fixed("ALTER OPERATOR"),
        "CommentStmt" => fixed("COMMENT"),
        "SecLabelStmt" => fixed("SECURITY LABEL"),
        "CreateStatsStmt" => fixed("CREATE STATISTICS"),
        "AlterStatsStmt" => fixed("ALTER STATISTICS"),
        "AlterCollationStmt" => fixed("ALTER COLLATION"),
        "RefreshMatViewStmt" => fixed("REFRESH MATERIALIZED VIEW"),
        "CreateConversionStmt" => fixed("CREATE CONVERSION"),
        "CreateCastStmt" => fixed("CREATE CAST"),
        "CreateTransformStmt" => fixed("CREATE TRANSFORM"),
        "ReassignOwnedStmt" => fixed("REASSIGN OWNED"),
        "AlterTsdictionaryStmt" => fixed("ALTER TEXT SEARCH DICTIONARY"),
        "AlterTsconfigurationStmt" => fixed("ALTER TEXT SEARCH CONFIGURATION"),
        "CreatePublicationStmt" => fixed("CREATE PUBLICATION"),
        "AlterPublicationStmt" => fixed("ALTER PUBLICATION"),
        "CreateSubscriptionStmt" => fixed("CREATE SUBSCRIPTION"),
        "AlterSubscriptionStmt" => fixed("ALTER SUBSCRIPTION"),
        // Parts of other statements, not statements of their own.
        "ReplicaIdentityStmt" | "ReturnStmt" | "PlassignStmt" | "RawStmt" | "SetOperationStmt" => {
            None
        }
        // A statement type this table does not know yet: named after its node.
        other => other.strip_suffix("Stmt").map(|name| vec![words_of(name)]),
    }
}

/// The fields whose relations are a statement's own targets; `None`: all of them. For the
/// data-changing statements, other relations (`USING`, `FROM`, subqueries) are reads.
fn target_fields(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" | "CopyStmt" => {
            Some(&["relation"])
        }
        _ => None,
    }
}

/// Operations a statement performs besides its main one: `SELECT INTO` creates a table,
/// `INSERT ... ON CONFLICT DO UPDATE` updates, and each `WHEN` clause of a `MERGE` deletes,
/// updates or inserts.
fn extra_operations(n: &Node, target: Option<Relation>) -> Vec<Operation> {
    let op = |kind: &str, without_where: bool| Operation {
        kinds: vec![kind.to_owned()],
        relation: target.clone(),
        without_where,
    };
    match n.kind {
        "SelectStmt" => n
            .node("into_clause")
            .and_then(|into| into.node("rel"))
            .map(|rel| Operation {
                kinds: vec!["CREATE TABLE AS".to_owned()],
                relation: Some(Relation::new(rel.str("schemaname"), rel.str("relname"))),
                without_where: false,
            })
            .into_iter()
            .collect(),
        "InsertStmt" => {
            let Some(update) = n
                .node("on_conflict_clause")
                .filter(|c| c.int("action") == OnConflictAction::OnconflictUpdate as i64)
            else {
                return Vec::new();
            };
            // Rows read from a relation (not a VALUES list, nor parameters unnested) may
            // conflict with every row.
            let from_relation = n.node("select_stmt").is_some_and(names_relation);
            vec![op(
                "UPDATE",
                from_relation && truth::always_true(update.node("where_clause")),
            )]
        }
        // (A composite type's or a foreign table's attributes hold no rows here.)
        "AlterTableStmt"
            if ![
                ObjectType::ObjectType as i64,
                ObjectType::ObjectForeignTable as i64,
            ]
            .contains(&n.int("objtype")) =>
        {
            let retypes = n.list("cmds").iter().filter_map(Value::as_node).any(|c| {
                c.kind == "AlterTableCmd"
                    && c.int("subtype") == AlterTableType::AtAlterColumnType as i64
            });
            if retypes {
                vec![op("UPDATE", true)]
            } else {
                Vec::new()
            }
        }
        "MergeStmt" => {
            let joins_all = truth::always_true(n.node("join_condition"));
            n.list("merge_when_clauses")
                .iter()
                .filter_map(Value::as_node)
                .filter_map(|clause| {
                    let all = joins_all && truth::always_true(clause.node("condition"));
                    let command = clause.int("command_type");
                    if command == CmdType::CmdDelete as i64 {
                        Some(op("DELETE", all))
                    } else if command == CmdType::CmdUpdate as i64 {
                        Some(op("UPDATE", all))
                    } else if command == CmdType::CmdInsert as i64 {
                        Some(op("INSERT", false))
                    } else {
                        None
                    }
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Whether a subtree names a relation (a `RangeVar` anywhere in it).
fn names_relation(n: &Node) -> bool {
    n.holds(&["RangeVar"])
}

/// Relations that a statement names by a list of names rather than a `RangeVar`
/// (`DROP TABLE a, s.b`, `DROP TRIGGER t ON s.b`, `COMMENT ON TABLE s.b`).
fn object_relations(n: &Node) -> Vec<Relation> {
    let names = |objects: &[Value]| -> Vec<Relation> {
        objects
            .iter()
            .filter_map(|o| o.as_node().and_then(Node::sval))
            .map(Relation::schema)
            .collect()
    };
    // Statements on whole schemas act on every relation in them; DROP OWNED and REASSIGN
    // OWNED on every relation a role owns, in any schema.
    let schema = ObjectType::ObjectSchema as i64;
    match n.kind {
        "DropStmt" if n.int("remove_type") == schema => return names(n.list("objects")),
        "RenameStmt" if n.int("rename_type") == schema => {
            return vec![Relation::schema(n.str("subname"))]
        }
        "AlterOwnerStmt" if n.int("object_type") == schema => {
            return names(std::slice::from_ref(n.get("object")))
        }
        "GrantStmt" if n.int("targtype") == GrantTargetType::AclTargetAllInSchema as i64 => {
            return names(n.list("objects"))
        }
        "DropOwnedStmt" | "ReassignOwnedStmt" => return vec![Relation::any()],
        _ => {}
    }
    let (type_field, objects) = match n.kind {
        "DropStmt" => ("remove_type", n.list("objects")),
        "CommentStmt" | "SecLabelStmt" | "AlterExtensionContentsStmt" => {
            ("objtype", std::slice::from_ref(n.get("object")))
        }
        _ => return Vec::new(),
    };
    let objtype = n.int(type_field);
    let is = |types: &[ObjectType]| types.iter().any(|t| *t as i64 == objtype);
    let drop_last = if is(&[
        ObjectType::ObjectTable,
        ObjectType::ObjectView,
        ObjectType::ObjectMatview,
        ObjectType::ObjectSequence,
        ObjectType::ObjectForeignTable,
        ObjectType::ObjectIndex,
    ]) {
        false
    } else if is(&[
        ObjectType::ObjectRule,
        ObjectType::ObjectTrigger,
        ObjectType::ObjectPolicy,
        ObjectType::ObjectColumn,
        ObjectType::ObjectTabconstraint,
    ]) {
        true
    } else {
        return Vec::new();
    };
    objects
        .iter()
        .filter_map(Value::as_node)
        .filter_map(|o| {
            let mut names: Vec<&str> = match o.kind {
                "List" => o
                    .list("items")
                    .iter()
                    .filter_map(|i| i.as_node().and_then(Node::sval))
                    .collect(),
                _ => o.sval().into_iter().collect(),
            };
            if drop_last {
                names.pop();
            }
            let name = names.pop()?;
            Some(Relation::new(names.pop().unwrap_or_default(), name))
        })
        .collect()
}

fn copy_kinds(n: &Node) -> Vec<String> {
    let from = n.flag("is_from");
    let dir = if from { "FROM" } else { "TO" };
    let mut kinds = Vec::new();
    if n.flag("is_program") {
        kinds.push(format!("COPY {dir} PROGRAM"));
        kinds.push("COPY PROGRAM".to_owned());
    } else if !n.str("filename").is_empty() {
        kinds.push(format!("COPY {dir} FILE"));
        kinds.push("COPY FILE".to_owned());
    } else if from {
        kinds.push("COPY FROM STDIN".to_owned());
    } else {
        kinds.push("COPY TO STDOUT".to_owned());
    }
    // COPY FROM inserts rows; COPY TO a table reads it.
    if from {
        kinds.push("INSERT".to_owned());
    } else if n.has("relation") {
        kinds.push("SELECT".to_owned());
    }
    kinds
}

fn set_kinds(n: &Node) -> Vec<String> {
    let kind = i32::try_from(n.int("kind"))
        .ok()
        .and_then(|k| VariableSetKind::try_from(k).ok());
    let verb = match kind {
        Some(VariableSetKind::VarReset | VariableSetKind::VarResetAll) => "RESET",
        _ => "SET",
    };
    let mut kinds = vec![verb.to_owned()];
    let name = n.str("name");
    if !name.is_empty() {
        kinds.push(format!("{verb} {}", parameter_words(name)));
    }
    kinds
}

fn transaction_kinds(n: &Node) -> Vec<String> {
    use TransactionStmtKind as K;
    let kind = i32::try_from(n.int("kind"))
        .ok()
        .and_then(|k| K::try_from(k).ok());
    let words: &[&str] = match kind {
        Some(K::TransStmtBegin) => &["BEGIN"],
        Some(K::TransStmtStart) => &["BEGIN", "START TRANSACTION"],
        Some(K::TransStmtCommit) => &["COMMIT"],
        Some(K::TransStmtRollback) => &["ROLLBACK"],
        Some(K::TransStmtSavepoint) => &["SAVEPOINT"],
        Some(K::TransStmtRelease) => &["RELEASE SAVEPOINT"],
        Some(K::TransStmtRollbackTo) => &["ROLLBACK TO SAVEPOINT"],
        Some(K::TransStmtPrepare) => &["PREPARE TRANSACTION"],
        Some(K::TransStmtCommitPrepared) => &["COMMIT PREPARED"],
        Some(K::TransStmtRollbackPrepared) => &["ROLLBACK PREPARED"],
        Some(K::Undefined) | None => &["TRANSACTION"],
    };
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// A run-time parameter's name as kind words: `search_path` is `SEARCH_PATH`,
/// `session_authorization` is `SESSION AUTHORIZATION`.
pub(super) fn parameter_words(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "session_authorization" => "SESSION AUTHORIZATION".to_owned(),
        "timezone" => "TIME ZONE".to_owned(),
        other => other.to_ascii_uppercase(),
    }
}

/// Whether `EXPLAIN` runs its statement: an `ANALYZE` option that is not explicitly false.
fn explain_runs(n: &Node) -> bool {
    option_set(n, "analyze") || option_set(n, "analyse")
}

/// A boolean `DefElem` option in `options` that is present and not false.
fn option_set(n: &Node, name: &str) -> bool {
    n.list("options")
        .iter()
        .filter_map(Value::as_node)
        .filter(|d| d.kind == "DefElem" && d.str("defname").eq_ignore_ascii_case(name))
        .any(|d| {
            let Some(arg) = d.node("arg") else {
                return true;
            };
            let value = match arg.kind {
                "String" => truth::parse_bool(arg.str("sval")),
                "Integer" => {
                    super::constants::read();
                    Some(arg.int("ival") != 0)
                }
                "Boolean" => Some(arg.flag("boolval")),
                _ => truth::fold(arg).and_then(|c| truth::truth(&c)).flatten(),
            };
            // Anything PostgreSQL might read as true counts as true.
            value != Some(false)
        })
}

/// The words for an object type (`DROP <words>`, `ALTER <words>`, `CREATE <words>`).
pub(super) fn object_words(objtype: i64) -> &'static str {
    use ObjectType as O;
    let t = i32::try_from(objtype)
        .ok()
        .and_then(|t| O::try_from(t).ok())
        .unwrap_or(O::Undefined);
    match t {
        O::Undefined => "OBJECT",
        O::ObjectAccessMethod => "ACCESS METHOD",
        O::ObjectAggregate => "AGGREGATE",
        O::ObjectAmop | O::ObjectOperator => "OPERATOR",
        O::ObjectAmproc | O::ObjectFunction => "FUNCTION",
        O::ObjectAttribute => "ATTRIBUTE",
        O::ObjectCast => "CAST",
        O::ObjectColumn => "COLUMN",
        O::ObjectCollation => "COLLATION",
        O::ObjectConversion => "CONVERSION",
        O::ObjectDatabase => "DATABASE",
        O::ObjectDefault => "DEFAULT",
        O::ObjectDefacl => "DEFAULT PRIVILEGES",
        O::ObjectDomain => "DOMAIN",
        O::ObjectDomconstraint | O::ObjectTabconstraint => "CONSTRAINT",
        O::ObjectEventTrigger => "EVENT TRIGGER",
        O::ObjectExtension => "EXTENSION",
        O::ObjectFdw => "FOREIGN DATA WRAPPER",
        O::ObjectForeignServer => "SERVER",
        O::ObjectForeignTable => "FOREIGN TABLE",
        O::ObjectIndex => "INDEX",
        O::ObjectLanguage => "LANGUAGE",
        O::ObjectLargeobject => "LARGE OBJECT",
        O::ObjectMatview => "MATERIALIZED VIEW",
        O::ObjectOpclass => "OPERATOR CLASS",
        O::ObjectOpfamily => "OPERATOR FAMILY",
        O::ObjectParameterAcl => "PARAMETER",
        O::ObjectPolicy => "POLICY",
        O::ObjectProcedure => "PROCEDURE",
        O::ObjectPublication | O::ObjectPublicationNamespace | O::ObjectPublicationRel => {
            "PUBLICATION"
        }
        O::ObjectRole => "ROLE",
        O::ObjectRoutine => "ROUTINE",
        O::ObjectRule => "RULE",
        O::ObjectSchema => "SCHEMA",
        O::ObjectSequence => "SEQUENCE",
        O::ObjectSubscription => "SUBSCRIPTION",
        O::ObjectStatisticExt => "STATISTICS",
        O::ObjectTable => "TABLE",
        O::ObjectTablespace => "TABLESPACE",
        O::ObjectTransform => "TRANSFORM",
        O::ObjectTrigger => "TRIGGER",
        O::ObjectTsconfiguration => "TEXT SEARCH CONFIGURATION",
        O::ObjectTsdictionary => "TEXT SEARCH DICTIONARY",
        O::ObjectTsparser => "TEXT SEARCH PARSER",
        O::ObjectTstemplate => "TEXT SEARCH TEMPLATE",
        O::ObjectType => "TYPE",
        O::ObjectUserMapping => "USER MAPPING",
        O::ObjectView => "VIEW",
    }
}

/// `AlterFooBar` as `ALTER FOO BAR`.
fn words_of(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
