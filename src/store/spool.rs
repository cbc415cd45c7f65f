//! The local spool: sealed recording objects waiting for the store. Never plaintext.
//!
//! Layout: `<spool>/<session id>/` holds `header`, `chunk-<index:010>`, `trailer` (each the
//! exact object bytes for the store) and `journal`, one JSON line per sealed chunk, which lets a
//! restarted bastion close a recording whose writer died. Files appear atomically (written to a
//! temporary name, then renamed) and a chunk file is removed once the store has it.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// One sealed chunk, as the writer saw it; counts are cumulative over the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JournalEntry {
    pub index: u64,
    pub sha256: String,
    pub size: u64,
    pub plain: u64,
    pub last: bool,
    pub last_at: u64,
    pub events: u64,
    pub commands: u64,
    pub queries: u64,
    pub blocked: u64,
    pub approved: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    pub path: String,
    pub source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.display().to_string(),
        source,
    }
}

impl Spool {
    /// Opens (creating) the spool and takes its lock, so two bastions never share one spool.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(err(dir))?;
        set_private(dir);
        let lock_path = dir.join(".lock");
        let lock = exclusive_lock(&lock_path, "another vigil process holds this spool").map_err(
            |source| SpoolError {
                path: lock_path.display().to_string(),
                source,
            },
        )?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn session_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn create_session(&self, id: &str) -> Result<PathBuf, SpoolError> {
        let d = self.session_dir(id);
        fs::create_dir_all(&d).map_err(err(&d))?;
        Ok(d)
    }

    /// Writes `name` in the session's directory atomically; `sync` makes it durable first.
    pub fn write(
        &self,
        id: &str,
        name: &str,
        bytes: &[u8],
        sync: bool,
    ) -> Result<PathBuf, SpoolError> {
        let d = self.session_dir(id);
        let tmp = d.join(format!(".{name}.tmp"));
        let path = d.join(name);
        let mut f = File::create(&tmp).map_err(err(&tmp))?;
        f.write_all(bytes).map_err(err(&tmp))?;
        if sync {
            f.sync_data().map_err(err(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(err(&path))?;
        Ok(path)
    }

    pub fn append_journal(&self, id: &str, entry: &JournalEntry) -> Result<(), SpoolError> {
        let path = self.session_dir(id).join("journal");
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err(&path))?;
        f.write_all(&line).map_err(err(&path))
    }

    /// Journal entries in order; a torn last line (a crash mid-write) is ignored.
    pub fn read_journal(&self, id: &str) -> Vec<JournalEntry> {
        let path = self.session_dir(id).join("journal");
        let text = fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Session ids that have a directory in the spool.
    pub fn sessions(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| crate::store::layout::valid_session_id(n))
            .collect();
        out.sort();
        out
    }

    /// Object files of one session: (name, path), chunk files sorted by index.
    pub fn files(&self, id: &str) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = fs::read_dir(self.session_dir(id))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok().map(|n| (n, e.path())))
            .filter(|(n, _)| !n.starts_with('.'))
            .collect();
        out.sort();
        out
    }

    pub fn remove_session(&self, id: &str) {
        let _ = fs::remove_dir_all(self.session_dir(id));
    }
}

fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
}

/// Opens (creating) `path` and takes an exclusive `flock` on it for as long as the file is
/// open; `held` says who else would hold it when it is taken.
pub fn exclusive_lock(path: &Path, held: &str) -> io::Result<File> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the call.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if rc != 0 {
        return Err(io::Error::new(io::ErrorKind::WouldBlock, held.to_string()));
    }
    Ok(lock)
}
