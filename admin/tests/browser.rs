//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (chromedriver). Signs in, lists the seeded jobs, pauses one with its
//! button, runs one now and sees its run succeed, shows a failing job's error
//! text escaped, and checks that a viewer sees no action buttons. Saves a PNG
//! of each page in `$SUNDIAL_SCREENSHOTS` (default: the target's tmp dir).
//!
//! Needs `chromium` and `chromedriver` on the PATH (`scripts/services.sh`
//! installs Debian's `chromium` and `chromium-driver`); without them the test
//! fails under CI and is skipped elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sundial_admin::{router, AdminConfig};
use sundial_core::scheduler::{JobSpec, Scheduler};
use sundial_core::trigger::{CronTrigger, IntervalTrigger, Trigger as _};
use sundial_executor_async::AsyncExecutor;
use sundial_jobstore_memory::MemoryJobStore;

const ADMIN: &str = "dash-admin-0123456789";
const VIEWER: &str = "dash-viewer-0123456789";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One HTTP/1.1 exchange with chromedriver; returns the JSON `value`.
fn http(addr: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    // Read the head, then exactly the body (the server may keep the connection open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = raw[head_end..].to_vec();
    match length {
        Some(n) => {
            while body.len() < n {
                let k = s.read(&mut buf).map_err(|e| e.to_string())?;
                if k == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..k]);
            }
        }
        None => {
            let _ = s.read_to_end(&mut body);
        }
    }
    let payload = String::from_utf8_lossy(&body).into_owned();
    let v: Value = serde_json::from_str(&payload).map_err(|e| format!("{e}: {payload}"))?;
    if v["value"]["error"].is_string() {
        return Err(format!(
            "{}: {}",
            v["value"]["error"], v["value"]["message"]
        ));
    }
    Ok(v["value"].clone())
}

/// A WebDriver session on one chromedriver.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn start() -> Option<Browser> {
        let found = |bin: &str| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {bin}"))
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !found("chromedriver") || !found("chromium") {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium and chromedriver are needed under CI (scripts/services.sh installs them)"
            );
            eprintln!("skipped: chromium or chromedriver not installed");
            return None;
        }
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(&addr, "GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,900"]
            }
        }}});
        let session = http(&addr, "POST", "/session", Some(caps)).unwrap();
        let shots = std::env::var_os("SUNDIAL_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
        std::fs::create_dir_all(&shots).unwrap();
        Some(Browser {
            driver,
            addr,
            session: session["sessionId"].as_str().unwrap().to_string(),
            shots,
        })
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        http(
            &self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).unwrap();
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[ELEMENT].as_str().unwrap().to_string())
        .collect()
    }

    fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .unwrap_or_else(|e| panic!("{css}: {e}\n{}", self.source()));
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: no element in {v}"))
            .to_string()
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.cmd("GET", &format!("/element/{id}/text"), None)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The text of the first element matching `css`, or `None` while there is
    /// none (or it was just replaced).
    fn try_text(&self, css: &str) -> Option<String> {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .ok()?;
        let id = v[ELEMENT].as_str()?;
        self.cmd("GET", &format!("/element/{id}/text"), None)
            .ok()?
            .as_str()
            .map(str::to_string)
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})))
            .unwrap();
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .unwrap();
    }

    fn clear(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({})))
            .unwrap();
    }

    fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    fn screenshot(&self, name: &str) {
        let png = self.cmd("GET", "/screenshot", None).unwrap();
        let bytes = base64_decode(png.as_str().unwrap());
        assert!(bytes.starts_with(b"\x89PNG"), "{name} is not a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).unwrap();
    }

    fn sign_in(&self, base: &str, token: &str) {
        self.go(&format!("{base}/ui/jobs"));
        assert!(self.url().ends_with("/ui/login"), "{}", self.url());
        self.type_into("#token", token);
        self.click("#sign-in");
        until("the jobs page after signing in", || {
            self.url().ends_with("/ui/jobs")
        });
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = table.iter().position(|t| *t == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// No script from user data ran: the browser has no alert open.
fn assert_no_alert(browser: &Browser) {
    let e = browser.cmd("GET", "/alert/text", None).unwrap_err();
    assert!(e.contains("no such alert"), "{e}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/sundial");
    let s: Scheduler = rt.block_on(async {
        let s = Scheduler::builder()
            .jobstore("default", MemoryJobStore::new())
            .executor("default", AsyncExecutor::new())
            .task("noop", |_ctx, _args: Value| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(())
            })
            .task("fail", |_ctx, _args: Value| async {
                Err::<(), _>(std::io::Error::other("<script>alert('x')</script> broke"))
            })
            .build()
            .unwrap();
        s.start().await.unwrap();
        let weekdays = CronTrigger::from_crontab("0 9 * * 1-5").unwrap();
        s.add_job(
            JobSpec::new("noop", weekdays)
                .id("report")
                .name("Daily report"),
        )
        .await
        .unwrap();
        let half_hour = IntervalTrigger::every(Duration::from_secs(1800)).unwrap();
        s.add_job(JobSpec::new("noop", half_hour.clone()).id("cleanup"))
            .await
            .unwrap();
        s.add_job(
            JobSpec::new("noop", half_hour.clone())
                .id("xss")
                .name("<script>alert(1)</script>"),
        )
        .await
        .unwrap();
        s.add_job(JobSpec::new("fail", half_hour).id("fails"))
            .await
            .unwrap();
        s.run_job_now("fails", None).await.unwrap();
        let admin = router(
            s.clone(),
            AdminConfig::new().admin_token(ADMIN).viewer_token(VIEWER),
        )
        .unwrap();
        let app = axum::Router::new().nest("/sundial", admin);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        s
    });

    // Sign in as admin: the jobs table lists the seeded jobs.
    browser.sign_in(&base, ADMIN);
    for id in ["report", "cleanup", "xss", "fails"] {
        assert_eq!(
            browser.find_all(&format!("tr[data-job=\"{id}\"]")).len(),
            1,
            "{id}"
        );
    }
    assert_eq!(
        browser.text("tr[data-job=\"report\"] td:nth-child(4)"),
        "at 09:00 on Mon–Fri, UTC"
    );
    // A job name with markup is shown as text, not run.
    assert_eq!(
        browser.text("tr[data-job=\"xss\"] .name"),
        "<script>alert(1)</script>"
    );
    assert_no_alert(&browser);
    browser.screenshot("jobs");

    // Pause a job with its button: the scheduler has it paused.
    browser.click("tr[data-job=\"cleanup\"] button.pause");
    until("the job page after pause", || {
        browser.url().contains("job?id=cleanup")
    });
    until("cleanup paused", || {
        rt.block_on(s.get_job("cleanup", None))
            .unwrap()
            .is_some_and(|j| j.is_paused())
    });
    assert_eq!(browser.text("dd.state"), "paused");

    // Run a job now: its history shows a succeeded run within seconds.
    browser.go(&format!("{base}/ui/jobs"));
    browser.click("tr[data-job=\"report\"] button.run");
    until("the job page after run now", || {
        browser.url().contains("job?id=report")
    });
    until("report's run in the history", || {
        browser.go(&format!("{base}/ui/job?id=report"));
        browser
            .find_all("table.runs .run-state")
            .first()
            .is_some_and(|_| {
                browser.try_text("table.runs .run-state").as_deref() == Some("succeeded")
            })
    });
    assert_eq!(
        browser.find_all("#next li").len(),
        10,
        "the next 10 fire times"
    );
    browser.screenshot("job");

    // A failing job's error text is shown escaped.
    browser.go(&format!("{base}/ui/job?id=fails"));
    until("the failed run", || {
        browser.go(&format!("{base}/ui/job?id=fails"));
        browser.try_text("table.runs .run-state").as_deref() == Some("failed")
    });
    browser.click("table.runs details summary");
    assert!(
        browser
            .text("pre.error")
            .contains("<script>alert('x')</script> broke"),
        "{}",
        browser.source()
    );
    assert_no_alert(&browser);
    browser.screenshot("job-failed");

    browser.go(&format!("{base}/ui/runs?state=failed"));
    assert_eq!(browser.find_all("table.runs tbody tr").len(), 1);
    browser.screenshot("runs");
    browser.go(&format!("{base}/ui/nodes"));
    assert_eq!(browser.find_all("#nodes tbody tr").len(), 1);
    browser.screenshot("nodes");

    // Phone width: the tables scroll inside the page.
    browser
        .cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": 390, "height": 844})),
        )
        .unwrap();
    browser.go(&format!("{base}/ui/jobs"));
    browser.screenshot("jobs-phone");
    browser
        .cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": 1280, "height": 900})),
        )
        .unwrap();

    // Add a cron job through the form: preview its fire times, then add it.
    browser.click("#add-job");
    until("the add form", || browser.url().ends_with("/ui/add"));
    browser.type_into("#id", "morning");
    browser.click("#task option:nth-child(2)");
    // The preview follows the typing (no button pressed), errors included.
    browser.type_into("#crontab", "30 8 * * * * *");
    until("the live preview's error", || {
        !browser.find_all("#preview-error").is_empty()
    });
    browser.clear("#crontab");
    browser.type_into("#crontab", "30 8 * * *");
    browser.clear("#timezone");
    browser.type_into("#timezone", "Asia/Shanghai");
    until("the live preview", || {
        browser.find_all("#preview-times li").len() == 5
            && browser
                .try_text("#preview-times li")
                .is_some_and(|t| t.ends_with("08:30:00 CST"))
    });
    browser.screenshot("add");
    browser.click("#add");
    until("the new job's page", || {
        browser.url().contains("job?id=morning")
    });
    let job = rt.block_on(s.get_job("morning", None)).unwrap().unwrap();
    assert_eq!(job.task(), "noop");
    let mut want = sundial_core::trigger::trigger_from_json(&json!({
        "type": "cron", "crontab": "30 8 * * *", "timezone": "Asia/Shanghai"
    }))
    .unwrap();
    let now = chrono::Utc::now();
    want.prepare(now, sundial_core::chrono_tz::UTC);
    assert_eq!(job.next_run_time(), want.next_fire_time(None, now).unwrap());
    // Edit its trigger and options, previewing before saving.
    browser.click("#edit");
    until("the edit form", || {
        browser.url().contains("edit?id=morning")
    });
    browser.click("#kind option[value=\"fields\"]");
    browser.type_into("#hour", "7");
    browser.type_into("#minute", "15");
    browser.clear("#timezone");
    browser.type_into("#timezone", "Asia/Shanghai");
    browser.clear("#max_instances");
    browser.type_into("#max_instances", "3");
    browser.click("#preview");
    until("the edit preview", || {
        browser.find_all("#preview-times li").len() == 5
    });
    let first = browser.text("#preview-times li");
    assert!(first.ends_with("07:15:00 CST"), "{first}");
    browser.screenshot("edit");
    browser.click("#save");
    until("the job page after saving", || {
        browser.url().contains("job?id=morning")
    });
    let job = rt.block_on(s.get_job("morning", None)).unwrap().unwrap();
    assert_eq!(job.options().max_instances, 3);
    assert_eq!(job.trigger_json()["hour"], "7", "{}", job.trigger_json());
    assert_eq!(
        job.next_run_time_local()
            .unwrap()
            .format("%H:%M")
            .to_string(),
        "07:15"
    );

    // A bad field is named next to it and nothing is added.
    browser.go(&format!("{base}/ui/add"));
    browser.type_into("#crontab", "61 * * * *");
    browser.click("#add");
    until("the field error", || {
        !browser.find_all("#error-trigger").is_empty()
    });
    let error = browser.text("#error-trigger");
    assert!(error.contains("minute"), "{error}");
    assert_eq!(rt.block_on(s.get_jobs(None)).unwrap().len(), 5);

    // A viewer sees the jobs and no action buttons.
    browser.click("nav button");
    until("the sign-in page", || browser.url().ends_with("/ui/login"));
    browser.sign_in(&base, VIEWER);
    assert_eq!(browser.find_all("tr[data-job]").len(), 5);
    assert!(browser.find_all("#add-job").is_empty());
    assert!(
        browser.find_all("button.action").is_empty(),
        "a viewer sees no buttons"
    );
    browser.go(&format!("{base}/ui/job?id=report"));
    assert!(browser.find_all("button.action").is_empty());

    rt.block_on(s.shutdown(false)).unwrap();
}
