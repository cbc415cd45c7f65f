//! The test harness: temporary bastion state, the vigil binary, and a real S3-compatible server
//! (s3s-fs, which checks SigV4 signatures) on 127.0.0.1.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use vigil::{
    recording::{
        keys::{RecipientSecret, Signer},
        RecordingSettings,
    },
    store::S3Settings,
};

/// The vigil binary: `VIGIL_TEST_BIN` when set (a copy that a concurrent build sharing the
/// target directory cannot replace mid-run), else the one cargo built for these tests.
pub fn vigil() -> Command {
    Command::new(
        std::env::var_os("VIGIL_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_vigil").into()),
    )
}

/// Runs vigil to completion: (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bastion's state directory: host key, auditor key, file store, spool.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub secret: RecipientSecret,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let secret = RecipientSecret::generate().unwrap();
        std::fs::write(dir.path().join("auditor.key"), secret.to_file_text()).unwrap();
        Env { dir, secret }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn key_path(&self) -> PathBuf {
        self.path("auditor.key")
    }

    pub fn store_url(&self) -> String {
        format!("file://{}", self.path("store").display())
    }

    pub fn signer(&self) -> Signer {
        Signer::load_or_create_file(&self.path("state/host_ed25519")).unwrap()
    }

    pub fn settings(&self) -> RecordingSettings {
        let mut s = RecordingSettings::new(
            self.store_url(),
            vec![self.secret.public()],
            self.path("state/spool"),
        );
        s.flush_interval = Duration::from_millis(200);
        s
    }

    /// Writes vigil.toml with a [recording] section for `store` plus `extra` TOML.
    pub fn config(&self, store: &str, extra: &str) -> PathBuf {
        let path = self.path("vigil.toml");
        let text = format!(
            "[server]\nhost_key = \"state/host_ed25519\"\n\n[recording]\nstore = \"{store}\"\nrecipients = [\"{}\"]\nspool = \"state/spool\"\nflush_interval = \"200ms\"\n{extra}\n",
            self.secret.public()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Every file below `sub`, relative names, sorted.
    pub fn files(&self, sub: &str) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path(sub), &self.path(sub), &mut out);
        out.sort();
        out
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub const S3_ACCESS_KEY: &str = "vigiltest";
pub const S3_SECRET_KEY: &str = "vigil-test-secret-key";
pub const S3_BUCKET: &str = "recordings";

/// A real S3-compatible server (s3s-fs) that checks request signatures.
pub struct S3Server {
    pub root: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(S3_BUCKET)).unwrap();
        let mut s = S3Server {
            root,
            port: free_port(),
            child: None,
        };
        s.restart();
        s
    }

    /// (Re)starts the server on the same port and data directory.
    pub fn restart(&mut self) {
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start s3s-fs ({e}): install it with `cargo install s3s-fs@0.14.1 --features binary --locked`")
            });
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until("s3s-fs listens", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("s3://{S3_BUCKET}/vigil")
    }

    pub fn settings(&self, secret: &str) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            access_key_id: Some(S3_ACCESS_KEY.into()),
            secret_access_key: Some(secret.into()),
            allow_http: Some(true),
            ..Default::default()
        }
    }

    /// The standard AWS_* environment for a vigil child process.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .env("AWS_ALLOW_HTTP", "true");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
