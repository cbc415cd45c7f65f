//! A statement's shape: its text with the numeric constants cut out, so that a decision made
//! about `... WHERE aid = 41237` can be reused for `... WHERE aid = 5` without parsing again
//! (pgbench, and most programs that do not use bind parameters, send a new text per row).
//!
//! Two strings with the same [`Shape::key`] are byte for byte identical except inside the
//! numeric constants that [`shape`] found. That alone does not make a decision reusable; the
//! caller also needs:
//! * PostgreSQL's own scanner to agree, on the string the decision was made for, that exactly
//!   those ranges are numeric constants ([`Shape::agrees_with`] over the `ICONST`/`FCONST`
//!   tokens that `precheck` collects), and
//! * the decision not to depend on any numeric value: the analysis reports every place it reads
//!   one ([`super::constants`]), e.g. `WHERE 1 = 1`, which folds to "no condition".
//!
//! What this scanner does not follow, it refuses (no shape; the caller falls back to the exact
//! text): `/* */` comments (they nest), dollar quoting, a backslash anywhere in a quoted string
//! (its meaning depends on `standard_conforming_strings` and the `E` prefix), a number that
//! starts with `.` or ends with `.`, `e` or a letter (`1.`, `.5`, `1e`, `0x1F`, `1_000`), a NUL.
//! Refusing costs a parse, never a wrong reuse.

use std::ops::Range;

/// The key's stand-ins for a number: NUL for an integer that PostgreSQL's scanner reads as
/// `ICONST` (digits only, at most 2147483647), SOH for any other (`FCONST`: the grammar accepts
/// one where it accepts the other only in expressions, so the class is part of the shape). Text
/// holding either byte has no shape, so a key never matches a text without numbers there.
const HOLE_INT: char = '\0';
const HOLE_FLOAT: char = '\u{1}';

/// A statement string with its numeric constants cut out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The text with each number replaced by one NUL (an `ICONST`) or SOH (an `FCONST`).
    pub key: String,
    /// Where the numbers are in the text, in order.
    pub numbers: Vec<Range<usize>>,
}

impl Shape {
    /// Whether PostgreSQL's scanner saw numeric constants exactly where this scanner did.
    pub fn agrees_with(&self, scanned: &[Range<usize>]) -> bool {
        self.numbers == scanned
    }

    /// Maps an offset in the key to the same place in the text.
    pub fn text_offset(&self, key_offset: usize) -> usize {
        // How much longer the text is than the key before the current point.
        let mut shift: isize = 0;
        for r in &self.numbers {
            let hole = r.start.wrapping_add_signed(-shift);
            if hole >= key_offset {
                break;
            }
            shift += r.len() as isize - 1;
        }
        key_offset.wrapping_add_signed(shift)
    }

    /// Maps an offset in the text to the same place in the key (an offset inside a number maps
    /// to its hole).
    pub fn key_offset(&self, text_offset: usize) -> usize {
        let mut shift: isize = 0;
        for r in &self.numbers {
            if r.start >= text_offset {
                break;
            }
            if text_offset < r.end {
                return r.start.wrapping_add_signed(-shift);
            }
            shift += r.len() as isize - 1;
        }
        text_offset.wrapping_add_signed(-shift)
    }
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The shape of `sql`, or `None` when it holds something this scanner does not follow (see the
/// module documentation) or no number at all.
pub fn shape(sql: &str) -> Option<Shape> {
    let b = sql.as_bytes();
    let mut key = String::with_capacity(sql.len());
    let mut numbers = Vec::new();
    // Copied into the key: text from `copied` up to the current number.
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            0 | 1 | b'\\' => return None,
            b'\'' | b'"' => {
                // A quoted string or identifier; a doubled quote continues it.
                i += 1;
                loop {
                    match b.get(i) {
                        None => return None,
                        Some(b'\\') if c == b'\'' => return None,
                        Some(0 | 1) => return None,
                        Some(&q) if q == c => {
                            if b.get(i + 1) == Some(&c) {
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    if b[i] <= 1 {
                        return None;
                    }
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            b'$' => {
                // `$1` is a parameter; anything else is dollar quoting.
                i += 1;
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i == start || b.get(i).is_some_and(|&n| ident_byte(n) || n == b'.') {
                    return None;
                }
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => return None,
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if b.get(i) == Some(&b'.') {
                    i += 1;
                    let frac = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    if i == frac {
                        return None;
                    }
                }
                if matches!(b.get(i), Some(b'e' | b'E')) {
                    i += 1;
                    if matches!(b.get(i), Some(b'+' | b'-')) {
                        i += 1;
                    }
                    let exp = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    if i == exp {
                        return None;
                    }
                }
                if b.get(i).is_some_and(|&n| ident_byte(n) || n == b'.') {
                    return None;
                }
                key.push_str(&sql[copied..start]);
                let int = sql[start..i].bytes().all(|d| d.is_ascii_digit())
                    && sql[start..i]
                        .parse::<u64>()
                        .is_ok_and(|v| v <= i32::MAX as u64);
                key.push(if int { HOLE_INT } else { HOLE_FLOAT });
                copied = i;
                numbers.push(start..i);
            }
            _ if ident_byte(c) => {
                while i < b.len() && ident_byte(b[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    if numbers.is_empty() {
        return None;
    }
    key.push_str(&sql[copied..]);
    Some(Shape { key, numbers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sql: &str) -> Option<String> {
        shape(sql).map(|s| s.key.replace(HOLE_INT, "#").replace(HOLE_FLOAT, "~"))
    }

    #[test]
    fn numbers_are_cut_out() {
        assert_eq!(
            key("SELECT abalance FROM pgbench_accounts WHERE aid = 41237;").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = #;")
        );
        assert_eq!(
            key("UPDATE a SET b = b + -1234 WHERE aid = 5").as_deref(),
            Some("UPDATE a SET b = b + -# WHERE aid = #")
        );
        assert_eq!(
            key("select 1.5, 2e10, 3.25E-4, x1, t2.c3").as_deref(),
            Some("select ~, ~, ~, x1, t2.c3")
        );
        assert_eq!(key("select $1 + 2").as_deref(), Some("select $1 + #"));
        assert_eq!(
            key("select 'a1', \"b2\", 'it''s 3' -- 4\n, 5").as_deref(),
            Some("select 'a1', \"b2\", 'it''s 3' -- 4\n, #")
        );
        let s = shape("select 12 + 345").unwrap();
        assert_eq!(s.numbers, vec![7..9, 12..15]);
    }

    #[test]
    fn what_it_does_not_follow_has_no_shape() {
        for sql in [
            "select 1 /* 2 */",
            "do $$ begin perform 1; end $$",
            "select $tag$ 1 $tag$",
            "select E'\\' 1 '",
            "select '\\' 1 '",
            "select 1.",
            "select 1..2",
            "select .5",
            "select 1e",
            "select 1e+",
            "select 0x1F",
            "select 1_000",
            "select 1abc",
            "select 'unterminated 1",
            "select \"unterminated 1",
            "select 1\0",
            "select 1, '\u{1}'",
            "select x",
            "select $1x",
        ] {
            assert_eq!(key(sql), None, "{sql:?}");
        }
    }

    #[test]
    fn same_key_means_same_text_outside_the_numbers() {
        let a = shape("select 1 from t where a = 22 and b = 'x'").unwrap();
        let b = shape("select 333 from t where a = 4 and b = 'x'").unwrap();
        assert_eq!(a.key, b.key);
        let c = shape("select 333 from t where a = 4 and b = 'y'").unwrap();
        // An integer and a float, or an int4 and a larger integer, are different shapes.
        assert_ne!(
            a.key,
            shape("select 1.5 from t where a = 22 and b = 'x'")
                .unwrap()
                .key
        );
        assert_ne!(
            a.key,
            shape("select 2147483648 from t where a = 22 and b = 'x'")
                .unwrap()
                .key
        );
        assert_eq!(
            a.key,
            shape("select 2147483647 from t where a = 0022 and b = 'x'")
                .unwrap()
                .key
        );
        assert_ne!(a.key, c.key);
        // An operator `?` is not a number.
        assert_ne!(
            shape("select x ? 1").unwrap().key,
            shape("select x 1 1").unwrap().key
        );
    }

    #[test]
    fn offsets_map_between_key_and_text() {
        let sql = "select 12; select 345, 6";
        let s = shape(sql).unwrap();
        assert_eq!(s.key, "select \0; select \0, \0");
        // The second statement starts at text offset 11, key offset 10.
        assert_eq!(s.key_offset(11), 10);
        assert_eq!(s.text_offset(10), 11);
        assert_eq!(s.key_offset(sql.len()), s.key.len());
        assert_eq!(s.text_offset(s.key.len()), sql.len());
        assert_eq!(s.key_offset(0), 0);
        assert_eq!(s.text_offset(0), 0);
        // Inside a number: its hole.
        assert_eq!(s.key_offset(19), 17);
        for k in 0..=s.key.len() {
            if s.key.as_bytes().get(k) != Some(&0) {
                assert_eq!(s.key_offset(s.text_offset(k)), k, "{k}");
            }
        }
    }
}
