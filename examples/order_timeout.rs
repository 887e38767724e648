//! An order is created and a one-off job cancels it later unless it was paid.
//! The job carries the order id as its arguments, so it survives in any store.
//! (Production would use 15 minutes; the demo uses 3 seconds.)
//!
//! ```sh
//! cargo run --example order_timeout
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sundial::chrono::Utc;
use sundial::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum OrderState {
    Open,
    Paid,
    Cancelled,
}

#[derive(Debug, Serialize, Deserialize)]
struct CancelOrder {
    order_id: String,
}

type Orders = Arc<Mutex<HashMap<String, OrderState>>>;

#[tokio::main]
async fn main() -> Result<()> {
    let orders: Orders = Arc::default();
    let db = Arc::clone(&orders);
    let scheduler = Scheduler::builder()
        .jobstore("default", MemoryJobStore::new())
        .executor("default", AsyncExecutor::new())
        .task(
            "cancel_order",
            move |_ctx: JobContext, args: CancelOrder| {
                let db = Arc::clone(&db);
                async move {
                    let mut orders = db.lock().map_err(|_| "order table poisoned")?;
                    match orders.get_mut(&args.order_id) {
                        Some(state @ OrderState::Open) => {
                            *state = OrderState::Cancelled;
                            println!("order {} not paid in time: cancelled", args.order_id);
                        }
                        Some(state) => {
                            println!("order {} is {state:?}: nothing to do", args.order_id)
                        }
                        None => {
                            return Err(format!("order {} does not exist", args.order_id).into())
                        }
                    }
                    Ok::<_, sundial::BoxError>(())
                }
            },
        )
        .build()?;
    scheduler.start().await?;

    let timeout = sundial::chrono::Duration::seconds(3);
    for id in ["A-1001", "A-1002"] {
        orders
            .lock()
            .map_err(|_| Error::Config("poisoned".into()))?
            .insert(id.into(), OrderState::Open);
        scheduler
            .add_job(
                JobSpec::new("cancel_order", DateTrigger::at(Utc::now() + timeout))
                    .id(format!("cancel-{id}"))
                    .args(CancelOrder {
                        order_id: id.into(),
                    })
                    .misfire_grace_time(None),
            )
            .await?;
        println!(
            "order {id} created; cancels at {} unless paid",
            Utc::now() + timeout
        );
    }

    // The customer pays A-1001: its cancellation job is no longer needed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    orders
        .lock()
        .map_err(|_| Error::Config("poisoned".into()))?
        .insert("A-1001".into(), OrderState::Paid);
    scheduler.remove_job("cancel-A-1001", None).await?;
    println!("order A-1001 paid");

    tokio::time::sleep(Duration::from_secs(3)).await;
    scheduler.shutdown(true).await?;
    let orders = orders
        .lock()
        .map_err(|_| Error::Config("poisoned".into()))?;
    println!(
        "final: A-1001 {:?}, A-1002 {:?}",
        orders["A-1001"], orders["A-1002"]
    );
    Ok(())
}
