//! Fuzzes the interactive-line tracker with an interleaving of target output, typed input,
//! resizes, echo timeouts and verdicts taken from the fuzz data. Property: it never panics, at
//! most one submit is reported per call and only as the last step, and nothing typed after a held
//! submit is forwarded before the verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::ssh::terminal::{LineTracker, Step, Verdict};

fuzz_target!(|data: &[u8]| {
    let mut t = LineTracker::new(40, 12);
    for chunk in data.split(|&b| b == 0xff) {
        let Some((&op, body)) = chunk.split_first() else {
            continue;
        };
        let held_before = t.awaiting_echo() || t.awaiting_verdict().is_some();
        let is_input = (3..=5).contains(&(op % 8));
        let steps = match op % 8 {
            0..=2 => t.output(body),
            3..=5 => t.input(body),
            6 => t.echo_timeout(),
            _ if op & 0x10 != 0 => {
                let cols = body.first().map_or(80, |&b| u16::from(b));
                let rows = body.get(1).map_or(24, |&b| u16::from(b));
                t.resize(cols, rows);
                Vec::new()
            }
            _ => t.resolve(match op >> 5 {
                0..=2 => Verdict::Allow,
                3 | 4 => Verdict::Cancel,
                _ => Verdict::Withhold,
            }),
        };
        let submits = steps
            .iter()
            .filter(|s| matches!(s, Step::Submit(_)))
            .count();
        assert!(submits <= 1, "one submit per call");
        if submits == 1 {
            assert!(
                matches!(steps.last(), Some(Step::Submit(_))),
                "the submit comes last"
            );
        }
        if held_before && is_input {
            assert!(
                !steps.iter().any(|s| matches!(s, Step::Forward(_))),
                "input behind a held submit is not forwarded"
            );
        }
    }
});
