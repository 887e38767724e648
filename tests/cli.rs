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
