//! A bound on the depth of the parse tree, computed from PostgreSQL's own scanner before the
//! parser runs.
//!
//! libpg_query writes its parse tree out with a recursive C function and no stack check, so a
//! statement such as `SELECT 1+1+...+1` with a few thousand terms (a left-deep tree that the
//! parser builds without growing its own stack) overflows a 2 MiB thread stack and aborts the
//! process. pg_query cannot decode trees more than about 50 levels deep anyway (prost's
//! recursion limit), so refusing input whose tree *could* be deeper than [`MAX_NESTING`] before
//! parsing loses nothing.
//!
//! The bound, over the tokens of the input: a group (`( )`, `[ ]`, `CASE ... END`) costs
//! [`GROUP_COST`] levels plus its deepest segment; a segment is the run of tokens between
//! separators (`,`, `;`, `AND`, `OR`, `WHEN`, `THEN`, `ELSE`: lists and flattened boolean chains
//! do not nest) and costs one level per operator or keyword in it, plus its deepest group.
//! Identifiers, constants, `.` and comments cost nothing. Every construct that deepens the tree
//! (operators, casts, `NOT`, `JOIN`, `UNION`, subqueries, function calls) is counted, so the bound
//! is never below the tree's depth; it overcounts keywords that do not nest.

use std::ops::Range;

use pg_query::protobuf::Token;

/// The deepest tree (by the bound above) that is parsed. A few KiB of C stack per level in a
/// debug build: 400 levels stay well inside a 2 MiB thread stack.
pub const MAX_NESTING: usize = 400;

/// The levels a group adds besides its contents (`(SELECT ...)` is a SubLink holding a
/// SelectStmt holding a ResTarget).
const GROUP_COST: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Opener {
    Top,
    Paren,
    Bracket,
    Case,
}

struct Group {
    opener: Opener,
    /// The deepest finished segment.
    deepest: usize,
    /// Operators and keywords in the current segment.
    count: usize,
    /// The deepest group closed in the current segment.
    child: usize,
}

impl Group {
    fn new(opener: Opener) -> Group {
        Group {
            opener,
            deepest: 0,
            count: 0,
            child: 0,
        }
    }

    fn end_segment(&mut self) {
        self.deepest = self.deepest.max(self.count + self.child);
        self.count = 0;
        self.child = 0;
    }

    fn depth(mut self) -> usize {
        self.end_segment();
        GROUP_COST + self.deepest
    }
}

pub(super) enum Refusal {
    /// The scanner rejects the input (an unterminated string or comment): so would the parser.
    Scan(String),
    /// The tree could nest deeper than [`MAX_NESTING`].
    TooDeep,
}

/// Refuses `sql` if its parse tree could nest deeper than [`MAX_NESTING`]; otherwise returns
/// where the scanner found numeric constants (`ICONST`, `FCONST`), for [`super::shape`].
pub(super) fn check(sql: &str) -> Result<Vec<Range<usize>>, Refusal> {
    let scan = pg_query::scan(sql).map_err(|e| Refusal::Scan(e.to_string()))?;
    let mut stack = vec![Group::new(Opener::Top)];
    let mut numbers = Vec::new();
    for scanned in &scan.tokens {
        let Ok(token) = Token::try_from(scanned.token) else {
            bump(&mut stack);
            continue;
        };
        match token {
            Token::Ascii40 => stack.push(Group::new(Opener::Paren)),
            Token::Ascii91 => stack.push(Group::new(Opener::Bracket)),
            Token::Case => stack.push(Group::new(Opener::Case)),
            Token::Ascii41 => close(&mut stack, Opener::Paren),
            Token::Ascii93 => close(&mut stack, Opener::Bracket),
            Token::EndP => close(&mut stack, Opener::Case),
            Token::Ascii44
            | Token::Ascii59
            | Token::And
            | Token::Or
            | Token::When
            | Token::Then
            | Token::Else => {
                if let Some(g) = stack.last_mut() {
                    g.end_segment();
                }
            }
            Token::Fconst | Token::Iconst => {
                let (Ok(start), Ok(end)) =
                    (usize::try_from(scanned.start), usize::try_from(scanned.end))
                else {
                    return Err(Refusal::Scan("a token outside the text".into()));
                };
                numbers.push(start..end);
            }
            Token::Ident
            | Token::Uident
            | Token::Sconst
            | Token::Usconst
            | Token::Bconst
            | Token::Xconst
            | Token::Param
            | Token::Ascii46
            | Token::SqlComment
            | Token::CComment => {}
            _ => bump(&mut stack),
        }
        if stack.len() * GROUP_COST > MAX_NESTING {
            return Err(Refusal::TooDeep);
        }
    }
    // Unclosed groups (the parser will reject them) fold into their parents.
    let mut depth = 0;
    while let Some(mut g) = stack.pop() {
        g.child = g.child.max(depth);
        depth = g.depth();
    }
    if depth > MAX_NESTING {
        return Err(Refusal::TooDeep);
    }
    Ok(numbers)
}

fn bump(stack: &mut [Group]) {
    if let Some(g) = stack.last_mut() {
        g.count += 1;
    }
}

/// Closes the innermost group if `opener` opened it; a stray closer is ignored (which only
/// keeps groups open longer, so the bound stays above the depth).
fn close(stack: &mut Vec<Group>, opener: Opener) {
    if stack.len() < 2 || stack.last().map(|g| g.opener) != Some(opener) {
        return;
    }
    if let Some(g) = stack.pop() {
        let depth = g.depth();
        if let Some(parent) = stack.last_mut() {
            parent.child = parent.child.max(depth);
        }
    }
}
