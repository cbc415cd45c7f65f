//! Fuzzes the result-row masker with arbitrary DataRow bodies and COPY text and CSV rows. The
//! first byte picks the masks (one bit per column: masked or not; the method, type and format
//! from the byte too), the rest is the row. Properties: it never panics; without masks a row it
//! accepts comes back byte for byte; what it returns is itself a well-formed row of the same
//! number of columns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::pg::masker::{oid, ColumnMask, Masker};
use vigil::policy::mask::{CopyFormat, CopyOptions, Method};

const METHODS: [Method; 4] = [Method::Redact, Method::Partial, Method::Hash, Method::Null];
const TYPES: [u32; 4] = [oid::TEXT, oid::VARCHAR, 23, 1082];

fn masks(selector: u8, columns: usize) -> Vec<Option<ColumnMask>> {
    (0..columns)
        .map(|i| {
            let bits = selector.rotate_left(u32::try_from(i % 8).unwrap_or(0));
            (bits & 1 == 1).then(|| ColumnMask {
                method: METHODS[usize::from(bits >> 1) % 4],
                type_oid: TYPES[usize::from(bits >> 3) % 4],
                binary: bits & 0x20 != 0,
            })
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, row)) = data.split_first() else {
        return;
    };
    let m = Masker::new(b"fuzz key for the vigil masker...");

    // DataRow: the declared column count, if there is one, sizes the masks.
    let columns = row
        .first_chunk::<2>()
        .map_or(0, |c| usize::from(u16::from_be_bytes(*c)) & 0x7fff)
        .min(2048);
    if let Ok(out) = m.rewrite_data_row(row, &vec![None; columns]) {
        assert_eq!(out.as_ref(), row, "no masks: unchanged");
    }
    if let Ok(out) = m.rewrite_data_row(row, &masks(selector, columns)) {
        m.rewrite_data_row(&out, &vec![None; columns])
            .expect("masked DataRow is well-formed");
    }

    // COPY text and CSV: count the fields the way a client would, roughly; wrong counts are
    // errors, which is fine too.
    let fields = 1 + row.iter().filter(|&&b| b == b'\t' || b == b',').count().min(64);
    for width in [fields, 1, 3] {
        let none = vec![None; width];
        let some = masks(selector, width);
        if let Ok(out) = m.rewrite_copy_text_row(row, &none, b'\t', b"\\N") {
            assert_eq!(out.as_ref(), row, "no masks: unchanged");
        }
        if let Ok(out) = m.rewrite_copy_text_row(row, &some, b'\t', b"\\N") {
            m.rewrite_copy_text_row(&out, &none, b'\t', b"\\N")
                .expect("masked COPY text row is well-formed");
        }
        let csv = CopyOptions {
            format: CopyFormat::Csv,
            delimiter: b',',
            null: Vec::new(),
            quote: b'"',
            escape: if selector & 0x40 != 0 { b'\\' } else { b'"' },
            header: false,
        };
        if let Ok(out) = m.rewrite_copy_csv_row(row, &none, &csv) {
            assert_eq!(out.as_ref(), row, "no masks: unchanged");
        }
        if let Ok(out) = m.rewrite_copy_csv_row(row, &some, &csv) {
            m.rewrite_copy_csv_row(&out, &none, &csv)
                .expect("masked CSV row is well-formed");
        }
    }
});
