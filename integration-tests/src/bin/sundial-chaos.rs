//! Chaos harness: several scheduler processes share one store while workers are
//! killed and frozen, the store server is restarted or stopped and one worker's
//! clock is skewed; then a checker merges every worker's witness file with the
//! store's run ledger and counts duplicates and lost slots.
//!
//! ```text
//! sundial-chaos [--store sqlite|redis|postgres|mariadb|mongo|<url>] [--workers 3] [--seconds 40]
//!               [--faults all|kill,stop,skew,restart,outage] [--seed N] [--lease 4]
//! sundial-chaos --profile short   # CI: SQLite, Redis, PostgreSQL; 3 workers, 40 s, every fault
//! sundial-chaos --profile long    # 4 workers, 5 minutes, every store (adds MariaDB and MongoDB)
//! ```
//!
//! `redis`, `postgres`, `mariadb` and `mongo` start a private server on a free
//! port with its own data directory (Redis with `appendonly yes`, `appendfsync
//! always`; the MongoDB test server of `scripts/services.sh` on disk with
//! `--sync-on-commit`), so that the harness can crash and restart it; a URL is
//! used as it is, without server faults.
//! The exit status is 1 when any run finds a duplicate or a lost slot.
//!
//! The workload, declared by every worker at start with `replace_existing`:
//! 200 interval jobs every second (tasks of 0–300 ms), 2,000 one-off jobs spread
//! over the run, 20 cron jobs `*/2 * * * * *`, 10 jobs of 8 s every 5 s with
//! `max_instances = 1`, and 20 jobs every 3 s whose first attempt fails, with
//! three attempts.
//!
//! Each execution appends a start line and, when it ends, an end line to its
//! worker's witness file (one `O_APPEND` write each; the end line is fsynced
//! before the task returns).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sundial::clock::{Clock, SystemClock};
use sundial::prelude::*;
use sundial::run::{RunQuery, RunRecord, RunState};

/// How many jobs of each kind the workload declares.
#[derive(Clone, Copy, Debug)]
struct Workload {
    intervals: usize,
    one_offs: usize,
    crons: usize,
    longs: usize,
    retried: usize,
}

impl Workload {
    /// The full workload (200 interval, 2,000 one-off, 20 cron, 10 long and 20
    /// retried jobs) times `scale`, at least one job of each kind.
    fn scaled(scale: f64) -> Workload {
        let n = |full: usize| ((full as f64 * scale).round() as usize).max(1);
        Workload {
            intervals: n(200),
            one_offs: n(2000),
            crons: n(20),
            longs: n(10),
            retried: n(20),
        }
    }
}
/// Seconds between the harness start and the workload's first slot: time for
/// every worker to declare the workload (slots before that are not checked).
const WARMUP: i64 = 15;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("worker") {
        worker()
            .map(|()| true)
            .map_err(|e| format!("{e} ({e:?})").into())
    } else {
        harness(&args)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sundial-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

// ---------------------------------------------------------------- worker ---

/// A clock `offset` ahead of the machine's (behind when negative).
#[derive(Debug)]
struct SkewedClock(chrono::Duration);

impl Clock for SkewedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
    fn sleep_until(&self, deadline: DateTime<Utc>) -> futures::future::BoxFuture<'static, ()> {
        SystemClock.sleep_until(deadline - self.0)
    }
}

/// The witness file of one worker process.
struct Witness {
    file: Mutex<std::fs::File>,
    pid: u32,
}

impl Witness {
    /// Appends `R,,0,0,pid,at_us`: this worker has declared the workload.
    fn ready(&self) -> std::io::Result<()> {
        let line = format!("R,,0,0,{},{}\n", self.pid, Utc::now().timestamp_micros());
        let f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("witness lock poisoned"))?;
        (&*f).write_all(line.as_bytes())
    }

    /// Appends `S|E,job,slot_us,attempt,pid,at_us`; end lines are fsynced.
    fn line(&self, kind: char, ctx: &JobContext) -> std::io::Result<()> {
        let line = format!(
            "{kind},{},{},{},{},{}\n",
            ctx.job_id(),
            ctx.scheduled_run_time().timestamp_micros(),
            ctx.attempt(),
            self.pid,
            Utc::now().timestamp_micros()
        );
        let f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("witness lock poisoned"))?;
        (&*f).write_all(line.as_bytes())?;
        if kind == 'E' {
            f.sync_data()?;
        }
        Ok(())
    }
}

fn env_i64(name: &str) -> Res<i64> {
    Ok(std::env::var(name)
        .map_err(|_| format!("{name} is not set"))?
        .parse()?)
}

/// A worker process: declares the workload, runs jobs until the end time,
/// then shuts down waiting for its runs.
fn worker() -> Res<()> {
    let url = std::env::var("CHAOS_STORE")?;
    let witness_path = std::env::var("CHAOS_WITNESS")?;
    let base = DateTime::from_timestamp_millis(env_i64("CHAOS_BASE_MS")?).ok_or("bad base")?;
    let end = DateTime::from_timestamp_millis(env_i64("CHAOS_END_MS")?).ok_or("bad end")?;
    let lease = Duration::from_millis(u64::try_from(env_i64("CHAOS_LEASE_MS")?)?);
    let skew = chrono::Duration::milliseconds(env_i64("CHAOS_SKEW_MS")?);
    let window = env_i64("CHAOS_WINDOW_MS")?;
    let workload = Workload::scaled(std::env::var("CHAOS_SCALE")?.parse()?);
    let witness = Arc::new(Witness {
        file: Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&witness_path)?,
        ),
        pid: std::process::id(),
    });
    let (w1, w2) = (Arc::clone(&witness), Arc::clone(&witness));
    let scheduler = Scheduler::builder()
        .jobstore_arc("default", store_from_url(&url)?)
        .executor("default", AsyncExecutor::new())
        .clock(Arc::new(SkewedClock(skew)) as Arc<dyn Clock>)
        .lease_duration(lease)
        .max_idle_sleep(Duration::from_millis(500))
        .task("work", move |ctx: JobContext, ms: u64| {
            let w = Arc::clone(&w1);
            async move {
                w.line('S', &ctx)?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                w.line('E', &ctx)?;
                Ok::<_, sundial::BoxError>(())
            }
        })
        .task("fail_first", move |ctx: JobContext, _: ()| {
            let w = Arc::clone(&w2);
            async move {
                w.line('S', &ctx)?;
                w.line('E', &ctx)?;
                if ctx.attempt() == 1 {
                    return Err::<(), sundial::BoxError>("first attempts fail".into());
                }
                Ok(())
            }
        })
        .build()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // As an application would: a store that is away at start is waited for.
        let mut tries = 0;
        while let Err(e) = scheduler.start().await {
            tries += 1;
            if !e.is_temporary() || tries > 100 {
                return Err(e.into());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        declare(&scheduler, base, window, &workload).await?;
        witness.ready()?;
        let left = (end - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(left).await;
        if let Err(e) = scheduler.shutdown(true).await {
            eprintln!("shutdown: {e}");
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// One job of the workload: kind and index.
fn job_spec(
    kind: &str,
    i: usize,
    base: DateTime<Utc>,
    window_ms: i64,
    w: &Workload,
) -> Res<JobSpec> {
    let every = |secs: u64| {
        IntervalTrigger::builder()
            .seconds(secs)
            .start_date(base)
            .build()
    };
    let spec = match kind {
        "cron" => JobSpec::new("work", CronTrigger::from_crontab("*/2 * * * * *")?).args(10u64),
        "iv" => JobSpec::new("work", every(1)?).args((i as u64 * 37) % 300),
        "one" => {
            let step = window_ms / w.one_offs as i64;
            let at = base + chrono::Duration::milliseconds(step * i as i64);
            JobSpec::new("work", DateTrigger::at(at))
                .args(0u64)
                .misfire_grace_time(None)
        }
        "long" => JobSpec::new("work", every(5)?)
            .args(8000u64)
            .max_instances(1),
        "retry" => JobSpec::new("fail_first", every(3)?).retries(3, Duration::from_millis(200)),
        other => return Err(format!("unknown job kind {other}").into()),
    };
    Ok(spec.id(format!("{kind}{i}")).replace_existing(true))
}

/// The workload, as each worker declares it at start (cron jobs first, whose
/// first slot depends on when they are added).
async fn declare(s: &Scheduler, base: DateTime<Utc>, window_ms: i64, w: &Workload) -> Res<()> {
    let kinds = [
        ("cron", w.crons),
        ("iv", w.intervals),
        ("one", w.one_offs),
        ("long", w.longs),
        ("retry", w.retried),
    ];
    let started = std::time::Instant::now();
    for (kind, n) in kinds {
        for i in 0..n {
            // As an application would: a store that is away is waited for.
            let mut tries = 0;
            while let Err(e) = s.add_job(job_spec(kind, i, base, window_ms, w)?).await {
                tries += 1;
                if !e.is_temporary() || tries > 300 {
                    return Err(e.into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!("declared the workload in {:?}", started.elapsed());
    Ok(())
}

// --------------------------------------------------------------- harness ---

/// Parsed command line.
#[derive(Clone, Debug)]
struct Opts {
    store: String,
    workers: usize,
    seconds: u64,
    faults: Vec<String>,
    seed: u64,
    lease: Duration,
    /// The workload's size, as a fraction of the full one.
    scale: f64,
}

const ALL_FAULTS: [&str; 5] = ["kill", "stop", "skew", "restart", "outage"];

fn parse(args: &[String]) -> Res<Vec<Opts>> {
    let mut opts = Opts {
        store: "sqlite".into(),
        workers: 3,
        seconds: 40,
        faults: ALL_FAULTS.map(String::from).to_vec(),
        seed: u64::try_from(Utc::now().timestamp_micros()).unwrap_or(1) % 1_000_000,
        lease: Duration::from_secs(4),
        scale: 1.0,
    };
    let mut profile = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => opts.store = value()?.clone(),
            "--workers" => opts.workers = value()?.parse()?,
            "--seconds" => opts.seconds = value()?.parse()?,
            "--seed" => opts.seed = value()?.parse()?,
            "--lease" => opts.lease = Duration::from_secs(value()?.parse()?),
            "--scale" => opts.scale = value()?.parse()?,
            "--faults" => {
                let v = value()?;
                opts.faults = if v == "all" {
                    ALL_FAULTS.map(String::from).to_vec()
                } else if v == "none" {
                    Vec::new()
                } else {
                    v.split(',').map(String::from).collect()
                };
                if let Some(bad) = opts
                    .faults
                    .iter()
                    .find(|f| !ALL_FAULTS.contains(&f.as_str()))
                {
                    return Err(format!(
                        "unknown fault '{bad}' (known: {})",
                        ALL_FAULTS.join(", ")
                    )
                    .into());
                }
            }
            "--profile" => profile = Some(value()?.clone()),
            other => return Err(format!("unknown argument '{other}'").into()),
        }
    }
    if opts.workers == 0 || opts.seconds < 20 || !(opts.scale > 0.0 && opts.scale <= 10.0) {
        return Err(
            "--workers must be at least 1, --seconds at least 20 and --scale in (0, 10]".into(),
        );
    }
    // The MongoDB test server (a Python implementation) keeps up with a
    // tenth of the workload.
    let stores: &[(&str, f64)] = match profile.as_deref() {
        None => return Ok(vec![opts]),
        Some("short") => {
            opts.workers = 3;
            opts.seconds = 40;
            &[("sqlite", 1.0), ("redis", 1.0), ("postgres", 1.0)]
        }
        Some("long") => {
            opts.workers = 4;
            opts.seconds = 300;
            &[
                ("sqlite", 1.0),
                ("redis", 1.0),
                ("postgres", 1.0),
                ("mariadb", 1.0),
                ("mongo", 0.1),
            ]
        }
        Some(p) => return Err(format!("unknown profile '{p}' (short, long)").into()),
    };
    Ok(stores
        .iter()
        .map(|(store, scale)| Opts {
            store: (*store).into(),
            scale: *scale,
            ..opts.clone()
        })
        .collect())
}

fn harness(args: &[String]) -> Res<bool> {
    let runs = parse(args)?;
    let mut ok = true;
    let mut rows = Vec::new();
    for opts in runs {
        let (applied, report) = run_one(&opts)?;
        ok &= report.passed();
        rows.push((applied, report));
    }
    println!();
    println!("| store | faults | seed | due | executed | duplicates | lost | interrupted | missed | skipped | max lateness | failover | overlaps (max_instances = 1) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (o, r) in &rows {
        println!("{}", r.row(o));
    }
    Ok(ok)
}

/// How to start a server process the harness runs itself.
type Starter = Box<dyn Fn() -> std::io::Result<Child>>;

/// A server the harness owns, crashed and restarted at will.
enum Server {
    None,
    /// A server process the harness runs itself.
    Process {
        port: u16,
        start: Starter,
        child: Option<Child>,
    },
    Postgres {
        port: u16,
        dir: PathBuf,
    },
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool as the `postgres` user when running as root (the
/// server refuses root).
fn pg_tool(tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", tool]);
        c
    } else {
        Command::new(tool)
    }
}

fn wait_port(port: u16, within: Duration) -> Res<()> {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("server on port {port} did not come up").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Server {
    /// Starts the store `kind` names; returns it with the URL the workers use.
    fn start(kind: &str, work: &Path) -> Res<(Server, String)> {
        match kind {
            "sqlite" => Ok((
                Server::None,
                format!("sqlite://{}", work.join("chaos.db").display()),
            )),
            "redis" => {
                let port = free_port()?;
                let dir = work.join("redis");
                std::fs::create_dir_all(&dir)?;
                let start = move || {
                    Command::new("redis-server")
                        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                        .args(["--appendonly", "yes", "--appendfsync", "always"])
                        .args(["--save", ""])
                        .arg("--dir")
                        .arg(&dir)
                        .stdout(Stdio::null())
                        .spawn()
                };
                Ok((
                    Server::process(port, Box::new(start))?,
                    format!("redis://127.0.0.1:{port}/"),
                ))
            }
            "mariadb" => {
                let port = free_port()?;
                let dir = work.join("mariadb");
                std::fs::create_dir_all(&dir)?;
                let as_root: &[&str] = if is_root() { &["--user=root"] } else { &[] };
                let ok = Command::new("mariadb-install-db")
                    .args(["--no-defaults", "--skip-test-db"])
                    .arg("--auth-root-authentication-method=normal")
                    .arg(format!("--datadir={}", dir.display()))
                    .args(as_root)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()?
                    .success();
                if !ok {
                    return Err("mariadb-install-db failed".into());
                }
                let start = move || {
                    Command::new("mariadbd")
                        .arg("--no-defaults")
                        .arg(format!("--datadir={}", dir.display()))
                        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
                        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
                        .arg(format!("--port={port}"))
                        .args(["--bind-address=127.0.0.1", "--skip-grant-tables"])
                        .args(["--skip-name-resolve", "--max-connections=500"])
                        .arg("--innodb-flush-log-at-trx-commit=1")
                        .args(as_root)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                };
                let s = Server::process(port, Box::new(start))?;
                let ok = Command::new("mariadb")
                    .args(["--no-defaults", "-h", "127.0.0.1", "-u", "root"])
                    .args(["-P", &port.to_string()])
                    .args(["-e", "CREATE DATABASE IF NOT EXISTS chaos"])
                    .status()?
                    .success();
                if !ok {
                    return Err("cannot create the chaos database".into());
                }
                Ok((s, format!("mysql://root@127.0.0.1:{port}/chaos")))
            }
            "mongo" => {
                let port = free_port()?;
                let dir = work.join("mongo");
                std::fs::create_dir_all(&dir)?;
                let python =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-mongo/bin/python");
                if !python.exists() {
                    return Err(
                        "the MongoDB test server is not installed: run scripts/services.sh".into(),
                    );
                }
                let start = move || {
                    Command::new(&python)
                        .args(["-m", "secantus", "--host", "127.0.0.1"])
                        .args(["--port", &port.to_string()])
                        .arg("--storage-path")
                        .arg(&dir)
                        .args(["--standalone", "--sync-on-commit"])
                        .args(["--log-level", "WARNING"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                };
                Ok((
                    Server::process(port, Box::new(start))?,
                    format!("mongodb://127.0.0.1:{port}/chaos"),
                ))
            }
            "postgres" => {
                let port = free_port()?;
                let dir = work.join("pg");
                std::fs::create_dir_all(&dir)?;
                if is_root() {
                    Command::new("chown")
                        .args(["-R", "postgres:postgres"])
                        .arg(work)
                        .status()?;
                }
                let ok = pg_tool("initdb")
                    .args(["-A", "trust", "-U", "postgres", "-D"])
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .status()?
                    .success();
                if !ok {
                    return Err("initdb failed".into());
                }
                let mut s = Server::Postgres { port, dir };
                s.up()?;
                Ok((s, format!("postgres://postgres@127.0.0.1:{port}/postgres")))
            }
            url if url.contains("://") => Ok((Server::None, url.to_string())),
            other => Err(format!(
                "unknown store '{other}' (sqlite, redis, postgres, mariadb, mongo or a URL)"
            )
            .into()),
        }
    }

    /// Starts a server process and waits for its port.
    fn process(port: u16, start: Starter) -> Res<Server> {
        let mut s = Server::Process {
            port,
            start,
            child: None,
        };
        s.up()?;
        Ok(s)
    }

    fn can_restart(&self) -> bool {
        !matches!(self, Server::None)
    }

    fn up(&mut self) -> Res<()> {
        match self {
            Server::None => Ok(()),
            Server::Process { port, start, child } => {
                *child = Some(start()?);
                wait_port(*port, Duration::from_secs(30))
            }
            Server::Postgres { port, dir } => {
                let opts = format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                    dir.display()
                );
                let ok = pg_tool("pg_ctl")
                    .args(["-w", "-D"])
                    .arg(&*dir)
                    .args(["-o", &opts, "-l"])
                    .arg(dir.join("log"))
                    .arg("start")
                    .stdout(Stdio::null())
                    .status()?
                    .success();
                if !ok {
                    return Err("pg_ctl start failed".into());
                }
                wait_port(*port, Duration::from_secs(20))
            }
        }
    }

    /// Stops the server the hard way (no shutdown work).
    fn crash(&mut self) -> Res<()> {
        match self {
            Server::None => Ok(()),
            Server::Process { child, .. } => {
                if let Some(mut c) = child.take() {
                    c.kill()?;
                    c.wait()?;
                }
                Ok(())
            }
            Server::Postgres { dir, .. } => {
                pg_tool("pg_ctl")
                    .args(["-m", "immediate", "-D"])
                    .arg(&*dir)
                    .arg("stop")
                    .stdout(Stdio::null())
                    .status()?;
                Ok(())
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}

/// One scheduled fault.
#[derive(Debug, Clone)]
enum Fault {
    Kill(usize),
    Restart(usize),
    Stop(usize),
    Cont(usize),
    ServerCrash { back_after: Duration },
    ServerUp,
}

/// The fault plan: (seconds after base, fault), sorted.
fn plan(opts: &Opts, fault_window: f64, can_restart: bool) -> Vec<(f64, Fault)> {
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let mut out = Vec::new();
    let lease = opts.lease.as_secs_f64();
    let has = |f: &str| opts.faults.iter().any(|x| x == f);
    // Workers busy with another fault until this time.
    let mut busy = vec![0.0f64; opts.workers];
    if has("kill") {
        let mut t = 4.0 + rng.f64() * 4.0;
        while t < fault_window {
            let w = rng.usize(..opts.workers);
            if busy[w] <= t {
                out.push((t, Fault::Kill(w)));
                out.push((t + 2.0, Fault::Restart(w)));
                busy[w] = t + 3.0;
            }
            t += 6.0 + rng.f64() * 4.0;
        }
    }
    if has("stop") {
        let mut t = 6.0 + rng.f64() * 6.0;
        while t < fault_window {
            let w = rng.usize(..opts.workers);
            if busy[w] <= t {
                out.push((t, Fault::Stop(w)));
                out.push((t + 1.5 * lease, Fault::Cont(w)));
                busy[w] = t + 1.5 * lease + 1.0;
            }
            t += 20.0 + rng.f64() * 10.0;
        }
    }
    if can_restart && has("restart") {
        let t = fault_window * (0.25 + rng.f64() * 0.15);
        out.push((
            t,
            Fault::ServerCrash {
                back_after: Duration::ZERO,
            },
        ));
    }
    if can_restart && has("outage") {
        let t = fault_window * (0.6 + rng.f64() * 0.15);
        out.push((
            t,
            Fault::ServerCrash {
                back_after: Duration::from_secs(5),
            },
        ));
        out.push((t + 5.0, Fault::ServerUp));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

struct Workers {
    exe: PathBuf,
    env: Vec<(String, String)>,
    work: PathBuf,
    children: Vec<Option<Child>>,
    skewed: Option<usize>,
    /// (worker, pid, when) of every SIGKILL.
    kills: Vec<(usize, u32, DateTime<Utc>)>,
}

impl Workers {
    fn spawn(&mut self, w: usize) -> Res<()> {
        let skew = if self.skewed == Some(w) { "2000" } else { "0" };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join(format!("worker{w}.log")))?;
        let child = Command::new(&self.exe)
            .arg("worker")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CHAOS_SKEW_MS", skew)
            .env("CHAOS_WITNESS", self.work.join(format!("witness{w}.txt")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children[w] = Some(child);
        Ok(())
    }

    fn signal(&self, w: usize, sig: &str) {
        if let Some(c) = &self.children[w] {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }
}

/// Workers still running when the harness gives up are woken and killed.
impl Drop for Workers {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            if let Ok(None) = c.try_wait() {
                let _ = Command::new("kill")
                    .args(["-CONT", &c.id().to_string()])
                    .status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn run_one(opts: &Opts) -> Res<(Opts, Report)> {
    let work = std::env::temp_dir().join(format!(
        "sundial-chaos-{}-{}-{}",
        opts.store.replace(['/', ':'], "_"),
        opts.seed,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let (mut server, url) = Server::start(&opts.store, &work)?;
    // Server faults apply only to a server the harness owns.
    let mut applied = opts.clone();
    if !server.can_restart() {
        applied.faults.retain(|f| f != "restart" && f != "outage");
    }
    let opts = &applied;
    let start = Utc::now();
    // A whole second, as the workers read it back from milliseconds.
    let base = DateTime::from_timestamp(start.timestamp() + WARMUP, 0).ok_or("bad clock")?;
    let seconds = i64::try_from(opts.seconds)?;
    let lease_s = opts.lease.as_secs_f64();
    // The last stretch has no faults, so that every slot can settle.
    let settle = (3.0 * lease_s).max(12.0);
    let end = base + chrono::Duration::seconds(seconds);
    let window = seconds as f64 - settle;
    let check_end = base + chrono::Duration::milliseconds((window * 1000.0) as i64);
    let faults = plan(opts, window - 2.0, server.can_restart());
    // One-off jobs are spread over the window with faults.
    let one_off_window_ms = ((window - 2.0) * 1000.0) as i64;
    println!(
        "chaos: store {} ({}), workload × {}, {} workers, {} s, lease {} s, faults {}, seed {}",
        opts.store,
        sundial_core::redact::redact_url(&url),
        opts.scale,
        opts.workers,
        opts.seconds,
        lease_s,
        opts.faults.join(","),
        opts.seed
    );
    for (t, f) in &faults {
        println!("  at +{t:5.1} s: {f:?}");
    }
    let mut workers = Workers {
        exe: std::env::current_exe()?,
        env: vec![
            ("CHAOS_STORE".into(), url.clone()),
            ("CHAOS_BASE_MS".into(), base.timestamp_millis().to_string()),
            ("CHAOS_END_MS".into(), end.timestamp_millis().to_string()),
            ("CHAOS_LEASE_MS".into(), opts.lease.as_millis().to_string()),
            ("CHAOS_WINDOW_MS".into(), one_off_window_ms.to_string()),
            ("CHAOS_SCALE".into(), opts.scale.to_string()),
        ],
        work: work.clone(),
        children: (0..opts.workers).map(|_| None).collect(),
        skewed: opts
            .faults
            .iter()
            .any(|f| f == "skew")
            .then_some(opts.workers - 1),
        kills: Vec::new(),
    };
    for w in 0..opts.workers {
        workers.spawn(w)?;
    }
    let mut server_down_until: Option<Instant> = None;
    for (t, fault) in &faults {
        let at = base + chrono::Duration::milliseconds((t * 1000.0) as i64);
        if let Ok(wait) = (at - Utc::now()).to_std() {
            std::thread::sleep(wait);
        }
        match fault {
            Fault::Kill(w) => {
                if let Some(mut c) = workers.children[*w].take() {
                    let pid = c.id();
                    c.kill()?;
                    c.wait()?;
                    workers.kills.push((*w, pid, Utc::now()));
                }
            }
            Fault::Restart(w) => workers.spawn(*w)?,
            Fault::Stop(w) => workers.signal(*w, "-STOP"),
            Fault::Cont(w) => workers.signal(*w, "-CONT"),
            Fault::ServerCrash { back_after } => {
                server.crash()?;
                if back_after.is_zero() {
                    server.up()?;
                } else {
                    server_down_until = Some(Instant::now() + *back_after);
                }
            }
            Fault::ServerUp => {
                server.up()?;
                server_down_until = None;
            }
        }
    }
    if server_down_until.is_some() {
        server.up()?;
    }
    // Workers stop on their own at the end; a frozen one is woken first.
    for w in 0..opts.workers {
        workers.signal(w, "-CONT");
    }
    let deadline = Instant::now()
        + (end - Utc::now()).to_std().unwrap_or_default()
        + opts.lease * 3
        + Duration::from_secs(20);
    for c in workers.children.iter_mut().flatten() {
        loop {
            if c.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("chaos: worker {} did not stop in time; killed", c.id());
                c.kill()?;
                c.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let report = check(
        &url,
        &work,
        (base, check_end, one_off_window_ms),
        opts.scale,
        &workers.kills,
    )?;
    if let Some(from) = report.window_from {
        println!(
            "chaos: slots due from +{:.1} s to +{:.1} s checked (every worker had declared the workload at +{:.1} s)",
            0.0f64.max((from - base).num_milliseconds() as f64 / 1000.0),
            (check_end - base).num_milliseconds() as f64 / 1000.0,
            (from - base).num_milliseconds() as f64 / 1000.0,
        );
    }
    println!("{}", report.row(opts));
    drop(server);
    if report.passed() && std::env::var_os("CHAOS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        println!(
            "chaos: witness files and worker logs kept in {}",
            work.display()
        );
    }
    Ok((applied, report))
}

// --------------------------------------------------------------- checker ---

/// What the checker found in one run.
#[derive(Debug, Default)]
struct Report {
    due: usize,
    executed: usize,
    duplicates: Vec<String>,
    lost: Vec<String>,
    unrecorded: Vec<String>,
    interrupted: usize,
    missed: BTreeMap<String, usize>,
    skipped: usize,
    max_lateness: Duration,
    failover: Option<Duration>,
    overlaps: Vec<String>,
    /// The first instant whose slots are checked.
    window_from: Option<DateTime<Utc>>,
}

impl Report {
    fn passed(&self) -> bool {
        self.duplicates.is_empty()
            && self.lost.is_empty()
            && self.unrecorded.is_empty()
            && self.due > 0
            && self.executed > 0
    }

    fn row(&self, o: &Opts) -> String {
        let missed = if self.missed.is_empty() {
            "0".to_string()
        } else {
            self.missed
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let show = |v: &Vec<String>| {
            if v.is_empty() {
                "0".to_string()
            } else {
                format!("**{}** (e.g. {})", v.len(), v[..v.len().min(3)].join("; "))
            }
        };
        let store = if o.scale == 1.0 {
            o.store.clone()
        } else {
            format!("{} (workload × {})", o.store, o.scale)
        };
        format!(
            "| {} | {} | {} | {} | {} | {} | {}{} | {} | {} | {} | {:.0} ms | {} | {} |",
            store,
            if o.faults.is_empty() {
                "none".into()
            } else {
                o.faults.join(",")
            },
            o.seed,
            self.due,
            self.executed,
            show(&self.duplicates),
            show(&self.lost),
            if self.unrecorded.is_empty() {
                String::new()
            } else {
                format!(", unrecorded {}", show(&self.unrecorded))
            },
            self.interrupted,
            missed,
            self.skipped,
            self.max_lateness.as_secs_f64() * 1000.0,
            self.failover
                .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            show(&self.overlaps)
        )
    }
}

/// One line of a witness file.
struct Seen {
    /// `S` (start), `E` (end) or `R` (workload declared).
    kind: char,
    job: String,
    slot: i64,
    attempt: u32,
    pid: u32,
    at: i64,
}

/// Every witness line, and when the last of the first workers had declared
/// the workload (the first `R` line of each file, the latest of those).
fn read_witness(work: &Path) -> Res<(Vec<Seen>, Option<i64>)> {
    let mut out = Vec::new();
    let mut ready: Option<i64> = None;
    for entry in std::fs::read_dir(work)? {
        let path = entry?.path();
        let is_witness = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("witness"));
        if !is_witness {
            continue;
        }
        let mut first_ready = None;
        for line in std::fs::read_to_string(&path)?.lines() {
            let f: Vec<&str> = line.split(',').collect();
            // A line cut short by a kill has fewer fields; it is ignored.
            let [kind, job, slot, attempt, pid, at] = f[..] else {
                continue;
            };
            let seen = Seen {
                kind: kind.chars().next().unwrap_or('?'),
                job: job.to_string(),
                slot: slot.parse()?,
                attempt: attempt.parse()?,
                pid: pid.parse()?,
                at: at.parse()?,
            };
            if seen.kind == 'R' {
                first_ready.get_or_insert(seen.at);
            } else {
                out.push(seen);
            }
        }
        if let Some(r) = first_ready {
            ready = Some(ready.map_or(r, |x| x.max(r)));
        }
    }
    Ok((out, ready))
}

/// Every slot of the workload due in `[base, until]`, by job.
fn due_slots(
    base: DateTime<Utc>,
    until: DateTime<Utc>,
    window_ms: i64,
    w: &Workload,
) -> Vec<(String, i64)> {
    let (b, u) = (base.timestamp_micros(), until.timestamp_micros());
    let mut out = Vec::new();
    let every = |out: &mut Vec<(String, i64)>, job: String, secs: i64| {
        let mut t = b;
        while t <= u {
            out.push((job.clone(), t));
            t += secs * 1_000_000;
        }
    };
    for i in 0..w.intervals {
        every(&mut out, format!("iv{i}"), 1);
    }
    for i in 0..w.longs {
        every(&mut out, format!("long{i}"), 5);
    }
    for i in 0..w.retried {
        every(&mut out, format!("retry{i}"), 3);
    }
    let step = window_ms / w.one_offs as i64 * 1000;
    for k in 0..w.one_offs {
        let t = b + step * k as i64;
        if t <= u {
            out.push((format!("one{k}"), t));
        }
    }
    let first_even = (b + 1_999_999) / 2_000_000 * 2_000_000;
    for i in 0..w.crons {
        let mut t = first_even;
        while t <= u {
            out.push((format!("cron{i}"), t));
            t += 2_000_000;
        }
    }
    out
}

/// Checks the run whose slots in `[base, until]` are due (one-off jobs spread
/// over `one_off_ms` from `base`).
fn check(
    url: &str,
    work: &Path,
    (base, until, one_off_ms): (DateTime<Utc>, DateTime<Utc>, i64),
    scale: f64,
    kills: &[(usize, u32, DateTime<Utc>)],
) -> Res<Report> {
    let (seen, ready) = read_witness(work)?;
    // Slots before every worker had declared the workload may not exist
    // (a trigger's first fire is computed when its job is added).
    let from = ready.map_or(base.timestamp_micros(), |r| r.max(base.timestamp_micros()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let runs: Vec<RunRecord> = rt.block_on(async {
        let store = store_from_url(url)?;
        store.start().await?;
        let query = RunQuery {
            limit: 10_000_000,
            ..RunQuery::default()
        };
        let runs = store.query_runs(&query).await?;
        store.shutdown().await?;
        Ok::<_, sundial::Error>(runs)
    })?;
    let mut r = Report::default();
    // Duplicates: a (job, slot, attempt) started twice, or a later attempt of a
    // job that does not retry.
    let mut starts: HashMap<(&str, i64, u32), Vec<u32>> = HashMap::new();
    let mut executed: HashSet<(&str, i64)> = HashSet::new();
    let in_window = |slot: i64| slot >= from && slot <= until.timestamp_micros();
    for s in seen.iter().filter(|s| s.kind == 'S') {
        starts
            .entry((&s.job, s.slot, s.attempt))
            .or_default()
            .push(s.pid);
        if in_window(s.slot) {
            executed.insert((&s.job, s.slot));
            if s.attempt == 1 {
                let late = Duration::from_micros(u64::try_from(s.at - s.slot).unwrap_or(0));
                r.max_lateness = r.max_lateness.max(late);
            }
        }
    }
    for ((job, slot, attempt), pids) in &starts {
        if pids.len() > 1 || (*attempt > 1 && !job.starts_with("retry")) {
            r.duplicates
                .push(format!("{job} @ {slot} attempt {attempt} by pids {pids:?}"));
        }
    }
    r.executed = executed.len();
    // Every execution is in the ledger.
    let recorded: HashSet<(&str, i64, u32)> = runs
        .iter()
        .map(|x| {
            (
                x.job_id.as_str(),
                x.scheduled_time.timestamp_micros(),
                x.attempt,
            )
        })
        .collect();
    for (job, slot, attempt) in starts.keys() {
        if !recorded.contains(&(*job, *slot, *attempt)) {
            r.unrecorded
                .push(format!("{job} @ {slot} attempt {attempt}"));
        }
    }
    // Lost: a due slot without a terminal record.
    let mut terminal: HashSet<(&str, i64)> = HashSet::new();
    for x in &runs {
        if x.state != RunState::Running {
            terminal.insert((x.job_id.as_str(), x.scheduled_time.timestamp_micros()));
        }
        match x.state {
            RunState::Interrupted => r.interrupted += 1,
            RunState::Skipped => r.skipped += 1,
            RunState::Missed => {
                let why = x.error.as_deref().unwrap_or("");
                let key = if why.starts_with("coalesced") {
                    "coalesced"
                } else {
                    "late"
                };
                *r.missed.entry(key.to_string()).or_default() += 1;
            }
            _ => {}
        }
    }
    let mut due = due_slots(base, until, one_off_ms, &Workload::scaled(scale));
    due.retain(|(_, t)| *t >= from);
    r.window_from = DateTime::from_timestamp_micros(from);
    r.due = due.len();
    for (job, slot) in &due {
        if !terminal.contains(&(job.as_str(), *slot)) {
            let states: Vec<String> = runs
                .iter()
                .filter(|x| {
                    x.job_id.as_str() == job && x.scheduled_time.timestamp_micros() == *slot
                })
                .map(|x| format!("{:?}", x.state))
                .collect();
            r.lost.push(format!("{job} @ {slot} (records: {states:?})"));
        }
    }
    // Failover: from a kill to the moment a peer marked the killed worker's
    // runs interrupted.
    for (_, pid, when) in kills {
        let node_suffix = format!(":{pid}");
        for x in runs.iter().filter(|x| {
            x.state == RunState::Interrupted
                && x.node.as_deref().is_some_and(|n| n.ends_with(&node_suffix))
        }) {
            if let Some(done) = x.finished_at {
                let d = (done - *when).to_std().unwrap_or_default();
                r.failover = Some(r.failover.map_or(d, |f| f.max(d)));
            }
        }
    }
    // Overlaps of max_instances = 1 jobs, from the witness (real time).
    let mut spans: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    let ends: HashMap<(&str, i64, u32, u32), i64> = seen
        .iter()
        .filter(|s| s.kind == 'E')
        .map(|s| ((s.job.as_str(), s.slot, s.attempt, s.pid), s.at))
        .collect();
    for s in seen
        .iter()
        .filter(|s| s.kind == 'S' && s.job.starts_with("long"))
    {
        if let Some(end) = ends.get(&(s.job.as_str(), s.slot, s.attempt, s.pid)) {
            spans.entry(&s.job).or_default().push((s.at, *end));
        }
    }
    for (job, v) in &mut spans {
        v.sort();
        for w in v.windows(2).filter(|w| w[1].0 < w[0].1) {
            r.overlaps.push(format!(
                "{job}: a run started {:.1} s before the previous one ended",
                (w[0].1 - w[1].0) as f64 / 1e6
            ));
        }
    }
    r.duplicates.sort();
    r.lost.sort();
    Ok(r)
}
