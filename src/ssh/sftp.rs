//! Sans-IO observation of the SFTP protocol (draft-ietf-secsh-filexfer-02, as OpenSSH speaks
//! it) from the client's side: which files a session opens for reading or writing, removes,
//! renames, and which directories it makes or removes. The bytes pass through unchanged; this
//! only reads them. File contents (WRITE payloads) are skipped, never buffered.
//!
//! What it cannot see: what a file contained, and operations done by other means in the same
//! session (it observes one SFTP channel).

const SSH_FXP_OPEN: u8 = 3;
const SSH_FXP_SETSTAT: u8 = 9;
const SSH_FXP_REMOVE: u8 = 13;
const SSH_FXP_MKDIR: u8 = 14;
const SSH_FXP_RMDIR: u8 = 15;
const SSH_FXP_RENAME: u8 = 18;
const SSH_FXP_SYMLINK: u8 = 20;
/// Packets longer than this are not parsed for a path (OpenSSH caps packets at 256 KiB).
const MAX_PARSED: usize = 64 << 10;

const READ: u32 = 0x01;
const WRITE: u32 = 0x02;
const APPEND: u32 = 0x04;
const CREAT: u32 = 0x08;
const TRUNC: u32 = 0x10;

/// Follows the client-to-server SFTP stream and reports file operations.
#[derive(Debug, Default)]
pub struct SftpObserver {
    /// Bytes of the current packet header or small packet gathered so far.
    buf: Vec<u8>,
    /// Bytes of a large packet still to skip.
    skip: usize,
    /// The stream stopped making sense (not SFTP): nothing more is reported.
    lost: bool,
}

impl SftpObserver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes the client sent; returns the operations they complete, as text such as
    /// `open /etc/hosts (read)` or `rename /a -> /b`.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut ops = Vec::new();
        while !bytes.is_empty() && !self.lost {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            // Gather the 4-byte length, then the packet if it is small enough to parse.
            let need = if self.buf.len() < 4 {
                4 - self.buf.len()
            } else {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len == 0 {
                    self.lost = true;
                    break;
                }
                if len > MAX_PARSED {
                    // A WRITE or other bulk packet: skip what remains of it.
                    self.skip = len - (self.buf.len() - 4);
                    self.buf.clear();
                    continue;
                }
                4 + len - self.buf.len()
            };
            let n = need.min(bytes.len());
            self.buf
                .extend_from_slice(bytes.get(..n).unwrap_or_default());
            bytes = bytes.get(n..).unwrap_or_default();
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len <= MAX_PARSED && self.buf.len() == 4 + len {
                    if let Some(op) = describe(self.buf.get(4..).unwrap_or_default()) {
                        ops.push(op);
                    }
                    self.buf.clear();
                }
            }
        }
        ops
    }
}

/// The operation in one packet body (type, request id, payload), if it is one we report.
fn describe(body: &[u8]) -> Option<String> {
    let (&kind, rest) = body.split_first()?;
    let mut r = Reader(rest.get(4..)?); // skip the request id
    match kind {
        SSH_FXP_OPEN => {
            let path = r.string()?;
            let flags = r.u32()?;
            let mut modes = Vec::new();
            for (bit, name) in [
                (READ, "read"),
                (WRITE, "write"),
                (APPEND, "append"),
                (CREAT, "create"),
                (TRUNC, "truncate"),
            ] {
                if flags & bit != 0 {
                    modes.push(name);
                }
            }
            Some(format!("open {path} ({})", modes.join(",")))
        }
        SSH_FXP_REMOVE => Some(format!("remove {}", r.string()?)),
        SSH_FXP_MKDIR => Some(format!("mkdir {}", r.string()?)),
        SSH_FXP_RMDIR => Some(format!("rmdir {}", r.string()?)),
        SSH_FXP_SETSTAT => Some(format!("setstat {}", r.string()?)),
        SSH_FXP_RENAME => {
            let from = r.string()?;
            Some(format!("rename {from} -> {}", r.string()?))
        }
        SSH_FXP_SYMLINK => {
            let a = r.string()?;
            Some(format!("symlink {a} {}", r.string()?))
        }
        _ => None,
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some(u32::from_be_bytes(head.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        let (s, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(String::from_utf8_lossy(s).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![kind, 0, 0, 0, 7];
        for f in fields {
            body.extend_from_slice(f);
        }
        let mut p = (body.len() as u32).to_be_bytes().to_vec();
        p.extend(body);
        p
    }

    fn s(text: &str) -> Vec<u8> {
        let mut v = (text.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(text.as_bytes());
        v
    }

    #[test]
    fn reports_operations_split_anywhere() {
        let mut stream = Vec::new();
        stream.extend(packet(
            SSH_FXP_OPEN,
            &[&s("/etc/hosts"), &READ.to_be_bytes(), &[0, 0, 0, 0]],
        ));
        stream.extend(packet(
            SSH_FXP_OPEN,
            &[
                &s("/tmp/up"),
                &(WRITE | CREAT | TRUNC).to_be_bytes(),
                &[0, 0, 0, 0],
            ],
        ));
        // A large WRITE packet that must be skipped, not parsed.
        let mut write = packet(6, &[&s("handle"), &[0; 8], &s(&"x".repeat(100_000))]);
        stream.append(&mut write);
        stream.extend(packet(SSH_FXP_RENAME, &[&s("/tmp/up"), &s("/tmp/done")]));
        stream.extend(packet(SSH_FXP_REMOVE, &[&s("/tmp/old")]));
        stream.extend(packet(SSH_FXP_MKDIR, &[&s("/tmp/d"), &[0, 0, 0, 0]]));
        let want = vec![
            "open /etc/hosts (read)".to_string(),
            "open /tmp/up (write,create,truncate)".into(),
            "rename /tmp/up -> /tmp/done".into(),
            "remove /tmp/old".into(),
            "mkdir /tmp/d".into(),
        ];
        for step in [1, 3, 7, 4096, stream.len()] {
            let mut o = SftpObserver::new();
            let got: Vec<String> = stream.chunks(step).flat_map(|c| o.feed(c)).collect();
            assert_eq!(got, want, "fed {step} bytes at a time");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut o = SftpObserver::new();
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = o.feed(&bytes);
        }
    }
}
