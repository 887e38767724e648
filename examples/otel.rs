//! Run spans (`sundial.run`: job, run id, slot, attempt, outcome) and store-call
//! spans (`sundial.store`: backend, operation, rows) exported with
//! OpenTelemetry over OTLP/HTTP.
//!
//! ```sh
//! # with a collector listening for OTLP/HTTP on 127.0.0.1:4318:
//! cargo run --example otel --features otel-example
//! ```
//!
//! Without a collector the example still runs; the exporter reports that it
//! could not deliver.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use sundial::prelude::*;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4318".into());
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("sundial-example")
                .build(),
        )
        .build();
    tracing_subscriber::registry()
        // Store calls are traced at debug level, runs at info.
        .with(LevelFilter::DEBUG)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("sundial")))
        .init();

    let seconds: u64 = std::env::var("SUNDIAL_EXAMPLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    tokio::runtime::Runtime::new()?.block_on(async {
        let scheduler = Scheduler::builder()
            .jobstore("default", MemoryJobStore::new())
            .executor("default", AsyncExecutor::new())
            .task("tick", |ctx: JobContext, _: ()| async move {
                tracing::info!(attempt = ctx.attempt(), "tick");
                Ok::<_, std::io::Error>(())
            })
            .build()?;
        scheduler.start().await?;
        scheduler
            .add_job(
                JobSpec::new("tick", IntervalTrigger::every(Duration::from_secs(1))?).id("tick"),
            )
            .await?;
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        scheduler.shutdown(true).await
    })?;
    println!("sent the spans of {seconds} s of runs to {endpoint}");
    if let Err(e) = provider.shutdown() {
        eprintln!("could not deliver every span to {endpoint}: {e}");
    }
    Ok(())
}
