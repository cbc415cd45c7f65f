//! The `vigil` binary: turns flags into a validated config or reading context and calls the
//! library. Errors print one line on stderr and exit non-zero.

use std::{
    io::{IsTerminal, Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use vigil::{
    config::Config,
    forensics::{self, Reading},
    recording::{
        event::{Event, Exit},
        keys::{RecipientSecret, Signer},
        reader::{Filter, Trust},
        Recordings, SessionMeta,
    },
    replay,
    store::Store,
};

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Access gateway for SSH and PostgreSQL with sealed session recordings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bastion in the foreground (SIGTERM stops gracefully, SIGHUP reloads the config).
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Try vigil with no config: a generated bastion, a local sshd target when one is
    /// installed, and the commands to try.
    Demo {
        /// Where to put the generated config, keys and recordings (default: a new temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// SSH port for the bastion (default 2222, or a free one when 2222 is taken).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Make an auditor key pair: FILE holds the secret key, FILE.pub (and stdout) the public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Read a password (from the terminal, or a line of stdin) and print the SCRAM-SHA-256
    /// verifier to put in a user's `password`; the password itself is stored nowhere.
    Passwd,
    /// Validate a config file and print every problem with its key path.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// List recordings.
    Sessions {
        #[command(flatten)]
        read: ReadOpts,
        #[command(flatten)]
        filter: FilterOpts,
        #[arg(long)]
        json: bool,
        /// The sessions running now on every instance that shares the state store
        /// (`server.state` of --config), instead of the recordings.
        #[arg(long)]
        live: bool,
    },
    /// Replay a session in the terminal with its timing (a Postgres session as a query log).
    Play {
        id: String,
        #[command(flatten)]
        read: ReadOpts,
        /// Playback speed factor.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Cap pauses at this many seconds.
        #[arg(long)]
        idle_limit: Option<f64>,
    },
    /// Export a session as asciicast v2, JSON lines, or text.
    Export {
        id: String,
        #[command(flatten)]
        read: ReadOpts,
        #[arg(long, value_enum, default_value_t = Format::Asciicast)]
        format: Format,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Find sessions and moments whose output, commands, SQL or rows match PATTERN.
    /// Exits 0 when something matched, 1 when nothing did.
    Search {
        pattern: String,
        /// PATTERN is a regular expression (default: a literal string).
        #[arg(long)]
        regex: bool,
        #[arg(short = 'i', long)]
        ignore_case: bool,
        #[command(flatten)]
        read: ReadOpts,
        #[command(flatten)]
        filter: FilterOpts,
        #[arg(long)]
        json: bool,
    },
    /// Check signatures, chunk order, truncation and every seal; non-zero exit on any fault.
    Verify {
        ids: Vec<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Print audit events (`vigil audit verify` checks the log's hash chain and checkpoints).
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        command: Option<AuditCommand>,
        #[command(flatten)]
        source: AuditSource,
        /// Only events by this user (or requested by them).
        #[arg(long)]
        user: Option<String>,
        /// RFC 3339 time, a date (2026-11-23), or an age such as 2h (that long ago).
        #[arg(long)]
        since: Option<String>,
        /// Only this action (`auth.failure`), or a family (`auth.*`).
        #[arg(long)]
        action: Option<String>,
        /// One JSON object per event: the log's lines as written.
        #[arg(long)]
        json: bool,
    },
    /// Approval requests in the state store (`server.state`): list and show them, or approve
    /// or deny one as a named vigil user (`--as`), with every check an approver over SSH gets.
    Approvals {
        #[arg(long, env = "VIGIL_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        action: ApprovalsCmd,
    },
    /// Record standard input as a session's output (for pipelines, and to exercise the
    /// recorder): prints the session id, records until EOF or SIGTERM, then seals and uploads.
    Record {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        user: String,
        #[arg(long)]
        target: String,
        #[arg(long, default_value = "ssh")]
        protocol: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and the signed checkpoints (and compare with the store's copy);
    /// name the first edited, deleted, inserted, reordered or cut line. Non-zero on a fault.
    Verify {
        #[command(flatten)]
        source: AuditSource,
    },
}

#[derive(Args)]
struct AuditSource {
    /// Take the log path, the store and the trusted signing key from this config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The active audit log file (closed segments beside it are read too).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The store the log is copied to: file:///path, a path, or s3://bucket/prefix.
    #[arg(long)]
    store: Option<String>,
    /// Accept checkpoints signed by this key (`ssh-ed25519 AAAA...`); repeatable.
    #[arg(long)]
    signer: Vec<String>,
}

#[derive(Subcommand)]
enum ApprovalsCmd {
    /// Pending requests (or all recent ones with --all).
    List {
        #[arg(long)]
        all: bool,
        /// One JSON object per request.
        #[arg(long)]
        json: bool,
    },
    Show {
        id: u64,
    },
    /// Approve as the vigil user named by --as (never the requester; needs an approver role).
    Approve {
        id: u64,
        #[arg(long = "as", value_name = "USER")]
        as_user: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny as the vigil user named by --as, with a reason.
    Deny {
        id: u64,
        #[arg(long = "as", value_name = "USER")]
        as_user: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Asciicast,
    Json,
    Text,
}

#[derive(Args)]
struct ReadOpts {
    /// Recording store: file:///path, a path, or s3://bucket/prefix (AWS_* environment).
    #[arg(long)]
    store: Option<String>,
    /// Take the store and trusted signers from this config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Auditor secret key file (from `vigil keygen`).
    #[arg(long, env = "VIGIL_KEY")]
    key: Option<PathBuf>,
    /// Trust recordings signed by this bastion key (`ssh-ed25519 AAAA...`); repeatable.
    #[arg(long)]
    signer: Vec<String>,
}

#[derive(Args)]
struct FilterOpts {
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    target: Option<String>,
    #[arg(long, value_parser = ["ssh", "postgres"])]
    protocol: Option<String>,
    /// RFC 3339 time, a date (2026-11-23), or an age such as 2h (that long ago).
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
}

/// glibc gives each thread that allocates under contention an arena of its own, up to 8 per
/// core, and keeps what a thread once used. vigil's threads that seal and upload recordings
/// then hold about 16 MiB each after a busy hour: measured, 168 MiB of RSS after three rounds
/// of the Postgres benchmark, against 73 MiB with 2 arenas at the same throughput (2 cores).
/// One per core is enough for a runtime of one worker per core; `MALLOC_ARENA_MAX` in the
/// environment wins.
fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called first thing in main,
        // before any other thread exists.
        unsafe {
            libc::mallopt(
                libc::M_ARENA_MAX,
                std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 16)) as i32,
            );
        }
    }
}

fn main() -> ExitCode {
    bound_malloc_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // A reader that stopped reading (`vigil export ... | head`) is not a failure.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            vigil::daemon::serve(&config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir, port } => demo(dir, port).await,
        Command::Keygen { out } => keygen(&out),
        Command::Passwd => passwd(),
        Command::Check { config } => check(&config),
        Command::Sessions {
            read, json, live, ..
        } if live => live_sessions(&read, json).await,
        Command::Sessions {
            read, filter, json, ..
        } => {
            let r = reading(&read, false)?;
            let mut out = std::io::stdout().lock();
            forensics::sessions(&r, &filter.build()?, json, &mut out).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Play {
            id,
            read,
            speed,
            idle_limit,
        } => {
            if !(speed > 0.0 && speed.is_finite()) {
                bail!("--speed must be a positive number");
            }
            let r = reading(&read, true)?;
            let loaded = r.load(&id).await?;
            warn_if_open(&loaded);
            let events = loaded.events()?;
            let interactive = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
            let opts = replay::play::PlayOptions { speed, idle_limit };
            let header = loaded.header.info.clone();
            tokio::task::spawn_blocking(move || {
                let mut out = std::io::stdout().lock();
                replay::play::play(&header, &events, &opts, &mut out, interactive)
            })
            .await??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            id,
            read,
            format,
            output,
        } => {
            let r = reading(&read, true)?;
            let loaded = r.load(&id).await?;
            warn_if_open(&loaded);
            let events = loaded.events()?;
            let h = &loaded.header.info;
            let text = match format {
                Format::Asciicast => replay::asciicast::encode(h, &events),
                Format::Json => replay::export::to_json_lines(
                    h,
                    loaded.trailer.as_ref().map(|t| &t.info),
                    &events,
                ),
                Format::Text => replay::export::to_text(h, &events),
            };
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Search {
            pattern,
            regex,
            ignore_case,
            read,
            filter,
            json,
        } => {
            let r = reading(&read, true)?;
            let matcher = replay::search::Matcher::new(
                &pattern,
                replay::search::MatchOptions {
                    literal: !regex,
                    ignore_case,
                },
            )
            .context("bad pattern")?;
            let bar = std::io::stderr().is_terminal().then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} sessions {elapsed}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            });
            let progress = |n: Option<u64>| {
                if let Some(b) = &bar {
                    match n {
                        Some(len) => b.set_length(len),
                        None => b.inc(1),
                    }
                }
            };
            let (found, failed) =
                forensics::search(&r, &matcher, &filter.build()?, &progress).await?;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let mut out = std::io::stdout().lock();
            for f in &found {
                if json {
                    writeln!(out, "{}", f.json())?;
                } else {
                    writeln!(out, "{}", f.line())?;
                }
            }
            for (id, e) in &failed {
                eprintln!("vigil: {id}: not searched: {e}");
            }
            Ok(if found.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Verify { ids, all, read } => {
            let r = reading(&read, false)?;
            let ids = match (all, ids.is_empty()) {
                (true, true) => {
                    vigil::recording::reader::list(&r.store, &Filter::default(), &Trust::default())
                        .await?
                        .into_iter()
                        .map(|l| l.id)
                        .collect()
                }
                (false, false) => ids,
                _ => bail!("name recordings to verify, or pass --all (not both)"),
            };
            let verdicts = forensics::verify(&r, &ids).await;
            let mut faults = 0;
            for v in &verdicts {
                match &v.result {
                    Ok(s) => println!("{}: {s}", v.id),
                    Err(e) => {
                        faults += 1;
                        match e.chunk() {
                            Some(c) => println!("{}: FAULT at chunk {c}: {e}", v.id),
                            None => println!("{}: FAULT: {e}", v.id),
                        }
                    }
                }
            }
            if faults > 0 {
                eprintln!(
                    "vigil: {faults} of {} recordings failed verification",
                    verdicts.len()
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Record {
            config,
            user,
            target,
            protocol,
        } => record(&config, user, target, protocol).await,
        Command::Audit {
            command: Some(AuditCommand::Verify { source }),
            ..
        } => audit_verify(&source).await,
        Command::Audit {
            command: None,
            source,
            user,
            since,
            action,
            json,
        } => {
            let filter = vigil::audit::read::Filter {
                user,
                since: since
                    .as_deref()
                    .map(parse_time)
                    .transpose()?
                    .map(|us| SystemTime::UNIX_EPOCH + Duration::from_micros(us)),
                action,
            };
            let events = vigil::audit::read::events(&source.build()?, &filter).await?;
            let mut out = std::io::stdout().lock();
            if !json {
                writeln!(out, "{}", vigil::audit::read::TABLE_HEADER)?;
            }
            for (e, line) in &events {
                if json {
                    out.write_all(line)?;
                    out.write_all(b"\n")?;
                } else {
                    writeln!(out, "{}", vigil::audit::read::table_row(e))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals { config, action } => approvals(&config, action).await,
    }
}

async fn audit_verify(source: &AuditSource) -> Result<ExitCode> {
    let verdicts = vigil::audit::read::verify(&source.build()?).await?;
    let mut faults = 0;
    for v in &verdicts {
        let r = &v.report;
        match &v.fault {
            None => {
                println!(
                    "{}: ok: {} lines (seq {} to {}), {} checkpoints, last checkpoint at seq {}",
                    v.name,
                    r.lines,
                    r.first_seq.map_or("-".into(), |s| s.to_string()),
                    r.last_seq.map_or("-".into(), |s| s.to_string()),
                    r.checkpoints,
                    r.last_checkpoint.map_or("-".into(), |s| s.to_string()),
                );
                for n in &r.notes {
                    println!("{}: note: {n}", v.name);
                }
            }
            Some(f) => {
                faults += 1;
                println!("{}: FAULT at {f}", v.name);
            }
        }
    }
    if faults > 0 {
        eprintln!("vigil: the audit log failed verification");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

impl AuditSource {
    /// The log, store and trusted signers: from the flags, completed by the config file.
    fn build(&self) -> Result<vigil::audit::read::Source> {
        let config = self.config.as_deref().map(Config::load).transpose()?;
        let mut signers = self.signer.clone();
        let mut log = self.log.clone();
        let mut store = match &self.store {
            Some(url) => Some(Store::open(url, &Default::default())?),
            None => None,
        };
        if let Some(c) = &config {
            // On the bastion, its log; elsewhere (an auditor's machine) only the store's copy.
            if log.is_none() && (c.audit_log().exists() || c.recording.is_none()) {
                log = Some(c.audit_log());
            }
            signers.extend(c.signers.iter().cloned());
            if let Ok(s) = Signer::read_file(&c.host_key) {
                signers.push(s.public_openssh().to_string());
            }
            if let (None, Some(r)) = (&store, &c.recording) {
                store = Some(Store::open(&r.store, &r.s3)?);
            }
        }
        if log.is_none() && store.is_none() {
            bail!("say which audit log: --log PATH, --store URL or --config FILE");
        }
        Ok(vigil::audit::read::Source {
            log,
            store,
            trust: vigil::audit::chain::Trust { signers },
        })
    }
}

/// `vigil sessions --live`: the session index in the state store.
async fn live_sessions(read: &ReadOpts, json: bool) -> Result<ExitCode> {
    let Some(path) = &read.config else {
        bail!("--live reads the state store named by the config: pass --config FILE");
    };
    let config = vigil::config::Config::load(path)?;
    let engine = vigil::approval::Approvals::open(&config).await?;
    let mut out = std::io::stdout().lock();
    for s in engine.live_sessions().await? {
        let start = humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH
                + Duration::from_millis(u64::try_from(s.started_ms).unwrap_or(0)),
        )
        .to_string();
        if json {
            let mut v = serde_json::to_value(&s)?;
            v["start"] = serde_json::Value::String(start);
            writeln!(out, "{v}")?;
        } else {
            writeln!(
                out,
                "{}  {:<8} {:<12} {:<12} {start}  {}  from {}",
                s.id,
                s.protocol,
                s.user,
                s.target,
                s.instance,
                s.client.as_deref().unwrap_or("-")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigil approvals`: the operator on the bastion host acts as a named vigil user. Whoever can
/// run this can read the config and the state store, so the host is trusted as much as the
/// store; what this adds is that the identity acting is named, checked and audited like an
/// approver over SSH (`source` = `host:uid N (USER)`), through the store's audit outbox.
async fn approvals(path: &std::path::Path, action: ApprovalsCmd) -> Result<ExitCode> {
    use vigil::approval::{now_ms, Approvals};
    let config = vigil::config::Config::load(path)?;
    let engine = Approvals::open(&config).await?;
    let now = now_ms();
    let (approver, id, approve, reason) = match action {
        ApprovalsCmd::List { all, json } => {
            let list = engine.list(all).await?;
            let mut out = std::io::stdout().lock();
            if list.is_empty() && !json {
                writeln!(out, "no pending approval requests")?;
            }
            for a in list {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&a)?)?;
                } else {
                    write!(out, "{}", a.describe(now))?;
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        ApprovalsCmd::Show { id } => match engine.get(id).await? {
            Some(a) => {
                print!("{}", a.describe(now));
                return Ok(ExitCode::SUCCESS);
            }
            None => bail!("there is no approval request #{id}"),
        },
        ApprovalsCmd::Approve {
            id,
            as_user,
            reason,
        } => (as_user, id, true, reason),
        ApprovalsCmd::Deny {
            id,
            as_user,
            reason,
        } => (as_user, id, false, Some(reason)),
    };
    // The running bastion owns the audit log: these events go to the store's outbox, and a
    // running instance records them within seconds.
    let audit = vigil::approval::Deferred::default();
    let unix_user = match std::env::var("USER") {
        Ok(u) => format!("uid {} ({u})", process_uid()),
        Err(_) => format!("uid {}", process_uid()),
    };
    let result = engine
        .decide(
            &config,
            &audit,
            &approver,
            id,
            approve,
            reason.as_deref(),
            Some(format!("host:{unix_user}")),
        )
        .await;
    engine.defer_audit(audit.take()).await?;
    engine.drain(Duration::from_secs(10)).await;
    let a = result?;
    println!(
        "#{} {} by {approver}; now {}",
        a.id,
        if approve { "approved" } else { "denied" },
        a.state
    );
    Ok(ExitCode::SUCCESS)
}

/// The real uid of this process, for the audit trail of host-side approvals.
fn process_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

async fn demo(dir: Option<PathBuf>, port: Option<u16>) -> Result<ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("vigil-demo-{}", std::process::id())),
    };
    let port = match port {
        Some(p) => p,
        None if std::net::TcpListener::bind("127.0.0.1:2222").is_ok() => 2222,
        None => vigil::demo::free_port()?,
    };
    let pg_port = match std::net::TcpListener::bind("127.0.0.1:6432") {
        Ok(_) => 6432,
        Err(_) => vigil::demo::free_port()?,
    };
    let demo = vigil::demo::prepare(&dir, port, pg_port)?;
    if let Some(p) = &demo.postgres {
        // The target's password reaches vigil the way a deployment's would: from the
        // environment the config names. Nothing else reads the environment at this point.
        std::env::set_var(vigil::demo::DEMO_PG_PASSWORD_ENV, &p.password);
    }
    let running = vigil::daemon::start(Config::load(&demo.config)?).await?;
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "vigil".into());
    let store = dir.join("recordings");
    let known = dir.join("known_hosts");
    println!("vigil demo is running; everything is in {}", dir.display());
    println!();
    match &demo.sshd {
        Some(s) => {
            println!(
                "Log in through the bastion to a local sshd (target `local`, user {}):",
                s.user
            );
            println!(
                "  ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new -p {port} demo+local@127.0.0.1",
                demo.user_key.display(),
                known.display()
            );
            println!(
                "Try `ls`, then `rm -rf /tmp/nothing`: the bastion blocks it. Exec works too:"
            );
            println!(
                "  ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new -p {port} demo+local@127.0.0.1 'sudo rm -fr /'",
                demo.user_key.display(),
                known.display()
            );
        }
        None => {
            println!("{}", demo.note.as_deref().unwrap_or("no local ssh target"));
            println!(
                "  ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new -p {port} demo@127.0.0.1 targets",
                demo.user_key.display(),
                known.display()
            );
        }
    }
    println!();
    match &demo.postgres {
        Some(_) => {
            println!(
                "Query a throwaway PostgreSQL through the bastion (password `{}`):",
                vigil::demo::DEMO_PASSWORD
            );
            println!(
                "  PGPASSWORD={} psql \"host=127.0.0.1 port={pg_port} user=demo dbname=appdb sslmode=disable\"",
                vigil::demo::DEMO_PASSWORD
            );
            println!("Try `select * from customers;` (email and card are masked), then `drop table customers;`.");
        }
        None => println!(
            "{}",
            demo.postgres_note
                .as_deref()
                .unwrap_or("no local postgres target")
        ),
    }
    println!();
    println!(
        "Then list and replay the recordings (sealed to {}):",
        demo.auditor_key.display()
    );
    println!("  {me} sessions --store {}", store.display());
    println!(
        "  {me} play <ID> --store {} --key {}",
        store.display(),
        demo.auditor_key.display()
    );
    println!();
    println!("Ctrl-C stops the demo.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.shutdown(Duration::from_secs(30)).await;
    drop(demo);
    Ok(ExitCode::SUCCESS)
}

fn passwd() -> Result<ExitCode> {
    use std::io::{BufRead, IsTerminal};
    let tty = std::io::stdin().is_terminal();
    if tty {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("empty password");
    }
    let verifier = vigil::pg::scram::passwd_verifier(password)?;
    println!("{verifier}");
    Ok(ExitCode::SUCCESS)
}

fn keygen(out: &Path) -> Result<ExitCode> {
    let secret = RecipientSecret::generate()?;
    if out.exists() {
        bail!(
            "{} exists; refusing to overwrite a secret key",
            out.display()
        );
    }
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .with_context(|| format!("creating {}", out.display()))?;
        f.write_all(secret.to_file_text().as_bytes())?;
    }
    let public = secret.public().to_string();
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    std::fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| format!("writing {}", Path::new(&pub_path).display()))?;
    println!("{public}");
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path) -> Result<ExitCode> {
    match Config::load(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let problems = e.problems();
            for p in &problems {
                println!("{p}");
            }
            eprintln!("vigil: {}: {} problem(s)", path.display(), problems.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn reading(o: &ReadOpts, need_key: bool) -> Result<Reading> {
    let config = o.config.as_deref().map(Config::load).transpose()?;
    let (store, mut signers) = match (&o.store, &config) {
        (Some(url), _) => (Store::open(url, &Default::default())?, Vec::new()),
        (None, Some(c)) => {
            let r = c
                .recording
                .as_ref()
                .context("the config has no [recording] section")?;
            let mut signers = c.signers.clone();
            // On the bastion itself, its own key is a trusted signer.
            if let Ok(s) = Signer::read_file(&c.host_key) {
                signers.push(s.public_openssh().to_string());
            }
            (Store::open(&r.store, &r.s3)?, signers)
        }
        (None, None) => bail!("say where recordings are: --store URL or --config FILE"),
    };
    signers.extend(o.signer.iter().cloned());
    let key = match &o.key {
        Some(p) => Some(RecipientSecret::read_file(p)?),
        None if need_key => {
            bail!("this command reads recording content: pass --key FILE (or set VIGIL_KEY)")
        }
        None => None,
    };
    Ok(Reading {
        store,
        trust: Trust { signers },
        key,
    })
}

impl FilterOpts {
    fn build(&self) -> Result<Filter> {
        Ok(Filter {
            user: self.user.clone(),
            target: self.target.clone(),
            protocol: self.protocol.clone(),
            since_us: self.since.as_deref().map(parse_time).transpose()?,
            until_us: self.until.as_deref().map(parse_time).transpose()?,
        })
    }
}

/// RFC 3339, a bare date, or an age ("2h" = two hours ago), as microseconds since the epoch.
fn parse_time(s: &str) -> Result<u64> {
    let t = if let Ok(d) = humantime::parse_duration(s) {
        SystemTime::now()
            .checked_sub(d)
            .context("time before the epoch")?
    } else if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        t
    } else if let Ok(t) = humantime::parse_rfc3339_weak(&format!("{s} 00:00:00")) {
        t
    } else {
        bail!("`{s}` is not a time: use 2026-11-23, 2026-11-23T10:00:00Z, or an age such as 2h");
    };
    Ok(vigil::recording::writer::unix_us(t))
}

fn warn_if_open(l: &vigil::recording::reader::Loaded) {
    if l.trailer.is_none() {
        eprintln!(
            "vigil: note: recording {} has no trailer yet (still being written, or cut off)",
            l.header.info.session_id
        );
    }
}

async fn record(config: &Path, user: String, target: String, protocol: String) -> Result<ExitCode> {
    let config = Config::load(config)?;
    let settings = config
        .recording
        .clone()
        .context("the config has no [recording] section")?;
    let signer = Signer::load_or_create_file(&config.host_key)?;
    let recordings = Recordings::start(settings, signer).await?;
    let rec = recordings
        .begin(SessionMeta {
            protocol,
            user,
            target,
            client: None,
        })
        .await?;
    println!("{}", rec.session_id());
    std::io::stdout().flush()?;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let reason = loop {
        tokio::select! {
            data = rx.recv() => match data {
                Some(d) => rec.record(Event::Output(d.into())).await?,
                None => break "end of input",
            },
            _ = term.recv() => break "terminated",
            _ = tokio::signal::ctrl_c() => break "interrupted",
        }
    };
    rec.record(Event::Exit(Exit {
        status: Some(0),
        signal: None,
        reason: Some(reason.into()),
    }))
    .await?;
    let summary = rec.close(reason).await?;
    recordings.shutdown(Duration::from_secs(30)).await;
    eprintln!(
        "vigil: recorded {} events in {} chunks ({} stored){}",
        summary.events,
        summary.chunks,
        forensics::format_size(summary.stored_bytes),
        if summary.uploaded {
            ""
        } else {
            "; the store is unreachable, the recording waits in the spool"
        }
    );
    Ok(ExitCode::SUCCESS)
}
