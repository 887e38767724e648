//! `sundial next` end to end, through the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

fn sundial(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sundial"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut sin = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            sin.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn crontab_with_zone_and_start() {
    let (code, out, err) = sundial(
        &[
            "next",
            "0 9 * * 1-5",
            "--tz",
            "Asia/Shanghai",
            "--count",
            "3",
            "--from",
            "2026-03-06T00:00:00+08:00",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "2026-03-06T09:00:00+08:00\n2026-03-09T09:00:00+08:00\n2026-03-10T09:00:00+08:00\n"
    );
}

#[test]
fn trigger_json() {
    let (code, out, err) = sundial(
        &[
            "next",
            "--json",
            r#"{"type":"cron","day":"last fri","hour":"18"}"#,
            "--count",
            "2",
            "--from",
            "2026-01-01T00:00:00Z",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "2026-01-30T18:00:00+00:00\n2026-02-27T18:00:00+00:00\n"
    );
}

#[test]
fn jsonl_batch_reports_results_and_errors_per_line() {
    let input = concat!(
        r#"{"id":1,"trigger":{"type":"cron","crontab":"30 2 * * *","timezone":"America/New_York"},"from":"2026-03-07T12:00:00-05:00","count":2}"#,
        "\n",
        r#"{"id":"bad","trigger":{"type":"cron","hour":"25"},"from":"2026-01-01T00:00:00Z","count":1}"#,
        "\n",
        r#"{"id":3,"trigger":{"type":"date","run_date":"2026-05-01T00:00:00Z"},"from":"2026-01-01T00:00:00Z","count":3}"#,
        "\n",
    );
    let (code, out, err) = sundial(&["next", "--jsonl"], Some(input));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        serde_json::json!({"id": 1, "fire_times": ["2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00"]})
    );
    assert_eq!(lines[1]["id"], "bad");
    assert!(
        lines[1]["error"].as_str().unwrap().contains("hour"),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        serde_json::json!({"id": 3, "fire_times": ["2026-05-01T00:00:00+00:00"]})
    );
}

#[test]
fn invalid_input_exits_2_with_a_message() {
    for (args, needle) in [
        (vec!["next", "0 25 * * *"], "hour"),
        (vec!["next", "* * * *"], "expected 5 fields"),
        (vec!["next", "0 9 * * *", "--tz", "Mars/Base"], "Mars/Base"),
        (vec!["next", "--json", "{not json"], "invalid --json"),
        (vec!["next", "0 9 * * *", "--from", "yesterday"], "--from"),
    ] {
        let (code, out, err) = sundial(&args, None);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// The lines of the README's `sh` block that follows `marker`, with `\` continuations joined.
fn readme_block(marker: &str) -> Vec<String> {
    let readme = include_str!("../README.md");
    let start = readme.find(marker).expect("README marker");
    let block = &readme[start..];
    let body = &block[block.find("```sh\n").expect("sh block") + 6..];
    let body = &body[..body.find("```").expect("end of block")];
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in body.lines() {
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory removed at the end of the test.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sundial-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the child at the end of the test.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn shell(line: String, envs: Vec<(&'static str, String)>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .envs(envs)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The README's "Operate it" blocks, line by line, against `sundial serve` and
/// the `sundial` job commands, with a scheduler of the application running on
/// the same SQLite store: the requested run really runs there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_operate_it_lines_work_against_a_live_store() {
    use sundial::prelude::*;
    use sundial::run::RunQuery;

    let dir = Scratch::new("readme");
    let url = format!("sqlite://{}", dir.0.join("jobs.db").display());
    let tokens = dir.0.join("tokens.txt");
    std::fs::write(
        &tokens,
        "# tokens\nadmin adm-0123456789abcdef\nviewer view-0123456789abcdef\n",
    )
    .unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&sent);
    let app = Scheduler::builder()
        .jobstore_arc("default", sundial::store_from_url(&url).unwrap())
        .executor("default", AsyncExecutor::new())
        .task(
            "send_report",
            move |_ctx: JobContext, _args: serde_json::Value| {
                let counter = std::sync::Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, std::io::Error>(())
                }
            },
        )
        .build()
        .unwrap();
    app.start().await.unwrap();

    let addr = format!("127.0.0.1:{}", free_port());
    let bin = env!("CARGO_BIN_EXE_sundial");
    let _server = Child(
        Command::new(bin)
            .args(["serve", "--store", &url, "--bind", &addr, "--token-file"])
            .arg(&tokens)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let envs = vec![
        ("ADMIN_TOKEN", "adm-0123456789abcdef".to_string()),
        ("VIEWER_TOKEN", "view-0123456789abcdef".to_string()),
    ];
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "sundial serve did not listen on {addr}");

    let curls: Vec<String> = readme_block("tests/cli.rs runs every curl line")
        .into_iter()
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert!(curls.len() >= 8, "{curls:?}");
    for line in curls {
        let line = line.replace("127.0.0.1:8080", &addr);
        let (code, out, err) = shell(line.clone(), envs.clone()).await;
        assert_eq!(code, 0, "{line}\nstdout: {out}\nstderr: {err}");
        assert!(out.trim_start().starts_with('{'), "{line}: {out}");
    }
    // A viewer token cannot write, a wrong one cannot read.
    let (code, _, _) = shell(
        format!("curl -fsS -XPOST -H \"authorization: Bearer $VIEWER_TOKEN\" http://{addr}/jobs/report/pause"),
        envs.clone(),
    )
    .await;
    assert_eq!(code, 22, "curl -f exits 22 on HTTP 403");
    let (_, out, _) = shell(
        format!("curl -sS -H 'authorization: Bearer wrong' http://{addr}/jobs"),
        envs.clone(),
    )
    .await;
    assert!(out.contains("\"unauthorized\""), "{out}");
    let job = app.get_job("report", None).await.unwrap().unwrap();
    assert_eq!(job.options().max_instances, 2);
    assert!(!job.is_paused());

    let commands = readme_block("tests/cli.rs runs every line of this block");
    assert!(commands.len() >= 8, "{commands:?}");
    for line in commands {
        let line = line
            .replacen("sundial ", &format!("{bin} "), 1)
            .replace("sqlite://jobs.db", &url);
        let (code, out, err) = shell(line.clone(), envs.clone()).await;
        assert_eq!(code, 0, "{line}\nstdout: {out}\nstderr: {err}");
        if line.contains(" jobs run ") {
            // The application's scheduler runs the requested slot, on time.
            let mut runs = Vec::new();
            for _ in 0..150 {
                runs = app.runs(&RunQuery::job("report"), None).await.unwrap();
                if runs.iter().any(|r| r.state.is_terminal()) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let states: Vec<&str> = runs.iter().map(|r| r.state.as_str()).collect();
            assert_eq!(states, ["succeeded"], "{runs:?}");
            assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
        if line.contains(" jobs list ") {
            assert!(out.starts_with("ID "), "{out}");
            assert!(out.contains("report") && out.contains("scheduled"), "{out}");
        }
        if line.contains(" --job report ") {
            assert!(out.contains("succeeded"), "{out}");
        }
        if line.contains(" nodes ") {
            assert!(out.contains(&std::process::id().to_string()), "{out}");
        }
    }
    assert!(
        app.get_job("report", None).await.unwrap().is_none(),
        "removed by the last line"
    );
    app.shutdown(true).await.unwrap();
}

#[test]
fn job_commands_report_bad_input_and_missing_jobs_by_exit_status() {
    let dir = Scratch::new("errors");
    let url = format!("sqlite://{}", dir.0.join("jobs.db").display());
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["jobs", "show", "nope", "--store", &url],
            1,
            "no job with id 'nope'",
        ),
        (&["jobs", "pause", "nope", "--store", &url], 1, "nope"),
        (
            &["jobs", "list", "--store", &url, "--state", "sleeping"],
            2,
            "--state",
        ),
        (&["runs", "--store", &url, "--since", "banana"], 2, "banana"),
        (
            &["runs", "--store", &url, "--state", "exploded"],
            2,
            "exploded",
        ),
        (&["jobs", "list", "--store", "ftp://example.com"], 2, "ftp"),
        (&["jobs", "list"], 2, "--store"),
        (&["serve", "--store", &url], 2, "--token-file"),
        (
            &[
                "serve",
                "--store",
                &url,
                "--allow-anonymous",
                "--bind",
                "0.0.0.0:1",
            ],
            2,
            "loopback",
        ),
        (
            &[
                "serve",
                "--store",
                &url,
                "--token-file",
                "/nonexistent/tokens",
            ],
            2,
            "/nonexistent/tokens",
        ),
    ];
    for (args, want, text) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sundial"));
        cmd.args(*args).env_remove("SUNDIAL_STORE");
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*want), "{args:?}: {err}");
        assert!(err.contains(text), "{args:?}: {err}");
    }
    // A malformed token file is refused without printing its lines.
    for body in [
        "viewer=s3cret-token\n",
        "s3cret-token # ci\n",
        "viewer\n",
        "admin \n",
    ] {
        let tokens = dir.0.join("tokens.txt");
        std::fs::write(&tokens, body).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sundial"))
            .args(["serve", "--store", &url, "--token-file"])
            .arg(&tokens)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body:?}: {err}");
        assert!(!err.contains("s3cret"), "{body:?}: {err}");
        assert!(err.contains("line 1"), "{body:?}: {err}");
    }
    let (code, out, _) = sundial(&["jobs", "list", "--store", &url, "--json"], None);
    assert_eq!((code, out.trim()), (0, "[]"));
    let (code, out, _) = sundial(&["runs", "--store", &url, "--json"], None);
    assert_eq!((code, out.trim()), (0, "[]"));
}
