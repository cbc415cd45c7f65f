//! The bastion process: listeners, accept loops, connection limits, configuration reloads and
//! graceful shutdown (close sessions, seal and upload their recordings, then exit).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    audit::{self, Audit, AuditEvent},
    config::Config,
    policy::Policy,
    recording::{keys::Signer, writer::RecordError, Recordings},
    ssh,
};

/// Most concurrent SSH connections; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the config has no [recording] section: every session must be recorded")]
    NoRecording,
    #[error(transparent)]
    Key(#[from] crate::recording::keys::KeyError),
    #[error("host key {path}: {why}")]
    HostKey { path: String, why: String },
    #[error(transparent)]
    Recording(#[from] RecordError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Postgres(#[from] crate::pg::front::FrontError),
    #[error(transparent)]
    Approvals(#[from] crate::approval::ApprovalError),
}

/// Everything a session needs from the bastion; shared by all connections.
pub struct Gateway {
    config: RwLock<Arc<Config>>,
    policy: RwLock<Arc<Policy>>,
    pub recordings: Recordings,
    pub audit: Audit,
    /// Just-in-time approvals over the state store (`server.state`).
    pub approvals: crate::approval::Approvals,
    pub failures: ssh::server::Failures,
    /// The Postgres front end's shared state (cancel keys, TLS, key material).
    pub pg: crate::pg::front::Shared,
    pub tracker: TaskTracker,
    cancel: CancellationToken,
    /// Reloads so far: sessions compare it on every message (one atomic load) to learn that
    /// they must take the new config and policy.
    reloads: AtomicU64,
}

impl Gateway {
    /// How many reloads happened; bumped after the new config and policy are in place.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Acquire)
    }

    /// The current config (a snapshot; a reload replaces it for new decisions).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Swaps in a new config and policy (SIGHUP). Listeners and recording settings keep the
    /// values they started with.
    pub fn reload(&self, config: Config) -> Result<(), DaemonError> {
        let policy = Policy::from_config(&config)?;
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(config);
        }
        if let Ok(mut p) = self.policy.write() {
            *p = Arc::new(policy);
        }
        self.reloads.fetch_add(1, Ordering::Release);
        self.audit.record(AuditEvent {
            detail: Some("reloaded".into()),
            ..AuditEvent::new("config.load")
        });
        Ok(())
    }
}

/// A started bastion.
pub struct Running {
    pub gateway: Arc<Gateway>,
    pub ssh: Option<SocketAddr>,
    pub postgres: Option<SocketAddr>,
    accept: TaskTracker,
    /// Checkpoints and ships the audit log; stopped last, after the final events.
    audit_task: tokio::task::JoinHandle<()>,
    audit_stop: CancellationToken,
}

/// Loads keys, opens the recording store (finishing what a previous run left in the spool),
/// binds the listeners and starts accepting.
pub async fn start(config: Config) -> Result<Running, DaemonError> {
    raise_fd_limit();
    let settings = config.recording.clone().ok_or(DaemonError::NoRecording)?;
    let signer = Signer::load_or_create_file(&config.host_key)?;
    let host_key =
        russh::keys::load_secret_key(&config.host_key, None).map_err(|e| DaemonError::HostKey {
            path: config.host_key.display().to_string(),
            why: e.to_string(),
        })?;
    // The audit log's checkpoints are signed with the same key as recordings.
    let audit_signer = Arc::new(Signer::read_file(&config.host_key)?);
    let audit_store = crate::store::Store::open(&settings.store, &settings.s3)?;
    let recordings = Recordings::start(settings, signer).await?;
    let audit = Audit::open(config.audit.clone(), audit_signer.clone())?;
    let shipper = audit::ship::Shipper::new(
        audit_store,
        config.audit.path.clone(),
        audit::files::key_id(audit_signer.public_openssh()).unwrap_or_default(),
    );
    let checkpoint_interval = config.audit.checkpoint_interval;
    let policy = Policy::from_config(&config)?;
    let ssh_addr = config.listen.ssh;
    let pg_addr = config.listen.postgres;
    let host_secret = std::fs::read(&config.host_key).map_err(|e| DaemonError::HostKey {
        path: config.host_key.display().to_string(),
        why: e.to_string(),
    })?;
    let pg = crate::pg::front::Shared::new(&config, &host_secret)?;
    let approvals = crate::approval::Approvals::open(&config).await?;
    let gateway = Arc::new(Gateway {
        config: RwLock::new(Arc::new(config)),
        policy: RwLock::new(Arc::new(policy)),
        recordings,
        audit,
        approvals,
        failures: Default::default(),
        pg,
        tracker: TaskTracker::new(),
        cancel: CancellationToken::new(),
        reloads: AtomicU64::new(0),
    });
    gateway.audit.record(AuditEvent {
        detail: Some("started".into()),
        ..AuditEvent::new("config.load")
    });
    let audit_stop = CancellationToken::new();
    let audit_task = tokio::spawn(audit_loop(
        gateway.clone(),
        shipper,
        checkpoint_interval,
        audit_stop.clone(),
    ));
    // Pending requests past their deadline expire even when no session waits for them; the
    // audit outbox is drained.
    let sweeper = gateway.clone();
    gateway.tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = sweeper.cancelled() => return,
                _ = tokio::time::sleep(crate::approval::SWEEP_INTERVAL) => {}
            }
            if let Err(e) = sweeper.approvals.sweep(&sweeper.audit).await {
                tracing::warn!(error = %e, "expiring approval requests failed");
            }
            // Decisions made with `vigil approvals` on the host, audited here: only the
            // bastion writes its audit log.
            if let Err(e) = sweeper.approvals.drain_outbox(&sweeper.audit).await {
                tracing::warn!(error = %e, "recording the audit outbox failed");
            }
        }
    });
    let accept = TaskTracker::new();
    let mut ssh = None;
    if let Some(addr) = ssh_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| DaemonError::Listen { addr, source })?;
        ssh = Some(local);
        let server_config = Arc::new(ssh::server::config(host_key));
        accept.spawn(accept_ssh(gateway.clone(), listener, server_config));
        tracing::info!(%local, "ssh listening");
    }
    let mut postgres = None;
    if let Some(addr) = pg_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| DaemonError::Listen { addr, source })?;
        postgres = Some(local);
        accept.spawn(accept_postgres(gateway.clone(), listener));
        tracing::info!(%local, "postgres listening");
    }
    Ok(Running {
        gateway,
        ssh,
        postgres,
        accept,
        audit_task,
        audit_stop,
    })
}

/// Every `interval`: a checkpoint (when events arrived), segment rotation by age, and a round
/// of shipping. On stop: close the log with a final checkpoint and ship it.
async fn audit_loop(
    gw: Arc<Gateway>,
    mut shipper: audit::ship::Shipper,
    interval: Duration,
    stop: CancellationToken,
) {
    // Waiting allow lines are written within `GROUP_WINDOW`, by a task of their own: a slow
    // shipping round must not hold them.
    let flusher = {
        let gw = gw.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // Asleep while no line waits; then every GROUP_WINDOW until none does.
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = gw.audit.lines_waiting() => {}
                }
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(audit::GROUP_WINDOW) => gw.audit.flush_due(),
                    }
                    if !gw.audit.lines_wait() {
                        break;
                    }
                }
            }
        })
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        gw.audit.tick();
        // A slow store delays only this task; a stop does not wait for a stuck round.
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shipper.ship(&gw.audit) => {}
        }
    }
    let _ = flusher.await;
    gw.audit.close();
    let _ = shipper.ship(&gw.audit).await;
}

async fn accept_postgres(gw: Arc<Gateway>, listener: TcpListener) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = gw.cancel.cancelled() => return,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = gw.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let gw2 = gw.clone();
        gw.tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = crate::pg::front::serve(gw2.clone(), stream, peer) => {}
                _ = async { gw2.cancel.cancelled().await; tokio::time::sleep(Duration::from_secs(5)).await } => {}
            }
        });
    }
}

async fn accept_ssh(gw: Arc<Gateway>, listener: TcpListener, config: Arc<russh::server::Config>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = gw.cancel.cancelled() => return,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = gw.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = ssh::server::Handler::new(gw.clone(), Some(peer));
        let (config, gw2) = (config.clone(), gw.clone());
        gw.tracker.spawn(async move {
            let _permit = permit;
            match russh::server::run_stream(config, stream, handler).await {
                Ok(session) => {
                    tokio::select! {
                        r = session => if let Err(e) = r { tracing::debug!(%peer, error = %e, "ssh connection ended with an error") },
                        _ = async { gw2.cancel.cancelled().await; tokio::time::sleep(Duration::from_secs(5)).await } => {}
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "ssh handshake failed"),
            }
        });
    }
}

impl Running {
    /// Graceful stop: refuse new work, close sessions, seal and upload recordings (within
    /// `grace`), then return.
    pub async fn shutdown(self, grace: Duration) {
        self.gateway.cancel.cancel();
        self.accept.close();
        self.accept.wait().await;
        self.gateway.tracker.close();
        let _ = tokio::time::timeout(grace, self.gateway.tracker.wait()).await;
        self.gateway.recordings.shutdown(grace).await;
        self.gateway.approvals.drain(grace).await;
        self.gateway.audit.record(AuditEvent {
            detail: Some("stopped".into()),
            ..AuditEvent::new("config.load")
        });
        self.audit_stop.cancel();
        if tokio::time::timeout(grace, self.audit_task).await.is_err() {
            tracing::warn!("the audit log was not copied to the store before the grace period ended; it stays on disk and is shipped at the next start");
        }
    }
}

/// `vigil serve`: runs in the foreground until SIGTERM or Ctrl-C; SIGHUP reloads the config.
pub async fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let config = Config::load(path)?;
    let running = start(config).await?;
    if let Some(a) = running.ssh {
        eprintln!("vigil: ssh on {a}");
    }
    if let Some(a) = running.postgres {
        eprintln!("vigil: postgres on {a}");
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => match Config::load(path) {
                Ok(c) => match running.gateway.reload(c) {
                    Ok(()) => eprintln!("vigil: reloaded {}", path.display()),
                    Err(e) => eprintln!("vigil: reload refused: {e}"),
                },
                Err(e) => eprintln!("vigil: reload refused, keeping the running config: {e}"),
            },
        }
    }
    eprintln!("vigil: shutting down: closing sessions and sealing recordings");
    running.shutdown(Duration::from_secs(30)).await;
    Ok(())
}

/// Every session holds two sockets (the client's and the target's) and a recording may hold a
/// spool file: the usual soft limit of 1024 descriptors would refuse connections from about the
/// 500th session on. Raise it to the hard limit, as servers do.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            tracing::debug!(from = old, to = lim.rlim_max, "raised the open-file limit");
        } else {
            tracing::warn!(limit = old, "cannot raise the open-file limit");
        }
    }
}
