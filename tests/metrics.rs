//! Built-in metrics: after a burst of runs, the admin router's `/metrics`
//! shows the right counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use sundial::admin::{router, AdminConfig};
use sundial::metrics::{install_prometheus, record, Labels};
use sundial::prelude::*;
use sundial::run::RunQuery;
use tower::ServiceExt;

/// The sum of every sample of `name` whose labels contain `label` (all when empty).
fn sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_runs_is_counted_on_the_metrics_route() {
    let prometheus = install_prometheus().unwrap();
    assert!(
        install_prometheus().is_err(),
        "a second global recorder is refused"
    );
    let s = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .task("ok", |_ctx: JobContext, _: ()| async {
            Ok::<_, std::io::Error>(())
        })
        .task("fail", |_ctx: JobContext, _: ()| async {
            Err::<(), _>(std::io::Error::other("boom"))
        })
        .build()
        .unwrap();
    record(&s, Labels::PerJob);
    s.start_paused().await.unwrap();
    let now = sundial::chrono::Utc::now();
    for i in 0..20 {
        s.add_job(JobSpec::new("ok", DateTrigger::at(now)).id(format!("ok-{i}")))
            .await
            .unwrap();
    }
    for i in 0..5 {
        s.add_job(JobSpec::new("fail", DateTrigger::at(now)).id(format!("fail-{i}")))
            .await
            .unwrap();
    }
    let hour_ago = now - Duration::from_secs(3600);
    s.add_job(
        JobSpec::new("ok", DateTrigger::at(hour_ago))
            .id("late")
            .misfire_grace_time(Some(Duration::from_secs(1))),
    )
    .await
    .unwrap();
    s.add_job(
        JobSpec::new(
            "ok",
            IntervalTrigger::every(Duration::from_secs(3600)).unwrap(),
        )
        .id("idle")
        .paused(),
    )
    .await
    .unwrap();
    s.resume().unwrap();
    let mut done = 0;
    for _ in 0..200 {
        let runs = s
            .runs(&RunQuery::default().limit(1000), None)
            .await
            .unwrap();
        done = runs.iter().filter(|r| r.state.is_terminal()).count();
        if done == 26 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done, 26, "25 runs and a missed slot recorded");

    // A lapsed claim is counted by store.
    s.events().emit(Event::LeaseLost {
        job_id: "ok-0".into(),
        jobstore: "default".into(),
    });
    let app = router(
        s.clone(),
        AdminConfig::new()
            .viewer_token("metrics-reader-0123")
            .metrics(move || prometheus.render()),
    )
    .unwrap();
    let mut text = String::new();
    // Events reach listeners on their own thread: wait until the last is counted.
    for _ in 0..100 {
        let res = app
            .clone()
            .oneshot(
                Request::get("/metrics")
                    .header(header::AUTHORIZATION, "Bearer metrics-reader-0123")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        text = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap();
        if sum(&text, "sundial_runs_total", "") >= 26.0
            && text.contains("sundial_jobs{")
            && text.contains("sundial_leases_lost_total")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sum(&text, "sundial_runs_total", "outcome=\"succeeded\""),
        20.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "sundial_runs_total", "outcome=\"failed\""),
        5.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "sundial_runs_total", "outcome=\"missed\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "sundial_runs_total", "job=\"fail-3\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "sundial_missed_total", "job=\"late\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "sundial_run_duration_seconds_count", ""),
        25.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "sundial_run_lateness_seconds_count", ""),
        25.0,
        "{text}"
    );
    assert_eq!(sum(&text, "sundial_running_runs", ""), 0.0, "{text}");
    assert_eq!(sum(&text, "sundial_store_errors_total", ""), 0.0, "{text}");
    assert_eq!(
        sum(&text, "sundial_leases_lost_total", "store=\"default\""),
        1.0,
        "{text}"
    );
    // The one-off jobs are gone; the paused one is counted.
    assert_eq!(
        sum(&text, "sundial_jobs", "state=\"paused\""),
        1.0,
        "{text}"
    );
    s.shutdown(true).await.unwrap();
}
