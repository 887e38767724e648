//! Commands over a job store: `jobs`, `runs`, `nodes`, `serve`.

use std::io::Write;

use chrono::Utc;
use serde_json::{json, Value};
use sundial::admin::{job_json, node_json, parse_since, run_json, AdminConfig};
use sundial::run::{RunQuery, RunState};
use sundial::scheduler::Scheduler;
use sundial::Error;

/// How a command failed: bad input (exit 2) or anything else (exit 1).
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line or a value in it is wrong.
    Usage(String),
    /// Not found, the store failed, the server stopped.
    Failed(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidTrigger { .. }
            | Error::InvalidArgs { .. }
            | Error::InvalidJob(_)
            | Error::UnknownStore { .. }
            | Error::UnknownTask { .. }
            | Error::UnknownExecutor { .. } => Failure::Usage(e.to_string()),
            _ => Failure::Failed(e.to_string()),
        }
    }
}

/// Where the jobs are.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreArgs {
    /// The job store URL, such as sqlite://jobs.db or postgres://host/db (or set SUNDIAL_STORE).
    #[arg(long, env = "SUNDIAL_STORE", global = true)]
    store: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum JobsCommand {
    /// List the jobs.
    List {
        /// Only jobs in this state: scheduled or paused.
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this task.
        #[arg(long)]
        task: Option<String>,
    },
    /// Show one job with its next fire times.
    Show {
        /// The job id.
        id: String,
    },
    /// Pause a job.
    Pause {
        /// The job id.
        id: String,
    },
    /// Resume a paused job.
    Resume {
        /// The job id.
        id: String,
    },
    /// Remove a job.
    Remove {
        /// The job id.
        id: String,
    },
    /// Ask the schedulers running the store to run a job now.
    Run {
        /// The job id.
        id: String,
    },
}

/// `sundial runs` filters.
#[derive(Debug, clap::Args)]
pub(crate) struct RunsArgs {
    /// Only runs of this job.
    #[arg(long)]
    job: Option<String>,
    /// Only runs in this state (running, succeeded, failed, timed_out, interrupted, missed, skipped, cancelled).
    #[arg(long)]
    state: Option<String>,
    /// Only runs scheduled since then: an RFC 3339 instant or an age such as 30m, 1h, 7d.
    #[arg(long)]
    since: Option<String>,
    /// At most this many runs, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// `sundial serve` settings.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The job store URL (or set SUNDIAL_STORE).
    #[arg(long, env = "SUNDIAL_STORE")]
    store: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// A file of tokens, one per line: `admin TOKEN`, `viewer TOKEN`, or a bare TOKEN (admin).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Serve without a token (only on a loopback address).
    #[arg(long)]
    allow_anonymous: bool,
}

/// A client scheduler over the store: it manages jobs and runs none.
async fn client(url: Option<&str>) -> Result<Scheduler, Failure> {
    let url = url.ok_or_else(|| {
        Failure::Usage("give the job store: --store URL or SUNDIAL_STORE=URL".into())
    })?;
    let store = sundial::store_from_url(url)?;
    let s = Scheduler::builder()
        .jobstore_arc("default", store)
        .build_client()?;
    s.start().await?;
    Ok(s)
}

fn not_found(id: &str) -> Failure {
    Failure::Failed(format!("no job with id '{id}'"))
}

fn print(out: &mut impl Write, text: impl std::fmt::Display) -> Result<(), Failure> {
    writeln!(out, "{text}").map_err(|e| Failure::Failed(format!("writing output: {e}")))
}

/// Prints rows as a table with a header, columns padded to their widest cell.
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> Result<(), Failure> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    print(out, line(header.to_vec()))?;
    for row in rows {
        print(out, line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first line of a text, cut to `max` characters.
fn short(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > max || s.contains('\n') {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}

pub(crate) async fn jobs(args: StoreArgs, cmd: JobsCommand) -> Result<(), Failure> {
    let s = client(args.store.as_deref()).await?;
    let result = jobs_on(&s, &args, cmd).await;
    let _ = s.shutdown(false).await;
    result
}

async fn jobs_on(s: &Scheduler, args: &StoreArgs, cmd: JobsCommand) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let show = |out: &mut std::io::StdoutLock<'_>, job: &sundial::scheduler::Job, what: &str| {
        if args.json {
            print(out, job_json(job))
        } else {
            print(out, format!("{what} {job}"))
        }
    };
    match cmd {
        JobsCommand::List { state, task } => {
            if let Some(st) = state.as_deref() {
                if !matches!(st, "scheduled" | "paused") {
                    return Err(Failure::Usage(format!(
                        "--state {st:?}: expected scheduled or paused"
                    )));
                }
            }
            let listing = s.job_listing(None).await?;
            for u in listing.unreadable() {
                eprintln!(
                    "warning: job '{}' in store {} is unreadable and does not run: {} (replace or remove it)",
                    u.id, u.jobstore, u.reason
                );
            }
            let jobs: Vec<Value> = listing
                .jobs_by_run_time()
                .into_iter()
                .map(job_json)
                .filter(|j| state.as_deref().is_none_or(|st| j["state"] == st))
                .filter(|j| task.as_deref().is_none_or(|t| j["task"] == t))
                .collect();
            if args.json {
                return print(&mut out, Value::Array(jobs));
            }
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|j| {
                    vec![
                        text(&j["id"]),
                        text(&j["name"]),
                        text(&j["task"]),
                        text(&j["trigger_description"]),
                        text(&j["next_run_time_local"]),
                        text(&j["state"]),
                    ]
                })
                .collect();
            table(
                &mut out,
                &["ID", "NAME", "TASK", "TRIGGER", "NEXT RUN", "STATE"],
                &rows,
            )
        }
        JobsCommand::Show { id } => {
            let job = s
                .get_job(id.as_str(), None)
                .await?
                .ok_or_else(|| not_found(&id))?;
            let j = job_json(&job);
            if args.json {
                return print(&mut out, j);
            }
            for key in ["id", "name", "task", "trigger_description", "state"] {
                print(&mut out, format!("{key:<20} {}", text(&j[key])))?;
            }
            print(
                &mut out,
                format!("{:<20} {}", "next run", text(&j["next_run_time_local"])),
            )?;
            print(&mut out, format!("{:<20} {}", "trigger", j["trigger"]))?;
            print(&mut out, format!("{:<20} {}", "args", j["args"]))?;
            print(&mut out, format!("{:<20} {}", "options", j["options"]))
        }
        JobsCommand::Pause { id } => {
            let job = s.pause_job(id.as_str(), None).await?;
            show(&mut out, &job, "paused")
        }
        JobsCommand::Resume { id } => match s.resume_job(id.as_str(), None).await? {
            Some(job) => show(&mut out, &job, "resumed"),
            None => print(
                &mut out,
                if args.json {
                    json!({"id": id, "removed": true}).to_string()
                } else {
                    format!("{id}: its trigger has no fire time left, so the job was removed")
                },
            ),
        },
        JobsCommand::Remove { id } => {
            s.remove_job(id.as_str(), None).await?;
            print(
                &mut out,
                if args.json {
                    json!({"id": id, "removed": true}).to_string()
                } else {
                    format!("removed {id}")
                },
            )
        }
        JobsCommand::Run { id } => {
            s.run_job_now(id.as_str(), None).await?;
            let live = s
                .nodes()
                .await?
                .iter()
                .filter(|n| n.is_live(Utc::now()))
                .count();
            if args.json {
                return print(
                    &mut out,
                    json!({"id": id, "requested": true, "live_nodes": live}),
                );
            }
            print(&mut out, format!("asked the schedulers running the store to run {id} (its next run time is now two seconds ahead; {live} live node(s))"))?;
            if live == 0 {
                eprintln!("sundial: no live scheduler is registered in the store: the job runs when one starts");
            }
            Ok(())
        }
    }
}

pub(crate) async fn runs(args: StoreArgs, filters: RunsArgs) -> Result<(), Failure> {
    let mut query = RunQuery {
        job_id: filters.job.map(Into::into),
        limit: filters.limit,
        ..RunQuery::default()
    };
    if let Some(st) = filters.state.as_deref() {
        query.state = Some(RunState::parse(st).ok_or_else(|| {
            Failure::Usage(format!(
                "--state {st:?}: expected one of {}",
                RunState::ALL.map(RunState::as_str).join(", ")
            ))
        })?);
    }
    if let Some(since) = filters.since.as_deref() {
        query.since = Some(parse_since(since, Utc::now()).map_err(Failure::Usage)?);
    }
    let s = client(args.store.as_deref()).await?;
    let runs = s.runs(&query, None).await;
    let _ = s.shutdown(false).await;
    let runs = runs?;
    let mut out = std::io::stdout().lock();
    if args.json {
        return print(&mut out, Value::Array(runs.iter().map(run_json).collect()));
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.scheduled_time.to_rfc3339(),
                r.job_id.to_string(),
                r.attempt.to_string(),
                r.state.as_str().to_string(),
                r.duration()
                    .map_or("-".into(), |d| format!("{:.3}s", d.as_secs_f64())),
                r.node.clone().unwrap_or_else(|| "-".into()),
                r.error.as_deref().map_or("-".into(), |e| short(e, 60)),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "SCHEDULED",
            "JOB",
            "ATTEMPT",
            "STATE",
            "DURATION",
            "NODE",
            "ERROR",
        ],
        &rows,
    )
}

pub(crate) async fn nodes(args: StoreArgs) -> Result<(), Failure> {
    let s = client(args.store.as_deref()).await?;
    let nodes = s.nodes().await;
    let _ = s.shutdown(false).await;
    let nodes = nodes?;
    let now = Utc::now();
    let mut out = std::io::stdout().lock();
    if args.json {
        return print(
            &mut out,
            Value::Array(nodes.iter().map(|n| node_json(n, now)).collect()),
        );
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.owner.to_string(),
                n.host.clone(),
                n.pid.to_string(),
                if n.is_live(now) { "yes" } else { "no" }.into(),
                format!(
                    "{:.1}s",
                    (now - n.heartbeat_at).num_milliseconds() as f64 / 1000.0
                ),
                n.clock_offset_ms
                    .map_or("-".into(), |ms| format!("{ms} ms")),
                n.running.to_string(),
                n.version.clone(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "OWNER",
            "HOST",
            "PID",
            "LIVE",
            "HEARTBEAT AGE",
            "CLOCK OFFSET",
            "RUNNING",
            "VERSION",
        ],
        &rows,
    )
}

/// Reads a token file: `admin TOKEN`, `viewer TOKEN` or a bare TOKEN per line;
/// blank lines and `#` comments are skipped.
fn read_tokens(path: &std::path::Path, mut config: AdminConfig) -> Result<AdminConfig, Failure> {
    let body = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("--token-file {}: {e}", path.display())))?;
    let mut n = 0;
    for (i, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The line itself is never printed: it holds a secret.
        let bad = || {
            Failure::Usage(format!(
                "--token-file {} line {}: expected `admin TOKEN`, `viewer TOKEN` or a bare TOKEN",
                path.display(),
                i + 1
            ))
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        config = match words.as_slice() {
            ["admin", t] => config.admin_token(*t),
            ["viewer", t] => config.viewer_token(*t),
            // A role with a separator other than a space is a typo, not a token.
            [t] if !["admin", "viewer"].iter().any(|r| {
                t.strip_prefix(r)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '=']))
            }) =>
            {
                config.admin_token(*t)
            }
            _ => return Err(bad()),
        };
        n += 1;
    }
    if n == 0 {
        return Err(Failure::Usage(format!(
            "--token-file {}: no token in the file",
            path.display()
        )));
    }
    Ok(config)
}

pub(crate) async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let mut config = AdminConfig::new();
    match (&args.token_file, args.allow_anonymous) {
        (Some(path), _) => config = read_tokens(path, config)?,
        (None, true) => config = config.allow_anonymous(),
        (None, false) => {
            return Err(Failure::Usage(
                "give --token-file FILE (or --allow-anonymous on a loopback address)".into(),
            ))
        }
    }
    let addr: std::net::SocketAddr = args
        .bind
        .parse()
        .map_err(|e| Failure::Usage(format!("--bind {:?}: {e}", args.bind)))?;
    if args.allow_anonymous && args.token_file.is_none() && !addr.ip().is_loopback() {
        return Err(Failure::Usage(format!(
            "--allow-anonymous serves anyone who can reach {addr}: bind a loopback address or give --token-file"
        )));
    }
    let s = client(args.store.as_deref()).await?;
    let app = sundial::admin::router(s.clone(), config)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Failed(format!("cannot listen on {addr}: {e}")))?;
    eprintln!(
        "sundial: admin API over {} on http://{addr}/",
        redacted(args.store.as_deref().unwrap_or_default())
    );
    let served = axum_serve(listener, app).await;
    let _ = s.shutdown(false).await;
    served
}

async fn axum_serve(
    listener: tokio::net::TcpListener,
    app: sundial::admin::Router,
) -> Result<(), Failure> {
    sundial::admin::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| Failure::Failed(format!("serving: {e}")))
}

fn redacted(url: &str) -> String {
    sundial::redact::redact_url(url)
}
