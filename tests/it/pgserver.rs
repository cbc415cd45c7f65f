//! A throwaway PostgreSQL 15 for tests: `initdb` into a temporary directory, a pg_hba.conf the
//! test chooses, optionally TLS with a CA and a server certificate made by `openssl`, listening on
//! 127.0.0.1 at a free port. Stopped (immediate shutdown) on drop.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, initdb and postgres run as
//! `nobody`, and the directory is handed to that user.

use std::{
    fs::File,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::harness::free_port;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The role every server has, with this password, owning the database `appdb`.
pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret";
pub const DATABASE: &str = "appdb";

/// How the server authenticates TCP clients, as a pg_hba.conf method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Trust,
    /// `password`: cleartext.
    Password,
    /// `md5`: the role's password is stored as MD5 so the server really asks for MD5.
    Md5,
    ScramSha256,
}

impl Auth {
    fn method(self) -> &'static str {
        match self {
            Auth::Trust => "trust",
            Auth::Password => "password",
            Auth::Md5 => "md5",
            Auth::ScramSha256 => "scram-sha-256",
        }
    }
}

pub struct PgServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The CA that signed the server certificate (for DNS:localhost and IP:127.0.0.1).
    pub ca_file: Option<PathBuf>,
    child: Child,
}

impl PgServer {
    /// A server that authenticates TCP clients with `auth`; with `ssl`, TCP clients must use
    /// TLS (`hostssl`).
    pub fn start(auth: Auth, ssl: bool) -> PgServer {
        require_binary(&Path::new(PG_BIN).join("initdb"), "postgresql-15");
        require_binary(&Path::new(PG_BIN).join("postgres"), "postgresql-15");
        let dir = tempfile::tempdir().unwrap();
        let owner = Owner::current();
        owner.give(dir.path());
        let data = dir.path().join("data");

        run(
            owner
                .command(&Path::new(PG_BIN).join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
                .arg("--locale=C"),
            "initdb",
        );

        // The role and its database, in single-user mode (one statement per line).
        let encryption = if auth == Auth::Md5 {
            "md5"
        } else {
            "scram-sha-256"
        };
        let setup = dir.path().join("setup.sql");
        std::fs::write(
            &setup,
            format!(
                "CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}';\nCREATE DATABASE {DATABASE} OWNER {USER};\n"
            ),
        )
        .unwrap();
        run(
            owner
                .command(&Path::new(PG_BIN).join("postgres"))
                .arg("--single")
                .arg("-D")
                .arg(&data)
                .arg("-c")
                .arg(format!("password_encryption={encryption}"))
                .arg("postgres")
                .stdin(File::open(&setup).unwrap()),
            "postgres --single (creating the test role)",
        );

        let host = if ssl { "hostssl" } else { "host" };
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n{host} all all 127.0.0.1/32 {}\n",
                auth.method()
            ),
        )
        .unwrap();

        let mut ca_file = None;
        let mut tls_args = Vec::new();
        if ssl {
            let (ca, cert, key) = certificates(dir.path(), &owner);
            tls_args.extend([
                "-c".to_string(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", cert.display()),
                "-c".into(),
                format!("ssl_key_file={}", key.display()),
            ]);
            ca_file = Some(ca);
        }
        let log_path = dir.path().join("postgres.log");
        // The free port can be taken by another test before postgres binds it: then postgres
        // exits saying so, and starts again on another port.
        for attempt in 1.. {
            let port = free_port();
            let mut args = vec![
                "-c".to_string(),
                "listen_addresses=127.0.0.1".into(),
                "-c".into(),
                format!("port={port}"),
                "-c".into(),
                format!("unix_socket_directories={}", dir.path().display()),
                "-c".into(),
                "fsync=off".into(),
            ];
            args.extend(tls_args.iter().cloned());
            let log = File::create(&log_path).unwrap();
            let mut child = owner
                .command(&Path::new(PG_BIN).join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            match wait_ready(&mut child, &log_path) {
                Ok(()) => {
                    return PgServer {
                        port,
                        dir,
                        ca_file,
                        child,
                    }
                }
                Err(text) if attempt < 5 && text.contains("Address already in use") => continue,
                Err(text) => panic!("postgres exited before it was ready:\n{text}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Waits until postgres says it accepts connections; `Err` with its log when it exited first.
fn wait_ready(child: &mut Child, log: &Path) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("database system is ready to accept connections") {
            return Ok(());
        }
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("({status}) {text}"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "postgres not ready after 30s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl PgServer {
    /// Immediate shutdown: the postmaster takes its backends down with it.
    pub fn kill(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
        let _ = self.child.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; the postmaster takes its backends down with it.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
        let _ = self.child.wait();
    }
}

/// Makes a CA and a server certificate for localhost and 127.0.0.1: (ca.crt, server.crt,
/// server.key), readable by the server's user.
fn certificates(dir: &Path, owner: &Owner) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let p = |name: &str| dir.join(name);
    run(
        Command::new(openssl())
            .args(["req", "-x509"])
            .args(ec)
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt"))
            .args(["-days", "2", "-subj", "/CN=vigil-test-ca"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        "openssl req (CA)",
    );
    run(
        Command::new(openssl())
            .arg("req")
            .args(ec)
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr"))
            .args(["-subj", "/CN=localhost"]),
        "openssl req (server)",
    );
    std::fs::write(
        p("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        Command::new(openssl())
            .args(["x509", "-req", "-in"])
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .args(["-set_serial", "2", "-days", "2", "-out"])
            .arg(p("server.crt"))
            .arg("-extfile")
            .arg(p("server.ext")),
        "openssl x509 (signing the server certificate)",
    );
    // postgres wants its key private to its own user.
    std::fs::set_permissions(p("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    owner.give(&p("server.key"));
    owner.give(&p("server.crt"));
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

fn openssl() -> &'static str {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        let ok = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "`openssl` not found: install the Debian package openssl"
        );
    });
    "openssl"
}

fn require_binary(path: &Path, package: &str) {
    assert!(
        path.is_file(),
        "{} not found: install the Debian package {package}",
        path.display()
    );
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The user the server runs as: ourselves, or `nobody` when we are root.
struct Owner(Option<(u32, u32)>);

impl Owner {
    fn current() -> Owner {
        if unsafe { libc::geteuid() } != 0 {
            return Owner(None);
        }
        let name = std::ffi::CString::new("nobody").unwrap();
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        assert!(
            !pw.is_null(),
            "running as root and there is no user `nobody` to run postgres as"
        );
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Owner(Some((uid, gid)))
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.0 {
            // std drops supplementary groups when it switches from root.
            cmd.uid(uid).gid(gid);
        }
        cmd.env_remove("PGDATA").env("LC_ALL", "C");
        cmd
    }

    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.0 {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }
}
