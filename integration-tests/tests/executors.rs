//! The executor conformance suite (`sundial_integration_tests::executor_conformance`)
//! for every built-in executor, with async and with blocking tasks.

use std::sync::Arc;

use sundial::executor::Executor;
use sundial::{AsyncExecutor, ThreadPoolExecutor};
use sundial_integration_tests::executor_conformance::{self as ec, Kind};

fn async_executor() -> Arc<dyn Executor> {
    Arc::new(AsyncExecutor::new())
}

fn thread_pool() -> Arc<dyn Executor> {
    Arc::new(ThreadPoolExecutor::new(4))
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod async_executor_async_tasks {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    ec::$case(async_executor(), Kind::Async).await
                }
            )*
        }
        mod async_executor_blocking_tasks {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    ec::$case(async_executor(), Kind::Blocking).await
                }
            )*
        }
        mod thread_pool_blocking_tasks {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    ec::$case(thread_pool(), Kind::Blocking).await
                }
            )*
        }
        mod thread_pool_async_tasks {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    ec::$case(thread_pool(), Kind::Async).await
                }
            )*
        }
    };
}

cases!(
    refuses_runs_before_start,
    runs_each_slot_in_order_and_reports_it,
    failures_and_panics_are_reported_and_the_executor_carries_on,
    max_instances_refuses_while_the_job_runs,
    a_timeout_is_reported_and_signalled,
    shutdown_with_wait_waits_for_running_runs,
    shutdown_without_wait_cancels_and_returns_at_once,
    starts_again_after_shutdown,
);
