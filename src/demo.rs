//! `vigil demo`: a working bastion with no config. Generates keys and a config in a temporary
//! directory, starts a local sshd target (unprivileged when run by a normal user, on a free
//! port) when one is installed, and prints the `ssh` line to try and the commands to replay it.
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

/// The generated demo setup.
pub struct Demo {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub user_key: PathBuf,
    pub auditor_key: PathBuf,
    pub ssh_port: u16,
    pub sshd: Option<LocalSshd>,
    pub note: Option<String>,
}

/// Generates everything `vigil demo` needs in `dir`.
pub fn prepare(dir: &Path, ssh_port: u16) -> Result<Demo, DemoError> {
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
    let target = match &sshd {
        Some(s) => format!(
            "[[target]]\nname = \"local\"\nprotocol = \"ssh\"\naddress = \"{}\"\nuser = \"{}\"\nkey = \"state/keys/local\"\nhost_key = \"{}\"\n\n\
             [[role]]\nname = \"engineer\"\ntargets = [\"local\"]\nfile_transfer = true\n\n",
            s.address(),
            s.user,
            s.host_key
        ),
        None => "[[role]]\nname = \"engineer\"\ntargets = []\n\n".to_string(),
    };
    let config_text = format!(
        "# Generated by `vigil demo`.\n[listen]\nssh = \"127.0.0.1:{ssh_port}\"\n\n[server]\nhost_key = \"state/host_ed25519\"\n\n\
         [recording]\nstore = \"recordings\"\nrecipients = [\"{}\"]\nspool = \"state/spool\"\nflush_interval = \"1s\"\n\n\
         [[user]]\nname = \"demo\"\nroles = [\"engineer\"]\nssh_keys = [\"{}\"]\n\n{target}\
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
    })
}

fn set_private(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
}
