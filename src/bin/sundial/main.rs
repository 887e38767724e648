//! The `sundial` command-line tool.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use sundial::chrono_tz::Tz;
use sundial::trigger::{parse_timezone, trigger_from_json, CronTrigger, Trigger};

mod store;
use store::Failure;

/// Sundial: job scheduling for Rust.
#[derive(Debug, Parser)]
#[command(name = "sundial", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the next fire times of a crontab expression or trigger JSON.
    Next(NextArgs),
    /// Manage the jobs in a store: list, show, pause, resume, remove, run.
    Jobs {
        #[command(flatten)]
        store: store::StoreArgs,
        #[command(subcommand)]
        command: store::JobsCommand,
    },
    /// The run history of a store, newest first.
    Runs {
        #[command(flatten)]
        store: store::StoreArgs,
        #[command(flatten)]
        filters: store::RunsArgs,
    },
    /// The schedulers registered in a store.
    Nodes {
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Serve the admin HTTP API over a store (jobs are managed here and run by
    /// the application's schedulers).
    Serve(store::ServeArgs),
}

#[derive(Debug, clap::Args)]
struct NextArgs {
    /// A crontab expression, such as "0 9 * * 1-5" (5 or 6 fields, or @daily etc.).
    expr: Option<String>,
    /// Trigger JSON instead of a crontab expression, such as '{"type":"cron","hour":"9"}'.
    #[arg(long, conflicts_with_all = ["expr", "jsonl"])]
    json: Option<String>,
    /// Batch mode: read {"id","trigger","from","count"} lines on stdin, write one result per line.
    #[arg(long, conflicts_with = "expr")]
    jsonl: bool,
    /// Time zone for triggers that do not name one (IANA name).
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// How many fire times to print.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// Start instant (RFC 3339); defaults to now.
    #[arg(long)]
    from: Option<String>,
}

/// The most fire times one `next` prints.
const MAX_COUNT: usize = 100_000;

/// Fire times as the scheduler iterates, in the trigger's zone.
fn fire_times(
    trigger: &dyn Trigger,
    from: DateTime<Utc>,
    count: usize,
) -> Result<Vec<String>, String> {
    if count > MAX_COUNT {
        return Err(format!(
            "count {count} is over the limit of {MAX_COUNT} fire times"
        ));
    }
    let tz = trigger.timezone().unwrap_or(Tz::UTC);
    let times =
        sundial::trigger::fire_times(trigger, None, from, count).map_err(|e| e.to_string())?;
    Ok(times
        .into_iter()
        .map(|t| t.with_timezone(&tz).to_rfc3339())
        .collect())
}

fn parse_from(text: Option<&str>) -> Result<DateTime<Utc>, String> {
    match text {
        None => Ok(Utc::now()),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("invalid --from/\"from\" value {s:?}: {e} (expected RFC 3339, e.g. 2026-03-01T00:00:00+08:00)")),
    }
}

fn build(args: &NextArgs, tz: Tz, from: DateTime<Utc>) -> Result<Box<dyn Trigger>, String> {
    let mut trigger: Box<dyn Trigger> = match (&args.expr, &args.json) {
        (Some(expr), None) => Box::new(CronTrigger::from_crontab(expr).map_err(|e| e.to_string())?),
        (None, Some(json)) => {
            let value: Value =
                serde_json::from_str(json).map_err(|e| format!("invalid --json: {e}"))?;
            trigger_from_json(&value).map_err(|e| e.to_string())?
        }
        _ => return Err("give a crontab expression, --json TRIGGER or --jsonl".into()),
    };
    trigger.prepare(from, tz);
    Ok(trigger)
}

fn jsonl_line(line: &str, tz: Tz) -> Value {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"id": null, "error": format!("invalid JSON line: {e}")}),
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let result = (|| {
        let trigger = value.get("trigger").ok_or("missing \"trigger\"")?;
        let from = parse_from(value.get("from").and_then(Value::as_str))?;
        let count = match value.get("count") {
            None => 5,
            Some(c) => c
                .as_u64()
                .and_then(|c| usize::try_from(c).ok())
                .ok_or_else(|| format!("\"count\" must be a non-negative integer, got {c}"))?,
        };
        let mut t = trigger_from_json(trigger).map_err(|e| e.to_string())?;
        t.prepare(from, tz);
        fire_times(t.as_ref(), from, count)
    })();
    match result {
        Ok(times) => json!({"id": id, "fire_times": times}),
        Err(e) => json!({"id": id, "error": e}),
    }
}

fn run_next(args: NextArgs) -> Result<(), String> {
    let tz = parse_timezone(&args.tz).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.jsonl {
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| format!("reading stdin: {e}"))?;
            if line.trim().is_empty() {
                continue;
            }
            writeln!(out, "{}", jsonl_line(&line, tz)).map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    let from = parse_from(args.from.as_deref())?;
    let trigger = build(&args, tz, from)?;
    for t in fire_times(trigger.as_ref(), from, args.count)? {
        writeln!(out, "{t}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Next(args) => run_next(args).map_err(Failure::Usage),
        other => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(async move {
                match other {
                    Command::Jobs { store, command } => store::jobs(store, command).await,
                    Command::Runs { store, filters } => store::runs(store, filters).await,
                    Command::Nodes { store } => store::nodes(store).await,
                    Command::Serve(args) => store::serve(args).await,
                    Command::Next(_) => Ok(()),
                }
            }),
            Err(e) => Err(Failure::Failed(format!("cannot start the runtime: {e}"))),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("sundial: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("sundial: {e}");
            ExitCode::from(1)
        }
    }
}
