//! The admin API mounted into an application's own axum app.
//!
//! An order shop: `POST /orders` creates an order and a one-off job that
//! cancels it if it is still unpaid in 30 minutes; the admin router under
//! `/sundial` lists, pauses, resumes, runs and deletes jobs and shows their
//! run history.
//!
//! ```sh
//! SUNDIAL_ADMIN_TOKEN=secret cargo run --example web_admin --features admin
//! curl -XPOST localhost:8080/orders -d '{"order_id": 42}' -H 'content-type: application/json'
//! curl -H 'authorization: Bearer secret' localhost:8080/sundial/jobs
//! curl -H 'authorization: Bearer secret' -XPOST localhost:8080/sundial/jobs/cancel-42/run
//! curl -H 'authorization: Bearer secret' localhost:8080/sundial/jobs/cancel-42/runs
//! ```

use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use sundial::admin::{router, AdminConfig, ApiError};
use sundial::prelude::*;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    order_id: u64,
}

/// Creates an order: schedules its cancellation in 30 minutes.
async fn create_order(
    State(scheduler): State<Scheduler>,
    Json(order): Json<Order>,
) -> Result<Json<Value>, ApiError> {
    let at = sundial::chrono::Utc::now() + Duration::from_secs(30 * 60);
    let job = scheduler
        .add_job(
            JobSpec::new("cancel_unpaid", DateTrigger::at(at))
                .id(format!("cancel-{}", order.order_id))
                .args(&order),
        )
        .await?;
    Ok(Json(
        json!({"order_id": order.order_id, "cancel_job": job.id()}),
    ))
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let scheduler = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .task(
            "cancel_unpaid",
            |_ctx: JobContext, order: Order| async move {
                println!(
                    "order {} unpaid after 30 minutes: cancelled",
                    order.order_id
                );
                Ok::<_, std::io::Error>(())
            },
        )
        .build()?;
    scheduler.start().await?;

    let token = std::env::var("SUNDIAL_ADMIN_TOKEN")
        .map_err(|_| "set SUNDIAL_ADMIN_TOKEN to the admin API's bearer token")?;
    let admin = router(scheduler.clone(), AdminConfig::new().admin_token(token))?;
    let app = Router::new()
        .route("/orders", post(create_order))
        .with_state(scheduler.clone())
        .nest("/sundial", admin);

    let addr = std::env::var("SUNDIAL_ADMIN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("orders on http://{addr}/orders, admin API on http://{addr}/sundial/jobs");
    axum::serve(listener, app).await?;
    scheduler.shutdown(true).await?;
    Ok(())
}
