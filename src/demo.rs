//! `vigil demo`: a working bastion with no config. Generates keys and a config in a temporary
//! directory, starts a local sshd target (unprivileged when run by a normal user, on a free
//! port) when one is installed, and prints the `ssh` line to try and the commands to replay it.
//!
//! When PostgreSQL's binaries are installed it also starts a throwaway PostgreSQL (`initdb` in
//! the demo directory, as an unprivileged user when run as root) with a sample table whose
//! columns are masked and a denylist rule, and prints the `psql` line to try.
//!
//! `LocalSshd` is also what the integration tests use to start a real OpenSSH server.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::recording::keys::RecipientSecret;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("sshd is not installed (Debian: apt-get install openssh-server)")]
    NoSshd,
    #[error("sshd did not start: {0}")]
    SshdStart(String),
    #[error("key generation: {0}")]
    Key(String),
    #[error("PostgreSQL is not installed (Debian: apt-get install postgresql-15)")]
    NoPostgres,
    #[error("PostgreSQL did not start: {0}")]
    PostgresStart(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// Writes a new ed25519 key pair: `path` (OpenSSH private key, 0600) and `path.pub`. Returns
/// the public key line.
pub fn write_ssh_key(path: &Path, comment: &str) -> Result<String, DemoError> {
    let seed = crate::recording::keys::random_bytes::<32>();
    let mut key = ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    key.write_openssh_file(path, ssh_key::LineEnding::LF)
        .map_err(|e| DemoError::Key(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| DemoError::Key(e.to_string()))?;
    std::fs::write(path.with_extension("pub"), format!("{public}\n"))
        .map_err(io(format!("writing {}.pub", path.display())))?;
    Ok(public)
}

pub fn free_port() -> Result<u16, DemoError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(l.local_addr().map_err(io("finding a free port"))?.port())
}

/// The name of the user this process runs as.
pub fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name out
    // before any other call could overwrite it.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            if let Ok(s) = std::ffi::CStr::from_ptr((*pw).pw_name).to_str() {
                return s.to_string();
            }
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

pub fn find_sshd() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("sshd"))
                    .find(|p| p.exists())
            })
        })
}

/// A real OpenSSH server on 127.0.0.1 that logs in the current user with one authorized key.
pub struct LocalSshd {
    pub port: u16,
    /// The server's host key, `ssh-ed25519 AAAA...`, for pinning.
    pub host_key: String,
    pub user: String,
    child: Child,
}

impl LocalSshd {
    /// Starts sshd in `dir` accepting `authorized_key` (a public key line).
    pub fn start(dir: &Path, authorized_key: &str) -> Result<LocalSshd, DemoError> {
        let sshd = find_sshd().ok_or(DemoError::NoSshd)?;
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let host_key_path = dir.join("ssh_host_ed25519_key");
        let host_key = write_ssh_key(&host_key_path, "vigil-demo-target")?;
        let auth = dir.join("authorized_keys");
        std::fs::write(&auth, format!("{authorized_key}\n"))
            .map_err(io("writing authorized_keys"))?;
        let port = free_port()?;
        let config = dir.join("sshd_config");
        let text = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\nUsePAM no\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             AllowTcpForwarding yes\nAllowAgentForwarding yes\nX11Forwarding yes\nX11DisplayOffset 10\nMaxStartups 2000:100:2000\nMaxSessions 2000\nSubsystem sftp internal-sftp\nAcceptEnv LANG LC_* TZ VIGIL_*\nLogLevel ERROR\n",
            host_key_path.display(),
            auth.display()
        );
        std::fs::write(&config, text).map_err(io("writing sshd_config"))?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Privilege separation needs this directory when sshd runs as root.
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("sshd.log")).map_err(io("creating sshd.log"))?,
            ))
            .spawn()
            .map_err(io(format!("starting {}", sshd.display())))?;
        let mut me = LocalSshd {
            port,
            host_key,
            user: current_user(),
            child,
        };
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(me);
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
                return Err(DemoError::SshdStart(format!("{status}: {}", log.trim())));
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(DemoError::SshdStart("not listening after 10 s".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// PostgreSQL's binaries: the newest /usr/lib/postgresql/N/bin with a `postgres` in it.
pub fn find_postgres() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

/// A throwaway PostgreSQL on 127.0.0.1 with role `app` (password `password`) owning database
/// `appdb`, which holds a sample `customers` table. Stopped on drop.
pub struct LocalPostgres {
    pub port: u16,
    pub password: String,
    child: Child,
}

impl LocalPostgres {
    pub fn start(dir: &Path) -> Result<LocalPostgres, DemoError> {
        let bin = find_postgres().ok_or(DemoError::NoPostgres)?;
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let owner = unprivileged()?;
        let give = |p: &Path| {
            if let Some((uid, gid)) = owner {
                let _ = std::os::unix::fs::chown(p, Some(uid), Some(gid));
            }
        };
        give(dir);
        let command = |program: &str| {
            let mut c = Command::new(bin.join(program));
            if let Some((uid, gid)) = owner {
                use std::os::unix::process::CommandExt;
                c.uid(uid).gid(gid);
            }
            c.env_remove("PGDATA").env("LC_ALL", "C");
            c
        };
        let quiet = |mut c: Command, what: &str| -> Result<(), DemoError> {
            let out = c
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .map_err(io(what.to_string()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(DemoError::PostgresStart(format!(
                    "{what}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )))
            }
        };
        let data = dir.join("data");
        let mut initdb = command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        quiet(initdb, "initdb")?;
        let mut secret = [0u8; 12];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| DemoError::Key("random".into()))?;
        let password = hex::encode(secret);
        // Single-user mode runs one statement per line.
        let single = |db: &str, sql: String, what: &str| -> Result<(), DemoError> {
            let file = dir.join("setup.sql");
            std::fs::write(&file, sql).map_err(io("writing setup.sql"))?;
            give(&file);
            let mut c = command("postgres");
            c.arg("--single")
                .arg("-D")
                .arg(&data)
                .arg(db)
                .stdin(std::fs::File::open(&file).map_err(io("reading setup.sql"))?);
            quiet(c, what)
        };
        single(
            "postgres",
            format!(
                "CREATE ROLE app LOGIN PASSWORD '{password}';\nCREATE DATABASE appdb OWNER app;\n"
            ),
            "creating the demo role",
        )?;
        single(
            "appdb",
            "CREATE TABLE public.customers (id int PRIMARY KEY, name text, email text, card text);\n\
             INSERT INTO public.customers VALUES (1, 'Ada', 'ada@example.com', '4111 1111 1111 1111'), (2, 'Grace', 'grace@example.com', '5500 0000 0000 0004');\n\
             ALTER TABLE public.customers OWNER TO app;\n"
                .to_string(),
            "creating the sample table",
        )?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .map_err(io("writing pg_hba.conf"))?;
        let port = free_port()?;
        let log_path = dir.join("postgres.log");
        let log = std::fs::File::create(&log_path).map_err(io("creating postgres.log"))?;
        give(&log_path);
        let child = command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("port={port}"))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io("starting postgres"))?;
        let mut me = LocalPostgres {
            port,
            password,
            child,
        };
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("ready to accept connections") {
                return Ok(me);
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(DemoError::PostgresStart(format!(
                    "exited ({status}): {text}"
                )));
            }
            if start.elapsed() > Duration::from_secs(30) {
                me.stop();
                return Err(DemoError::PostgresStart(format!(
                    "not ready after 30 s: {text}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory preconditions. SIGQUIT: immediate shutdown.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
        let _ = self.child.wait();
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Root runs PostgreSQL as `nobody` (it refuses to run as root); others as themselves.
fn unprivileged() -> Result<Option<(u32, u32)>, DemoError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"nobody";
    // SAFETY: getpwnam reads a static record for a NUL-terminated name; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(DemoError::PostgresStart(
            "running as root and there is no user `nobody` to run postgres as".into(),
        ));
    }
    // SAFETY: pw is non-null and points at getpwnam's record.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

/// The generated demo setup.
pub struct Demo {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub user_key: PathBuf,
    pub auditor_key: PathBuf,
    pub ssh_port: u16,
    pub sshd: Option<LocalSshd>,
    pub note: Option<String>,
    pub postgres: Option<LocalPostgres>,
    pub postgres_port: u16,
    pub postgres_note: Option<String>,
}

/// The demo user's Postgres password (the demo listens on loopback only).
pub const DEMO_PASSWORD: &str = "demo";
/// The environment variable the demo config names for the target's password.
pub const DEMO_PG_PASSWORD_ENV: &str = "VIGIL_DEMO_APPDB_PASSWORD";

/// Generates everything `vigil demo` needs in `dir`.
pub fn prepare(dir: &Path, ssh_port: u16, postgres_port: u16) -> Result<Demo, DemoError> {
    std::fs::create_dir_all(dir.join("state/keys"))
        .map_err(io(format!("creating {}", dir.display())))?;
    let auditor = RecipientSecret::generate().map_err(|e| DemoError::Key(e.to_string()))?;
    let auditor_key = dir.join("auditor.key");
    std::fs::write(&auditor_key, auditor.to_file_text()).map_err(io("writing auditor.key"))?;
    set_private(&auditor_key);
    let user_key = dir.join("demo_ed25519");
    let user_pub = write_ssh_key(&user_key, "demo@vigil")?;
    let target_key = dir.join("state/keys/local");
    let target_pub = write_ssh_key(&target_key, "vigil-demo")?;
    let (sshd, note) = match LocalSshd::start(&dir.join("sshd"), &target_pub) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(format!("no local ssh target: {e}"))),
    };
    let (postgres, postgres_note) = match LocalPostgres::start(&dir.join("postgres")) {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(format!("no local postgres target: {e}"))),
    };
    let mut target = String::new();
    let mut names = Vec::new();
    if let Some(s) = &sshd {
        target.push_str(&format!(
            "[[target]]\nname = \"local\"\nprotocol = \"ssh\"\naddress = \"{}\"\nuser = \"{}\"\nkey = \"state/keys/local\"\nhost_key = \"{}\"\n\n",
            s.address(),
            s.user,
            s.host_key
        ));
        names.push("\"local\"");
    }
    if let Some(p) = &postgres {
        target.push_str(&format!(
            "[[target]]\nname = \"appdb\"\nprotocol = \"postgres\"\naddress = \"{}\"\ndatabase = \"appdb\"\nuser = \"app\"\npassword_env = \"{DEMO_PG_PASSWORD_ENV}\"\n\n\
             [[rule]]\nname = \"no-destructive-sql\"\ntargets = [\"appdb\"]\nsql = [\"DROP\", \"TRUNCATE\", \"DELETE without WHERE\", \"UPDATE without WHERE\"]\naction = \"deny\"\n\
             message = \"destructive statements are blocked on this bastion\"\n\n\
             [[mask]]\ntarget = \"appdb\"\ncolumns = [\"public.customers.email\"]\nmethod = \"partial\"\n\n\
             [[mask]]\ntarget = \"appdb\"\ncolumns = [\"public.customers.card\"]\nmethod = \"redact\"\n\n",
            p.address()
        ));
        names.push("\"appdb\"");
    }
    target.push_str(&format!(
        "[[role]]\nname = \"engineer\"\ntargets = [{}]\nfile_transfer = true\n\n",
        names.join(", ")
    ));
    let verifier = crate::pg::scram::passwd_verifier(DEMO_PASSWORD)
        .map_err(|e| DemoError::Key(e.to_string()))?;
    let config_text = format!(
        "# Generated by `vigil demo`.\n[listen]\nssh = \"127.0.0.1:{ssh_port}\"\npostgres = \"127.0.0.1:{postgres_port}\"\n\n[server]\nhost_key = \"state/host_ed25519\"\n\n\
         [recording]\nstore = \"recordings\"\nrecipients = [\"{}\"]\nspool = \"state/spool\"\nflush_interval = \"1s\"\n\n\
         [[user]]\nname = \"demo\"\nroles = [\"engineer\"]\nssh_keys = [\"{}\"]\npassword = \"{verifier}\"\n\n{target}\
         [[rule]]\nname = \"shell-destructive\"\nshell = [\"rm -rf\", \"mkfs\", \"shutdown\", \"reboot\", \"dd of=/dev/*\"]\naction = \"deny\"\n\
         message = \"destructive commands are blocked on this bastion\"\n",
        auditor.public(),
        user_pub.trim()
    );
    let config = dir.join("vigil.toml");
    std::fs::write(&config, config_text).map_err(io("writing vigil.toml"))?;
    Ok(Demo {
        dir: dir.to_path_buf(),
        config,
        user_key,
        auditor_key,
        ssh_port,
        sshd,
        note,
        postgres,
        postgres_port,
        postgres_note,
    })
}

fn set_private(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
}
