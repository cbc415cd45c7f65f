//! Does a `WHERE` condition hold for every row? Constant folding over the handful of node
//! types a trivially true condition is written with (see "Without WHERE" in `sql.rs`). An answer
//! of "maybe" counts as a real condition.

use pg_query::protobuf::{AExprKind, BoolExprType, BoolTestType, NullTestType};

use super::tree::Node;

/// True when there is no condition, it is true whatever the row holds, or it reads nothing of
/// a row at all: then it holds for every row or for none (`WHERE $1`, `WHERE 1 IN (1)`,
/// `WHERE now() > '2000-01-01'`), unless its value is known and not true (`WHERE 1 = 0`,
/// `WHERE NULL`).
pub(super) fn always_true(cond: Option<&Node>) -> bool {
    cond.is_none_or(|c| {
        let value = fold(c).and_then(|v| truth(&v));
        value == Some(Some(true)) || (value.is_none() && !reads_a_row(c))
    })
}

/// Whether values bound to its parameters could make a condition true for every row: it, or
/// enough of its `AND`/`OR` branches, read parameters and no column (`$1 IS NULL OR id = $1`;
/// not `id = $1`, which needs a row to hold).
pub(super) fn may_hold_for_every_row(n: &Node) -> bool {
    fn branch(n: &Node) -> bool {
        if n.kind == "BoolExpr" {
            let args = || n.list("args").iter().filter_map(|a| a.as_node());
            let op = i32::try_from(n.int("boolop"))
                .ok()
                .and_then(|b| BoolExprType::try_from(b).ok());
            return match op {
                Some(BoolExprType::OrExpr) => args().any(branch),
                Some(BoolExprType::AndExpr) => args().all(branch),
                _ => args().any(has_param),
            };
        }
        // A parameter under anything else that also holds a condition (`($1 OR id = 1) IS
        // TRUE`, `coalesce($1, id = 1)`, `CASE WHEN $1 ...`) may decide it too.
        (has_param(n) && (!reads_a_row(n) || n.holds(&["BoolExpr", "CaseExpr", "CoalesceExpr"])))
            || fold(n).and_then(|v| truth(&v)) == Some(Some(true))
    }
    has_param(n) && branch(n)
}

/// Whether an expression holds a parameter (`$1`).
fn has_param(n: &Node) -> bool {
    n.holds(&["ParamRef"])
}

/// Whether an expression may depend on the row: it names a column (at any depth, in a
/// subquery too, where vigil does not tell the row's columns from the subquery's own) or is
/// `CURRENT OF` a cursor.
fn reads_a_row(n: &Node) -> bool {
    n.holds(&["ColumnRef", "CurrentOfExpr"])
}

/// A constant value: `Null`, a boolean, a number, or a string literal (PostgreSQL's "unknown"
/// type: it becomes whatever it is compared with).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Const {
    Null,
    Bool(bool),
    Num(f64),
    Text(String),
}

/// The value of an expression that reads no row; `None` when it may depend on one.
pub(super) fn fold(n: &Node) -> Option<Const> {
    match n.kind {
        "AConst" => {
            if n.flag("isnull") {
                return Some(Const::Null);
            }
            let val = n.node("val")?;
            match val.kind {
                "Integer" => {
                    super::constants::read();
                    Some(Const::Num(val.int("ival") as f64))
                }
                "Float" => {
                    super::constants::read();
                    val.str("fval").parse().ok().map(Const::Num)
                }
                "Boolean" => Some(Const::Bool(val.flag("boolval"))),
                "String" => Some(Const::Text(val.str("sval").to_owned())),
                _ => None,
            }
        }
        "TypeCast" => {
            let value = fold(n.node("arg")?)?;
            let type_name = n.node("type_name")?;
            let last = type_name.list("names").last()?.as_node()?.sval()?;
            match last {
                "bool" | "boolean" => Some(match truth(&value)? {
                    Some(b) => Const::Bool(b),
                    None => Const::Null,
                }),
                "int2" | "int4" | "int8" | "int" | "integer" | "smallint" | "bigint"
                | "numeric" | "float4" | "float8" => number(&value),
                "text" | "varchar" => match value {
                    Const::Text(_) | Const::Null => Some(value),
                    _ => None,
                },
                _ => None,
            }
        }
        "AExpr" => {
            let kind = i32::try_from(n.int("kind")).ok()?;
            let (l, r) = (n.node("lexpr")?, n.node("rexpr")?);
            let same_column = l.kind == "ColumnRef" && l == r;
            match AExprKind::try_from(kind).ok()? {
                AExprKind::AexprOp => {
                    let op = n.list("name").last()?.as_node()?.sval()?;
                    if same_column && matches!(op, "=" | "<=" | ">=") {
                        // True for every row where the column is not null.
                        return Some(Const::Bool(true));
                    }
                    compare(op, &fold(l)?, &fold(r)?)
                }
                AExprKind::AexprNotDistinct if same_column => Some(Const::Bool(true)),
                AExprKind::AexprDistinct if same_column => Some(Const::Bool(false)),
                AExprKind::AexprNotDistinct => Some(Const::Bool(same_value(&fold(l)?, &fold(r)?)?)),
                AExprKind::AexprDistinct => Some(Const::Bool(!same_value(&fold(l)?, &fold(r)?)?)),
                _ => None,
            }
        }
        "BoolExpr" => {
            let op = BoolExprType::try_from(i32::try_from(n.int("boolop")).ok()?).ok()?;
            let args: Vec<Option<Option<bool>>> = n
                .list("args")
                .iter()
                .map(|a| a.as_node().and_then(fold).and_then(|v| truth(&v)))
                .collect();
            let known = |b: Option<bool>| {
                Some(match b {
                    Some(b) => Const::Bool(b),
                    None => Const::Null,
                })
            };
            match op {
                BoolExprType::AndExpr => {
                    if args.contains(&Some(Some(false))) {
                        known(Some(false))
                    } else if args.iter().all(|a| *a == Some(Some(true))) {
                        known(Some(true))
                    } else if args.iter().all(Option::is_some) {
                        known(None)
                    } else {
                        None
                    }
                }
                BoolExprType::OrExpr => {
                    if args.contains(&Some(Some(true))) {
                        known(Some(true))
                    } else if args.iter().all(|a| *a == Some(Some(false))) {
                        known(Some(false))
                    } else if args.iter().all(Option::is_some) {
                        known(None)
                    } else {
                        None
                    }
                }
                BoolExprType::NotExpr => known(args.first().copied()??.map(|b| !b)),
                BoolExprType::Undefined => None,
            }
        }
        "NullTest" => {
            let value = fold(n.node("arg")?)?;
            let test = i32::try_from(n.int("nulltesttype")).ok()?;
            let is_null = value == Const::Null;
            match NullTestType::try_from(test).ok()? {
                NullTestType::IsNull => Some(Const::Bool(is_null)),
                NullTestType::IsNotNull => Some(Const::Bool(!is_null)),
                NullTestType::Undefined => None,
            }
        }
        "BooleanTest" => {
            let value = truth(&fold(n.node("arg")?)?)?;
            let test = i32::try_from(n.int("booltesttype")).ok()?;
            Some(Const::Bool(match BoolTestType::try_from(test).ok()? {
                BoolTestType::IsTrue => value == Some(true),
                BoolTestType::IsNotTrue => value != Some(true),
                BoolTestType::IsFalse => value == Some(false),
                BoolTestType::IsNotFalse => value != Some(false),
                BoolTestType::IsUnknown => value.is_none(),
                BoolTestType::IsNotUnknown => value.is_some(),
                BoolTestType::Undefined => return None,
            }))
        }
        _ => None,
    }
}

/// A constant as a boolean: `Some(None)` is SQL's null; `None` when it is not a boolean.
pub(super) fn truth(v: &Const) -> Option<Option<bool>> {
    match v {
        Const::Null => Some(None),
        Const::Bool(b) => Some(Some(*b)),
        Const::Text(s) => parse_bool(s).map(Some),
        Const::Num(_) => None,
    }
}

fn number(v: &Const) -> Option<Const> {
    match v {
        Const::Null | Const::Num(_) => Some(v.clone()),
        Const::Text(s) => s.trim().parse().ok().map(Const::Num),
        Const::Bool(_) => None,
    }
}

/// `l op r` for the comparison operators; strings compare only for (in)equality (ordering
/// depends on the collation).
fn compare(op: &str, l: &Const, r: &Const) -> Option<Const> {
    use std::cmp::Ordering;
    if *l == Const::Null || *r == Const::Null {
        return matches!(op, "=" | "<>" | "!=" | "<" | ">" | "<=" | ">=").then_some(Const::Null);
    }
    let order = match (l, r) {
        (Const::Text(a), Const::Text(b)) => {
            if !matches!(op, "=" | "<>" | "!=") {
                return None;
            }
            if a == b {
                Ordering::Equal
            } else {
                Ordering::Less
            }
        }
        (Const::Bool(a), _) => a.cmp(&truth(r)??),
        (_, Const::Bool(b)) => truth(l)??.cmp(b),
        _ => {
            let (Some(Const::Num(a)), Some(Const::Num(b))) = (number(l), number(r)) else {
                return None;
            };
            a.partial_cmp(&b)?
        }
    };
    let holds = match op {
        "=" => order == Ordering::Equal,
        "<>" | "!=" => order != Ordering::Equal,
        "<" => order == Ordering::Less,
        ">" => order == Ordering::Greater,
        "<=" => order != Ordering::Greater,
        ">=" => order != Ordering::Less,
        _ => return None,
    };
    Some(Const::Bool(holds))
}

/// `IS NOT DISTINCT FROM`: nulls are equal to each other.
fn same_value(l: &Const, r: &Const) -> Option<bool> {
    match (l, r) {
        (Const::Null, Const::Null) => Some(true),
        (Const::Null, _) | (_, Const::Null) => Some(false),
        _ => match compare("=", l, r)? {
            Const::Bool(b) => Some(b),
            _ => None,
        },
    }
}

/// PostgreSQL's boolean input: `t`, `true`, `yes`, `on`, `1` and their unique prefixes.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() {
        return None;
    }
    let prefix_of = |word: &str| word.starts_with(s.as_str());
    if prefix_of("true") || prefix_of("yes") || s == "on" || s == "1" {
        Some(true)
    } else if prefix_of("false")
        || prefix_of("no")
        || (s.len() >= 2 && prefix_of("off"))
        || s == "0"
    {
        Some(false)
    } else {
        None
    }
}
