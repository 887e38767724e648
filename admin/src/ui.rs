//! The dashboard: server-rendered HTML pages over the same scheduler, under
//! `ui/` of the admin router. Readable without JavaScript; pages refresh
//! themselves every few seconds and keep their filters (they live in the URL).
//!
//! Sign-in takes an admin or viewer token once and keeps it in an `HttpOnly;
//! SameSite=Strict` cookie. Actions (pause, resume, run now, remove) are forms
//! that need the admin role and a same-origin `Origin` header; viewers see no
//! action buttons. Every value from a job, a run or a node is HTML-escaped.

use std::fmt::Write as _;

use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sundial_core::run::{RunQuery, RunRecord, RunState};
use sundial_core::scheduler::Job;
use sundial_core::trigger::CRON_FIELD_NAMES;

use crate::error::Params;
use crate::{App, Role};

const COOKIE: &str = "sundial_token";
/// Seconds between automatic refreshes of a page.
const REFRESH_SECS: u32 = 5;

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a URL query value.
fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Undoes [`q`].
fn unq(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn token_from_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .flat_map(|v| {
            v.split(';')
                .map(|kv| kv.trim().to_string())
                .collect::<Vec<_>>()
        })
        .find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == COOKIE)
                .and_then(|(_, v)| unq(v))
        })
}

/// The signed-in role, put in the request by [`signed_in`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Viewer(pub(crate) Role);

/// Lets a request to a dashboard page through when its cookie holds a token;
/// otherwise sends the browser to the sign-in page.
pub(crate) async fn signed_in(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let token = token_from_cookie(req.headers());
    match token.and_then(|t| app.config.role_of(Some(&t))) {
        Some(role) => {
            req.extensions_mut().insert(Viewer(role));
            next.run(req).await
        }
        None if app.config.role_of(None).is_some() => {
            req.extensions_mut().insert(Viewer(Role::Admin));
            next.run(req).await
        }
        None => Redirect::to("login").into_response(),
    }
}

fn page(title: &str, role: Option<Role>, refresh: bool, body: &str) -> Html<String> {
    let nav = match role {
        Some(r) => format!(
            r#"<nav><a href="jobs">Jobs</a><a href="runs">Runs</a><a href="nodes">Nodes</a>{}<span class="role">{}</span><form method="post" action="logout"><button>Sign out</button></form></nav>"#,
            if r == Role::Admin {
                r#"<a href="add" id="add-job">Add job</a>"#
            } else {
                ""
            },
            if r == Role::Admin { "admin" } else { "viewer" }
        ),
        None => String::new(),
    };
    // Reloads unless the user is typing in a field or reading an opened
    // error; without JavaScript a plain meta refresh does it.
    let refresh = if refresh {
        format!(
            r#"<noscript><meta http-equiv="refresh" content="{REFRESH_SECS}"></noscript><script>setInterval(function(){{var a=document.activeElement;if(a&&/^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName))return;if(document.querySelector('details[open]'))return;location.reload()}},{}000)</script>"#,
            REFRESH_SECS
        )
    } else {
        String::new()
    };
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">{refresh}<title>{title} · Sundial</title><style>{CSS}</style></head><body><header><b>☀ Sundial</b>{nav}</header><main><h1>{title}</h1>{body}</main></body></html>"#,
        title = esc(title),
    ))
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}header{display:flex;flex-wrap:wrap;gap:1em;align-items:center;padding:.6em 1em;background:#1d3557;color:#fff}header a{color:#fff;margin-right:1em}nav{display:flex;flex-wrap:wrap;align-items:center;gap:.5em}nav form{display:inline}.role{opacity:.8;margin-right:.5em}main{padding:1em}h1{font-size:1.3em}.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;vertical-align:top}th{background:#f1f3f5}td form,.actions form{display:inline}button{cursor:pointer}.succeeded{color:#2b8a3e}.failed,.timed_out,.interrupted{color:#c92a2a}.missed,.skipped,.cancelled{color:#e67700}.running{color:#1971c2}.muted{color:#777}pre{white-space:pre-wrap;margin:0}form.filter{margin-bottom:1em;display:flex;flex-wrap:wrap;gap:.5em}dl{display:grid;grid-template-columns:max-content 1fr;gap:.3em 1em}dt{font-weight:600}.field-error{color:#c92a2a}.problem{background:#fff5f5;border:1px solid #c92a2a;padding:.5em}";

fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = t else {
        return r#"<span class="muted">—</span>"#.into();
    };
    let secs = (t - now).num_seconds();
    let rel = match secs.abs() {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    };
    let rel = if secs >= 0 {
        format!("in {rel}")
    } else {
        format!("{rel} ago")
    };
    format!(
        r#"{} <span class="muted">({rel})</span>"#,
        esc(&t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    )
}

/// A trigger in words, such as "every 30 minutes" or "at 09:00 on mon-fri, Asia/Shanghai".
pub(crate) fn trigger_words(trigger: &Value, fallback: &str) -> String {
    let s = |k: &str| trigger.get(k).and_then(Value::as_str);
    let n = |k: &str| trigger.get(k).and_then(Value::as_u64).unwrap_or(0);
    let tz = s("timezone").map(|z| format!(", {z}")).unwrap_or_default();
    let steps = |names: &[&str]| {
        let parts: Vec<String> = names
            .iter()
            .filter(|k| n(k) > 0)
            .map(|k| {
                let v = n(k);
                let unit = k.trim_end_matches('s');
                if v == 1 {
                    unit.to_string()
                } else {
                    format!("{v} {k}")
                }
            })
            .collect();
        parts.join(" ")
    };
    match s("type") {
        Some("interval") => {
            // In the largest unit that divides the whole interval.
            let total = n("weeks") * 604_800
                + n("days") * 86_400
                + n("hours") * 3_600
                + n("minutes") * 60
                + n("seconds");
            let (size, unit) = [
                (604_800, "week"),
                (86_400, "day"),
                (3_600, "hour"),
                (60, "minute"),
                (1, "second"),
            ]
            .into_iter()
            .find(|(size, _)| total > 0 && total % size == 0)
            .unwrap_or((1, "second"));
            match total / size {
                1 => format!("every {unit}"),
                k => format!("every {k} {unit}s"),
            }
        }
        Some("calendar_interval") => {
            let every = steps(&["years", "months", "weeks", "days"]);
            let at = match (trigger.get("hour"), trigger.get("minute")) {
                (Some(h), Some(m)) => format!(
                    " at {:02}:{:02}",
                    h.as_u64().unwrap_or(0),
                    m.as_u64().unwrap_or(0)
                ),
                _ => String::new(),
            };
            format!("every {every}{at}{tz}")
        }
        Some("date") => format!("once at {}", s("run_date").unwrap_or("?")),
        Some("cron") if s("crontab").is_some() => {
            let expr = s("crontab").unwrap_or_default();
            let f: Vec<&str> = expr.split_whitespace().collect();
            let num = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit());
            match f.as_slice() {
                [m, h, dom, mon, dow] if num(m) && num(h) => {
                    let mut on = Vec::new();
                    if *dow != "*" {
                        on.push(format!("on {}", crontab_weekdays(dow)));
                    }
                    if dom.eq_ignore_ascii_case("l") || dom.eq_ignore_ascii_case("last") {
                        on.push("on the last day".to_string());
                    } else if *dom != "*" {
                        on.push(format!("on day {dom}"));
                    }
                    if *mon != "*" {
                        on.push(format!("in month {mon}"));
                    }
                    let on = if on.is_empty() {
                        " every day".to_string()
                    } else {
                        format!(" {}", on.join(" "))
                    };
                    format!("at {h:0>2}:{m:0>2}{on}{tz}")
                }
                _ => format!("cron {expr}{tz}"),
            }
        }
        Some("cron") => {
            let digits = |k: &str| s(k).filter(|v| v.chars().all(|c| c.is_ascii_digit()));
            // Fields below the largest one given default to their minimum.
            let minute = match s("minute") {
                None => Some("0"),
                Some(_) => digits("minute"),
            };
            let at = match (digits("hour"), minute) {
                (Some(h), Some(m)) => {
                    let sec = digits("second").filter(|s| *s != "0");
                    let sec = sec.map(|s| format!(":{s:0>2}")).unwrap_or_default();
                    format!("at {h:0>2}:{m:0>2}{sec}")
                }
                _ => {
                    let fields: Vec<String> = CRON_FIELD_NAMES
                        .iter()
                        .filter_map(|k| s(k).map(|v| format!("{k}={v}")))
                        .collect();
                    return format!("cron {}{tz}", fields.join(" "));
                }
            };
            let mut on = Vec::new();
            if let Some(d) = s("day_of_week") {
                on.push(format!("on {d}"));
            }
            if let Some(d) = s("day") {
                on.push(format!("on day {d}"));
            }
            if let Some(m) = s("month") {
                on.push(format!("in month {m}"));
            }
            let on = if on.is_empty() {
                " every day".to_string()
            } else {
                format!(" {}", on.join(" "))
            };
            format!("{at}{on}{tz}")
        }
        _ => fallback.to_string(),
    }
}

/// Crontab weekday numbers as names: `1-5` is `Mon–Fri`, `0,6` is `Sun, Sat`.
fn crontab_weekdays(field: &str) -> String {
    const NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let name = |v: &str| match v.parse::<usize>() {
        Ok(n) if n < NAMES.len() => NAMES[n].to_string(),
        _ => v.to_string(),
    };
    const NTH: [&str; 6] = ["", "1st", "2nd", "3rd", "4th", "5th"];
    field
        .split(',')
        .map(|part| {
            if let Some(d) = part.strip_suffix(['L', 'l']) {
                return format!("last {}", name(d));
            }
            if let Some((d, k)) = part.split_once('#') {
                let k = k.parse::<usize>().ok().and_then(|k| NTH.get(k).copied());
                return format!("{} {}", k.unwrap_or("?"), name(d));
            }
            match part.split_once('-') {
                Some((a, b)) => format!("{}–{}", name(a), name(b)),
                None => name(part),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn state_of(job: &Job) -> &'static str {
    if job.is_pending() {
        "pending"
    } else if job.is_paused() {
        "paused"
    } else {
        "scheduled"
    }
}

fn run_state(state: RunState) -> String {
    format!(r#"<span class="{0}">{0}</span>"#, state.as_str())
}

fn duration(run: &RunRecord) -> String {
    run.duration()
        .map_or_else(|| "—".into(), |d| format!("{:.3} s", d.as_secs_f64()))
}

fn actions(job: &Job) -> String {
    let id = esc(job.id().as_str());
    let pause = if job.is_paused() {
        ("resume", "Resume")
    } else {
        ("pause", "Pause")
    };
    let form = |action: &str, label: &str, confirm: Option<&str>| {
        let onsubmit = confirm
            .map(|c| format!(r#" onsubmit="return confirm('{}')""#, esc(c)))
            .unwrap_or_default();
        format!(
            r#"<form method="post" action="action"{onsubmit}><input type="hidden" name="id" value="{id}"><input type="hidden" name="action" value="{action}"><button class="action {action}" name="do" value="{action}">{label}</button></form>"#
        )
    };
    format!(
        "{} {} {}",
        form(pause.0, pause.1, None),
        form("run", "Run now", None),
        form("remove", "Delete", Some("Delete this job?"))
    )
}

/// `GET ui/jobs` filters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct JobsFilter {
    #[serde(default)]
    text: String,
    #[serde(default)]
    state: String,
}

pub(crate) async fn jobs(
    State(app): State<App>,
    axum::Extension(Viewer(role)): axum::Extension<Viewer>,
    Params(f): Params<JobsFilter>,
) -> Response {
    let now = Utc::now();
    let listing = match app.scheduler.job_listing(None).await {
        Ok(l) => l,
        Err(e) => return unavailable(role, &e.to_string()),
    };
    let jobs = listing.jobs_by_run_time();
    // Stored jobs that cannot be decoded are never run: say so, with why.
    let unreadable: String = listing
        .unreadable()
        .iter()
        .map(|u| {
            format!(
                r#"<p class="problem">Job <b>{}</b> in store {} is unreadable and does not run: {}. Replace it or remove it (<code>sundial jobs remove {}</code>).</p>"#,
                esc(u.id.as_str()),
                esc(&u.jobstore),
                esc(&u.reason),
                esc(u.id.as_str()),
            )
        })
        .collect();
    let recent = app
        .scheduler
        .runs(&RunQuery::default().limit(1000), None)
        .await
        .unwrap_or_default();
    let running_runs = app
        .scheduler
        .runs(
            &RunQuery {
                state: Some(RunState::Running),
                ..RunQuery::default().limit(1000)
            },
            None,
        )
        .await
        .unwrap_or_default();
    let text = f.text.to_lowercase();
    let mut rows = String::new();
    let mut shown = 0;
    for &job in &jobs {
        let running = running_runs.iter().any(|r| r.job_id == *job.id());
        let state = if running && !job.is_paused() {
            "running"
        } else {
            state_of(job)
        };
        if !f.state.is_empty() && f.state != state {
            continue;
        }
        if !text.is_empty()
            && ![job.id().as_str(), job.name(), job.task()]
                .iter()
                .any(|v| v.to_lowercase().contains(&text))
        {
            continue;
        }
        shown += 1;
        let last = recent
            .iter()
            .find(|r| r.job_id == *job.id() && r.state != RunState::Running)
            .map_or_else(
                || r#"<span class="muted">—</span>"#.to_string(),
                |r| format!("{} {}", run_state(r.state), duration(r)),
            );
        let _ = write!(
            rows,
            r#"<tr data-job="{id}"><td><a href="job?id={qid}">{id}</a></td><td class="name">{name}</td><td>{task}</td><td>{trigger}</td><td class="state">{state}</td><td>{next}</td><td>{last}</td>{actions}</tr>"#,
            id = esc(job.id().as_str()),
            qid = q(job.id().as_str()),
            name = esc(job.name()),
            task = esc(job.task()),
            trigger = esc(&trigger_words(
                job.trigger_json(),
                job.trigger_description()
            )),
            next = when(job.next_run_time(), now),
            actions = if role == Role::Admin {
                format!("<td>{}</td>", actions(job))
            } else {
                String::new()
            },
        );
    }
    let opts: String = ["", "scheduled", "running", "paused"]
        .iter()
        .map(|s| {
            let sel = if f.state == *s { " selected" } else { "" };
            let label = if s.is_empty() { "any state" } else { s };
            format!(r#"<option value="{s}"{sel}>{label}</option>"#)
        })
        .collect();
    let body = format!(
        r#"{unreadable}<form class="filter" method="get" action="jobs"><input name="text" placeholder="search id, name, task" value="{text}"><select name="state">{opts}</select><button>Filter</button></form><p class="muted">{shown} of {total} jobs</p><div class="scroll"><table id="jobs"><thead><tr><th>ID</th><th>Name</th><th>Task</th><th>Trigger</th><th>State</th><th>Next run</th><th>Last run</th>{act}</tr></thead><tbody>{rows}</tbody></table></div>"#,
        text = esc(&f.text),
        total = jobs.len(),
        act = if role == Role::Admin {
            "<th>Actions</th>"
        } else {
            ""
        },
    );
    page("Jobs", Some(role), true, &body).into_response()
}

/// `GET ui/job` parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct JobQuery {
    id: String,
}

pub(crate) async fn job(
    State(app): State<App>,
    axum::Extension(Viewer(role)): axum::Extension<Viewer>,
    Params(query): Params<JobQuery>,
) -> Response {
    let now = Utc::now();
    let job = match app.scheduler.get_job(query.id.as_str(), None).await {
        Ok(Some(j)) => j,
        Ok(None) => {
            let body = format!(
                r#"<p>No job with id <code>{}</code>.</p><p><a href="jobs">All jobs</a></p>"#,
                esc(&query.id)
            );
            return (
                StatusCode::NOT_FOUND,
                page("Job not found", Some(role), false, &body),
            )
                .into_response();
        }
        Err(e) => return unavailable(role, &e.to_string()),
    };
    let runs = app
        .scheduler
        .runs(&RunQuery::job(query.id.as_str()).limit(50), None)
        .await
        .unwrap_or_default();
    let next: Vec<DateTime<Utc>> = match (
        job.next_run_time(),
        app.scheduler.parse_trigger(job.trigger_json()),
    ) {
        (Some(first), Ok(t)) => {
            let mut v = vec![first];
            v.extend(
                crate::jobs::fire_times_blocking(t, Some(first), first, 9)
                    .await
                    .unwrap_or_default(),
            );
            v
        }
        _ => Vec::new(),
    };
    let tz = job
        .next_run_time_local()
        .map(|t| t.timezone())
        .unwrap_or(app.scheduler.timezone());
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<dl><dt>ID</dt><dd>{id}</dd><dt>Name</dt><dd class="name">{name}</dd><dt>Task</dt><dd>{task}</dd><dt>Trigger</dt><dd>{words} <span class="muted">{trigger}</span></dd><dt>State</dt><dd class="state">{state}</dd><dt>Arguments</dt><dd><pre>{args}</pre></dd><dt>Options</dt><dd><pre>{options}</pre></dd></dl>"#,
        id = esc(job.id().as_str()),
        name = esc(job.name()),
        task = esc(job.task()),
        words = esc(&trigger_words(
            job.trigger_json(),
            job.trigger_description()
        )),
        trigger = esc(&job.trigger_json().to_string()),
        state = state_of(&job),
        args = esc(&serde_json::to_string_pretty(job.args()).unwrap_or_default()),
        options = esc(
            &serde_json::to_string_pretty(&crate::view::options_json(&job)).unwrap_or_default()
        ),
    );
    if role == Role::Admin {
        let _ = write!(
            body,
            r#"<div class="actions">{} <a class="action edit" id="edit" href="edit?id={}">Edit</a></div>"#,
            actions(&job),
            q(job.id().as_str())
        );
    }
    body.push_str("<h2>Next fire times</h2><ol id=\"next\">");
    for t in &next {
        let local = t
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string();
        let utc = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let utc = if utc == local {
            String::new()
        } else {
            format!(r#" <span class="muted">{}</span>"#, esc(&utc))
        };
        let _ = write!(body, "<li>{}{utc}</li>", esc(&local));
    }
    body.push_str("</ol><h2>Run history</h2>");
    body.push_str(&duration_chart(&runs));
    body.push_str(&runs_table(&runs, now, false));
    page(&format!("Job {}", job.id()), Some(role), true, &body).into_response()
}

/// A bar per finished run, newest on the right, height by duration (SVG).
fn duration_chart(runs: &[RunRecord]) -> String {
    let done: Vec<(f64, RunState)> = runs
        .iter()
        .rev()
        .filter_map(|r| r.duration().map(|d| (d.as_secs_f64(), r.state)))
        .collect();
    if done.is_empty() {
        return String::new();
    }
    let max = done
        .iter()
        .map(|(d, _)| *d)
        .fold(f64::MIN_POSITIVE, f64::max);
    let (w, h) = (8.0, 60.0);
    let mut bars = String::new();
    for (i, (d, state)) in done.iter().enumerate() {
        let bh = (d / max * h).max(1.0);
        let color = if *state == RunState::Succeeded {
            "#2b8a3e"
        } else {
            "#c92a2a"
        };
        let _ = write!(
            bars,
            r#"<rect x="{x}" y="{y:.1}" width="{bw}" height="{bh:.1}" fill="{color}"><title>{d:.3} s, {s}</title></rect>"#,
            x = i as f64 * w,
            y = h - bh,
            bw = w - 2.0,
            s = state.as_str(),
        );
    }
    format!(
        r#"<svg class="chart" role="img" aria-label="run durations, longest {max:.3} s" width="{}" height="{h}" viewBox="0 0 {} {h}">{bars}</svg>"#,
        done.len() as f64 * w,
        done.len() as f64 * w,
    )
}

fn runs_table(runs: &[RunRecord], now: DateTime<Utc>, with_job: bool) -> String {
    let mut rows = String::new();
    for r in runs {
        let error = r.error.as_deref().map_or_else(String::new, |e| {
            let first = e.lines().next().unwrap_or("");
            format!(
                "<details><summary>{}</summary><pre class=\"error\">{}</pre></details>",
                esc(&first.chars().take(80).collect::<String>()),
                esc(e)
            )
        });
        let job = if with_job {
            format!(
                r#"<td><a href="job?id={}">{}</a></td>"#,
                q(r.job_id.as_str()),
                esc(r.job_id.as_str())
            )
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            r#"<tr>{job}<td>{sched}</td><td class="run-state">{state}</td><td>{attempt}</td><td>{node}</td><td>{started}</td><td>{dur}</td><td>{error}</td></tr>"#,
            sched = esc(&r.scheduled_time.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            state = run_state(r.state),
            attempt = r.attempt,
            node = esc(r.node.as_deref().unwrap_or("—")),
            started = when(r.started_at, now),
            dur = duration(r),
        );
    }
    format!(
        r#"<div class="scroll"><table class="runs"><thead><tr>{}<th>Scheduled</th><th>State</th><th>Attempt</th><th>Node</th><th>Started</th><th>Duration</th><th>Error</th></tr></thead><tbody>{rows}</tbody></table></div>"#,
        if with_job { "<th>Job</th>" } else { "" }
    )
}

/// `GET ui/runs` filters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunsFilter {
    #[serde(default)]
    state: String,
    #[serde(default)]
    since: String,
}

pub(crate) async fn runs(
    State(app): State<App>,
    axum::Extension(Viewer(role)): axum::Extension<Viewer>,
    Params(f): Params<RunsFilter>,
) -> Response {
    let now = Utc::now();
    let mut query = RunQuery::default().limit(200);
    query.state = RunState::parse(&f.state);
    let mut note = String::new();
    if !f.state.is_empty() && query.state.is_none() {
        note = format!(
            r#"<p class="failed">Unknown state {}: showing every state.</p>"#,
            esc(&f.state)
        );
    }
    if !f.since.is_empty() {
        match crate::view::parse_since(&f.since, now) {
            Ok(t) => query.since = Some(t),
            Err(e) => note = format!(r#"<p class="failed">{}</p>"#, esc(&e)),
        }
    }
    let runs = match app.scheduler.runs(&query, None).await {
        Ok(r) => r,
        Err(e) => return unavailable(role, &e.to_string()),
    };
    let opts: String = std::iter::once("")
        .chain(RunState::ALL.map(RunState::as_str))
        .map(|s| {
            let sel = if f.state == s { " selected" } else { "" };
            let label = if s.is_empty() { "any state" } else { s };
            format!(r#"<option value="{s}"{sel}>{label}</option>"#)
        })
        .collect();
    let body = format!(
        r#"<form class="filter" method="get" action="runs"><select name="state">{opts}</select><input name="since" placeholder="since: 1h, 7d or RFC 3339" value="{since}"><button>Filter</button></form>{note}{table}"#,
        since = esc(&f.since),
        table = runs_table(&runs, now, true),
    );
    page("Runs", Some(role), true, &body).into_response()
}

pub(crate) async fn nodes(
    State(app): State<App>,
    axum::Extension(Viewer(role)): axum::Extension<Viewer>,
) -> Response {
    let now = Utc::now();
    let nodes = match app.scheduler.nodes().await {
        Ok(n) => n,
        Err(e) => return unavailable(role, &e.to_string()),
    };
    let mut rows = String::new();
    for n in &nodes {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(n.owner.as_str()),
            esc(&n.host),
            n.pid,
            if n.is_live(now) { "live" } else { "lapsed" },
            (now - n.heartbeat_at).num_milliseconds() as f64 / 1000.0,
            n.clock_offset_ms.map_or_else(|| "—".into(), |ms| format!("{ms} ms")),
            n.running,
            esc(&n.version),
        );
    }
    let body = format!(
        r#"<div class="scroll"><table id="nodes"><thead><tr><th>Owner</th><th>Host</th><th>PID</th><th>Status</th><th>Heartbeat age</th><th>Clock offset</th><th>Running</th><th>Version</th></tr></thead><tbody>{rows}</tbody></table></div>"#
    );
    page("Nodes", Some(role), true, &body).into_response()
}

fn unavailable(role: Role, error: &str) -> Response {
    let body = format!(r#"<p class="failed">{}</p>"#, esc(error));
    (
        StatusCode::SERVICE_UNAVAILABLE,
        page("Store unavailable", Some(role), true, &body),
    )
        .into_response()
}

/// The sign-in form.
pub(crate) async fn login_form() -> Html<String> {
    page(
        "Sign in",
        None,
        false,
        r#"<form method="post" action="login"><p><label>Token <input type="password" name="token" id="token" autofocus></label></p><p><button id="sign-in">Sign in</button></p></form>"#,
    )
}

/// Sign-in form fields.
#[derive(Debug, Deserialize)]
pub(crate) struct Login {
    token: String,
}

/// How long a sign-in lasts.
const SESSION_SECS: u32 = 12 * 3600;

/// The cookie path: where the dashboard is mounted (`/sundial/ui` when the
/// router is nested under `/sundial`).
fn cookie_path(uri: &axum::http::Uri) -> String {
    let path = uri.path();
    match path.rfind("/ui/") {
        Some(i) => path[..i + 3].to_string(),
        None => "/".to_string(),
    }
}

pub(crate) async fn login(
    State(app): State<App>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Response {
    if !same_origin(&app, &headers) {
        let body = r#"<p class="failed">The request did not come from this dashboard.</p>"#;
        return (
            StatusCode::FORBIDDEN,
            page("Not allowed", None, false, body),
        )
            .into_response();
    }
    let token = form.token.trim();
    if app.config.role_of(Some(token)).is_none() {
        let body = r#"<p class="failed">That token is not valid.</p><form method="post" action="login"><p><label>Token <input type="password" name="token" id="token" autofocus></label></p><p><button id="sign-in">Sign in</button></p></form>"#;
        return (StatusCode::UNAUTHORIZED, page("Sign in", None, false, body)).into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path={}; Max-Age={SESSION_SECS}",
        q(token),
        cookie_path(&uri)
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("jobs")).into_response()
}

pub(crate) async fn logout(
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> Response {
    let cookie = format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path={}; Max-Age=0",
        cookie_path(&uri)
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("login")).into_response()
}

/// An action form.
#[derive(Debug, Deserialize)]
pub(crate) struct Action {
    id: String,
    action: String,
}

/// Whether the request's `Origin` is the host it was sent to.
///
/// With [`AdminConfig::public_origin`](crate::AdminConfig::public_origin) set
/// (behind a proxy that rewrites `Host`), the `Origin` must be that one. A
/// missing or `null` origin is refused.
fn same_origin(app: &App, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if let Some(public) = &app.config.public_origin {
        return origin == public.trim_end_matches('/');
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match host {
        Some(host) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host),
        None => false,
    }
}

pub(crate) async fn action(
    State(app): State<App>,
    axum::Extension(Viewer(role)): axum::Extension<Viewer>,
    headers: HeaderMap,
    Form(form): Form<Action>,
) -> Response {
    if let Some(denied) = admin_only(&app, role, Some(&headers)) {
        return denied;
    }
    let s = &app.scheduler;
    let id = form.id.as_str();
    let result = match form.action.as_str() {
        "pause" => s.pause_job(id, None).await.map(|_| ()),
        "resume" => s.resume_job(id, None).await.map(|_| ()),
        "run" => s.run_job_now(id, None).await,
        "remove" => s.remove_job(id, None).await,
        other => Err(sundial_core::Error::InvalidJob(format!(
            "unknown action '{other}'"
        ))),
    };
    match result {
        Ok(()) if form.action == "remove" => Redirect::to("jobs").into_response(),
        Ok(()) => Redirect::to(&format!("job?id={}", q(id))).into_response(),
        Err(e) => {
            let body = format!(
                r#"<p class="failed">{}</p><p><a href="job?id={}">Back to the job</a></p>"#,
                esc(&e.to_string()),
                q(id)
            );
            (
                StatusCode::CONFLICT,
                page("Action failed", Some(role), false, &body),
            )
                .into_response()
        }
    }
}

/// The trigger part of the add and edit forms (all text, as a browser sends it).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TriggerForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    crontab: String,
    #[serde(default)]
    every: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    run_date: String,
    #[serde(default)]
    trigger_json: String,
    #[serde(default)]
    timezone: String,
    #[serde(default)]
    year: String,
    #[serde(default)]
    month: String,
    #[serde(default)]
    day: String,
    #[serde(default)]
    week: String,
    #[serde(default)]
    day_of_week: String,
    #[serde(default)]
    hour: String,
    #[serde(default)]
    minute: String,
    #[serde(default)]
    second: String,
}

/// A form error: the field it is about and what is wrong.
type FieldError = (&'static str, String);

impl TriggerForm {
    fn field(&self, name: &str) -> &str {
        match name {
            "year" => &self.year,
            "month" => &self.month,
            "day" => &self.day,
            "week" => &self.week,
            "day_of_week" => &self.day_of_week,
            "hour" => &self.hour,
            "minute" => &self.minute,
            "second" => &self.second,
            _ => "",
        }
    }

    /// The trigger JSON the form describes, or the field that is wrong and why.
    fn trigger(&self) -> Result<Value, FieldError> {
        let mut t = match self.kind.as_str() {
            "cron" | "" => serde_json::json!({"type": "cron", "crontab": self.crontab.trim()}),
            "fields" => {
                let mut m = serde_json::Map::new();
                m.insert("type".into(), "cron".into());
                for name in CRON_FIELD_NAMES {
                    let v = self.field(name).trim();
                    if !v.is_empty() {
                        m.insert(name.into(), v.into());
                    }
                }
                Value::Object(m)
            }
            "interval" => {
                let n: u64 = self.every.trim().parse().ok().filter(|n| *n > 0).ok_or((
                    "every",
                    format!("{:?} is not a whole number above 0", self.every),
                ))?;
                let unit = match self.unit.as_str() {
                    u @ ("weeks" | "days" | "hours" | "minutes" | "seconds") => u,
                    u => return Err(("unit", format!("unknown unit {u:?}"))),
                };
                serde_json::json!({"type": "interval", unit: n})
            }
            "date" => serde_json::json!({"type": "date", "run_date": self.run_date.trim()}),
            "json" => serde_json::from_str(&self.trigger_json)
                .map_err(|e| ("trigger_json", format!("not JSON: {e}")))?,
            k => return Err(("kind", format!("unknown trigger kind {k:?}"))),
        };
        let tz = self.timezone.trim();
        if !tz.is_empty() && self.kind != "json" {
            t["timezone"] = Value::String(tz.to_string());
        }
        Ok(t)
    }

    /// The form's inputs, with `err` placing each field's error next to it.
    fn html(&self, default_tz: &str, err: &dyn Fn(&str) -> String) -> String {
        let kind = if self.kind.is_empty() {
            "cron"
        } else {
            self.kind.as_str()
        };
        let kinds: String = [
            ("cron", "cron (crontab)"),
            ("fields", "cron (APScheduler fields)"),
            ("interval", "interval"),
            ("date", "once, at a date"),
            (
                "json",
                "trigger JSON (calendar interval, and/or, any field)",
            ),
        ]
        .iter()
        .map(|(k, label)| {
            let sel = if *k == kind { " selected" } else { "" };
            format!(r#"<option value="{k}"{sel}>{label}</option>"#)
        })
        .collect();
        let unit = if self.unit.is_empty() {
            "minutes"
        } else {
            self.unit.as_str()
        };
        let units: String = ["seconds", "minutes", "hours", "days", "weeks"]
            .iter()
            .map(|u| {
                let sel = if *u == unit { " selected" } else { "" };
                format!(r#"<option{sel}>{u}</option>"#)
            })
            .collect();
        let fields: String = CRON_FIELD_NAMES
            .iter()
            .map(|name| {
                format!(
                    r#"<label>{name} <input name="{name}" id="{name}" value="{}" size="8"></label> "#,
                    esc(self.field(name))
                )
            })
            .collect();
        let tz = if self.timezone.is_empty() {
            default_tz.to_string()
        } else {
            self.timezone.clone()
        };
        format!(
            r#"<dt><label for="kind">Trigger</label></dt><dd><select name="kind" id="kind">{kinds}</select>{e_kind}</dd>
<dt><label for="crontab">Crontab</label></dt><dd><input name="crontab" id="crontab" value="{crontab}" placeholder="0 9 * * 1-5"></dd>
<dt>Cron fields</dt><dd class="fields">{fields}</dd>
<dt><label for="every">Every</label></dt><dd><input name="every" id="every" value="{every}" size="6"> <select name="unit" id="unit">{units}</select>{e_every}{e_unit}</dd>
<dt><label for="run_date">At</label></dt><dd><input type="datetime-local" name="run_date" id="run_date" value="{run_date}"></dd>
<dt><label for="trigger_json">Trigger JSON</label></dt><dd><textarea name="trigger_json" id="trigger_json" rows="3" cols="60" placeholder='{{"type": "calendar_interval", "months": 1, "hour": 6}}'>{trigger_json}</textarea>{e_json}</dd>
<dt><label for="timezone">Time zone</label></dt><dd><input name="timezone" id="timezone" value="{tz}">{e_tz}</dd>"#,
            e_kind = err("kind"),
            crontab = esc(&self.crontab),
            every = esc(&self.every),
            run_date = esc(&self.run_date),
            trigger_json = esc(&self.trigger_json),
            tz = esc(&tz),
            e_every = err("every"),
            e_unit = err("unit"),
            e_json = err("trigger_json"),
            e_tz = err("timezone"),
        )
    }
}

fn parse_args(text: &str) -> Result<Value, FieldError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| ("args", format!("not JSON: {e}")))
}

/// Which form field an error from the scheduler is about.
fn field_of(e: &sundial_core::Error) -> &'static str {
    match e {
        sundial_core::Error::InvalidTrigger { field, .. } if field == "timezone" => "timezone",
        sundial_core::Error::InvalidTrigger { .. } => "trigger",
        sundial_core::Error::UnknownTask { .. } => "task",
        sundial_core::Error::InvalidArgs { .. } => "args",
        sundial_core::Error::ConflictingId { .. } => "id",
        _ => "form",
    }
}

/// Places an error next to its field.
fn error_at(error: &Option<FieldError>) -> impl Fn(&str) -> String + '_ {
    move |field: &str| match error {
        Some((name, msg)) if *name == field => {
            format!(
                r#"<div class="error field-error" id="error-{field}">{}</div>"#,
                esc(msg)
            )
        }
        _ => String::new(),
    }
}

/// The next five fire times of a trigger the form describes, as HTML.
async fn preview_html(app: &App, json: &Value) -> Result<String, FieldError> {
    let mut trigger = app
        .scheduler
        .parse_trigger(json)
        .map_err(|e| (field_of(&e), e.to_string()))?;
    let now = Utc::now();
    trigger.prepare(now, app.scheduler.timezone());
    let tz = trigger.timezone().unwrap_or(app.scheduler.timezone());
    let description = trigger_words(&trigger.to_json(), &trigger.describe());
    let times = crate::jobs::fire_times_blocking(trigger, None, now, 5)
        .await
        .map_err(|e| ("trigger", e.to_string()))?;
    let items: String = times
        .iter()
        .map(|t| {
            format!(
                "<li>{}</li>",
                esc(&t
                    .with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string())
            )
        })
        .collect();
    Ok(format!(
        r#"<h2>Next fire times</h2><p class="muted">{}</p><ol id="preview-times">{items}</ol>"#,
        esc(&description)
    ))
}

/// The add-job form's fields.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct NewJobForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    task: String,
    #[serde(default)]
    args: String,
    #[serde(default)]
    r#do: String,
    #[serde(flatten)]
    trigger: TriggerForm,
}

fn add_form(app: &App, f: &NewJobForm, error: Option<FieldError>, preview: &str) -> String {
    let err = error_at(&error);
    let tasks = app.scheduler.task_names();
    let task = if tasks.is_empty() {
        format!(
            r#"<input name="task" id="task" value="{}" required>"#,
            esc(&f.task)
        )
    } else {
        let opts: String = tasks
            .iter()
            .map(|t| {
                let sel = if *t == f.task { " selected" } else { "" };
                format!(r#"<option{sel}>{}</option>"#, esc(t))
            })
            .collect();
        format!(r#"<select name="task" id="task">{opts}</select>"#)
    };
    format!(
        r#"{form_error}<form method="post" action="add" class="add"><dl>
<dt><label for="id">ID</label></dt><dd><input name="id" id="id" value="{id}" placeholder="random when empty">{e_id}</dd>
<dt><label for="name">Name</label></dt><dd><input name="name" id="name" value="{name}"></dd>
<dt><label for="task">Task</label></dt><dd>{task}{e_task}</dd>
{trigger}
<dt><label for="args">Arguments (JSON)</label></dt><dd><textarea name="args" id="args" rows="3" cols="60" placeholder="null">{args}</textarea>{e_args}</dd>
</dl>{e_trigger}<p><button name="do" value="preview" id="preview">Preview fire times</button> <button name="do" value="add" id="add">Add job</button></p></form><div id="preview-box">{preview}</div>{LIVE_PREVIEW}"#,
        form_error = err("form"),
        id = esc(&f.id),
        name = esc(&f.name),
        trigger = f.trigger.html(app.scheduler.timezone().name(), &err),
        args = esc(&f.args),
        e_id = err("id"),
        e_task = err("task"),
        e_args = err("args"),
        e_trigger = err("trigger"),
    )
}

/// Progressive enhancement of the add and edit forms: while the user types,
/// the preview of the next fire times (or the error) updates by itself, from
/// the same form post the Preview button makes.
const LIVE_PREVIEW: &str = r#"<script>(function(){var f=document.querySelector('form.add,form.edit');if(!f||!window.fetch||!window.DOMParser)return;var t;f.addEventListener('input',function(){clearTimeout(t);t=setTimeout(function(){var d=new FormData(f);d.set('do','preview');fetch(f.getAttribute('action'),{method:'POST',body:new URLSearchParams(d),credentials:'same-origin'}).then(function(r){return r.text()}).then(function(h){var n=new DOMParser().parseFromString(h,'text/html').getElementById('preview-box');var o=document.getElementById('preview-box');if(n&&o)o.replaceWith(n)})},300)})})();</script>"#;

/// The preview box's content for an error.
fn preview_error(e: &FieldError) -> String {
    format!(
        r#"<p class="failed" id="preview-error">{}: {}</p>"#,
        esc(e.0),
        esc(&e.1)
    )
}

/// A form page: 422 when it shows an error, else 200.
fn form_page(title: &str, role: Role, failed: bool, form: &str) -> Response {
    let status = if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, page(title, Some(role), false, form)).into_response()
}

fn admin_only(app: &App, role: Role, headers: Option<&HeaderMap>) -> Option<Response> {
    let message = if role != Role::Admin {
        "A viewer token may only read."
    } else if headers.is_some_and(|h| !same_origin(app, h)) {
        "The request did not come from this dashboard."
    } else {
        return None;
    };
    let body = format!(r#"<p class="failed">{message}</p>"#);
    Some(
        (
            StatusCode::FORBIDDEN,
            page("Not allowed", Some(role), false, &body),
        )
            .into_response(),
    )
}

pub(crate) async fn add_page(
    State(app): State<App>,
    axum::Extension(Viewer(role)): axum::Extension<Viewer>,
) -> Response {
    if let Some(denied) = admin_only(&app, role, None) {
        return denied;
    }
    let body = add_form(&app, &NewJobForm::default(), None, "");
    page("Add a job", Some(role), false, &body).into_response()
}

pub(crate) async fn add(
    State(app): State<App>,
    axum::Extension(Viewer(role)): axum::Extension<Viewer>,
    headers: HeaderMap,
    Form(f): Form<NewJobForm>,
) -> Response {
    if let Some(denied) = admin_only(&app, role, Some(&headers)) {
        return denied;
    }
    let show = |error: Option<FieldError>, preview: &str| {
        let failed = error.is_some();
        form_page(
            "Add a job",
            role,
            failed,
            &add_form(&app, &f, error, preview),
        )
    };
    let (json, args) = match (f.trigger.trigger(), parse_args(&f.args)) {
        (Ok(t), Ok(a)) => (t, a),
        (Err(e), _) | (_, Err(e)) => {
            let shown = if f.r#do == "preview" {
                preview_error(&e)
            } else {
                String::new()
            };
            return show(Some(e), &shown);
        }
    };
    if f.r#do == "preview" {
        return match preview_html(&app, &json).await {
            Ok(p) => show(None, &p),
            Err(e) => {
                let shown = preview_error(&e);
                show(Some(e), &shown)
            }
        };
    }
    let trigger = match app.scheduler.parse_trigger(&json) {
        Ok(t) => t,
        Err(e) => return show(Some((field_of(&e), e.to_string())), ""),
    };
    let mut spec =
        sundial_core::scheduler::JobSpec::new_boxed(f.task.clone(), trigger).args_json(args);
    if !f.id.trim().is_empty() {
        spec = spec.id(f.id.trim());
    }
    if !f.name.trim().is_empty() {
        spec = spec.name(f.name.trim());
    }
    match app.scheduler.add_job(spec).await {
        Ok(job) => Redirect::to(&format!("job?id={}", q(job.id().as_str()))).into_response(),
        Err(e) => show(Some((field_of(&e), e.to_string())), ""),
    }
}

/// The edit form's fields.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EditForm {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: String,
    #[serde(default)]
    max_instances: String,
    #[serde(default)]
    misfire_grace_time: String,
    #[serde(default)]
    coalesce: Option<String>,
    #[serde(default)]
    r#do: String,
    #[serde(flatten)]
    trigger: TriggerForm,
}

impl EditForm {
    /// The form filled in from a job: its trigger as JSON, its options.
    fn of(job: &Job) -> EditForm {
        let o = job.options();
        EditForm {
            id: job.id().to_string(),
            name: o.name.clone().unwrap_or_default(),
            args: serde_json::to_string(job.args()).unwrap_or_default(),
            max_instances: o.max_instances.to_string(),
            misfire_grace_time: o
                .misfire_grace_time
                .map(|d| d.as_secs_f64().to_string())
                .unwrap_or_default(),
            coalesce: o.coalesce.then(|| "on".to_string()),
            r#do: String::new(),
            trigger: TriggerForm {
                kind: "json".into(),
                trigger_json: job.trigger_json().to_string(),
                timezone: job.trigger_json()["timezone"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ..TriggerForm::default()
            },
        }
    }

    /// The changes the form makes to `job`: only the fields that differ, so
    /// saving a rename leaves the schedule (and a pending run request) alone.
    fn changes(&self, job: &Job) -> Result<sundial_core::scheduler::JobChanges, FieldError> {
        let max: u32 = self
            .max_instances
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or((
                "max_instances",
                format!("{:?} is not a whole number above 0", self.max_instances),
            ))?;
        let grace = match self.misfire_grace_time.trim() {
            "" => None,
            g => Some(
                g.parse::<f64>()
                    .ok()
                    .filter(|s| (0.0..=crate::jobs::MAX_SECS).contains(s))
                    .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
                    .ok_or((
                        "misfire_grace_time",
                        format!("{g:?} is not a number of seconds from 0 to 100 years"),
                    ))?,
            ),
        };
        let trigger = self.trigger.trigger()?;
        let args = parse_args(&self.args)?;
        let o = job.options();
        let mut c = sundial_core::scheduler::JobChanges::new();
        if trigger != *job.trigger_json() {
            c = c.trigger_json(trigger);
        }
        if args != *job.args() {
            c = c.args(args);
        }
        if max != o.max_instances {
            c = c.max_instances(max);
        }
        if grace != o.misfire_grace_time {
            c = c.misfire_grace_time(grace);
        }
        if self.coalesce.is_some() != o.coalesce {
            c = c.coalesce(self.coalesce.is_some());
        }
        let name = self.name.trim();
        if !name.is_empty() && Some(name) != o.name.as_deref() {
            c = c.name(name);
        }
        Ok(c)
    }
}

fn edit_form(app: &App, f: &EditForm, error: Option<FieldError>, preview: &str) -> String {
    let err = error_at(&error);
    format!(
        r#"{form_error}<form method="post" action="edit" class="edit"><input type="hidden" name="id" value="{id}"><dl>
<dt><label for="name">Name</label></dt><dd><input name="name" id="name" value="{name}"></dd>
{trigger}
<dt><label for="args">Arguments (JSON)</label></dt><dd><textarea name="args" id="args" rows="3" cols="60">{args}</textarea>{e_args}</dd>
<dt><label for="max_instances">Max instances</label></dt><dd><input name="max_instances" id="max_instances" value="{max}" size="4">{e_max}</dd>
<dt><label for="misfire_grace_time">Misfire grace (s)</label></dt><dd><input name="misfire_grace_time" id="misfire_grace_time" value="{grace}" size="6" placeholder="however late">{e_grace}</dd>
<dt><label for="coalesce">Coalesce</label></dt><dd><input type="checkbox" name="coalesce" id="coalesce"{coalesce}></dd>
</dl>{e_trigger}<p><button name="do" value="preview" id="preview">Preview fire times</button> <button name="do" value="save" id="save">Save</button> <a href="job?id={qid}">Cancel</a></p></form><div id="preview-box">{preview}</div>{LIVE_PREVIEW}"#,
        form_error = err("form"),
        id = esc(&f.id),
        qid = q(&f.id),
        name = esc(&f.name),
        trigger = f.trigger.html(app.scheduler.timezone().name(), &err),
        args = esc(&f.args),
        max = esc(&f.max_instances),
        grace = esc(&f.misfire_grace_time),
        coalesce = if f.coalesce.is_some() { " checked" } else { "" },
        e_args = err("args"),
        e_max = err("max_instances"),
        e_grace = err("misfire_grace_time"),
        e_trigger = err("trigger"),
    )
}

pub(crate) async fn edit_page(
    State(app): State<App>,
    axum::Extension(Viewer(role)): axum::Extension<Viewer>,
    Params(query): Params<JobQuery>,
) -> Response {
    if let Some(denied) = admin_only(&app, role, None) {
        return denied;
    }
    match app.scheduler.get_job(query.id.as_str(), None).await {
        Ok(Some(job)) => {
            let body = edit_form(&app, &EditForm::of(&job), None, "");
            page(&format!("Edit {}", job.id()), Some(role), false, &body).into_response()
        }
        Ok(None) => Redirect::to("jobs").into_response(),
        Err(e) => unavailable(role, &e.to_string()),
    }
}

pub(crate) async fn edit(
    State(app): State<App>,
    axum::Extension(Viewer(role)): axum::Extension<Viewer>,
    headers: HeaderMap,
    Form(f): Form<EditForm>,
) -> Response {
    if let Some(denied) = admin_only(&app, role, Some(&headers)) {
        return denied;
    }
    let title = format!("Edit {}", f.id);
    let show = |error: Option<FieldError>, preview: &str| {
        let failed = error.is_some();
        form_page(&title, role, failed, &edit_form(&app, &f, error, preview))
    };
    if f.r#do == "preview" {
        let previewed = match f.trigger.trigger() {
            Ok(json) => preview_html(&app, &json).await,
            Err(e) => Err(e),
        };
        return match previewed {
            Ok(p) => show(None, &p),
            Err(e) => {
                let shown = preview_error(&e);
                show(Some(e), &shown)
            }
        };
    }
    let job = match app.scheduler.get_job(f.id.as_str(), None).await {
        Ok(Some(job)) => job,
        Ok(None) => return Redirect::to("jobs").into_response(),
        Err(e) => return unavailable(role, &e.to_string()),
    };
    let changes = match f.changes(&job) {
        Ok(c) if c.is_empty() => {
            return Redirect::to(&format!("job?id={}", q(job.id().as_str()))).into_response()
        }
        Ok(c) => c,
        Err(e) => return show(Some(e), ""),
    };
    match app.scheduler.modify_job(f.id.as_str(), None, changes).await {
        Ok(job) => Redirect::to(&format!("job?id={}", q(job.id().as_str()))).into_response(),
        Err(e) => show(Some((field_of(&e), e.to_string())), ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(q("a b/<c>"), "a%20b%2F%3Cc%3E");
    }

    #[test]
    fn triggers_in_words() {
        let w = |v: Value| trigger_words(&v, "?");
        assert_eq!(
            w(json!({"type": "interval", "minutes": 30})),
            "every 30 minutes"
        );
        assert_eq!(w(json!({"type": "interval", "hours": 1})), "every hour");
        assert_eq!(
            w(json!({"type": "interval", "seconds": 1800})),
            "every 30 minutes"
        );
        assert_eq!(
            w(json!({"type": "interval", "days": 1, "hours": 12})),
            "every 36 hours"
        );
        assert_eq!(
            w(
                json!({"type": "cron", "hour": "9", "minute": "0", "day_of_week": "mon-fri", "timezone": "Asia/Shanghai"})
            ),
            "at 09:00 on mon-fri, Asia/Shanghai"
        );
        assert_eq!(
            w(json!({"type": "cron", "hour": "9"})),
            "at 09:00 every day"
        );
        assert_eq!(
            w(json!({"type": "cron", "minute": "*/5"})),
            "cron minute=*/5"
        );
        assert_eq!(
            w(json!({"type": "date", "run_date": "2026-11-23T15:00:00+08:00"})),
            "once at 2026-11-23T15:00:00+08:00"
        );
        assert_eq!(
            w(json!({"type": "calendar_interval", "months": 1, "hour": 6, "minute": 30})),
            "every month at 06:30"
        );
        assert_eq!(w(json!({"type": "custom"})), "?");
        assert_eq!(
            w(json!({"type": "cron", "crontab": "0 9 * * 1-5", "timezone": "Asia/Shanghai"})),
            "at 09:00 on Mon–Fri, Asia/Shanghai"
        );
        assert_eq!(
            w(json!({"type": "cron", "crontab": "*/5 * * * *"})),
            "cron */5 * * * *"
        );
        assert_eq!(
            w(json!({"type": "cron", "crontab": "30 6 1 * 0,6"})),
            "at 06:30 on Sun, Sat on day 1"
        );
    }
}
