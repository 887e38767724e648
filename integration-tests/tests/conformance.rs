//! Runs every conformance case against every store: trials are named
//! `conformance::<store>::<case>`, so `-- postgres::` or `-- lease` filter as usual.
//!
//! `SUNDIAL_TEST_STORES=memory,sqlite` limits the stores. A store whose server is
//! unreachable fails every trial when `CI` is set; locally its trials are marked
//! ignored and the reason is printed.

use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use sundial_integration_tests::conformance::{cases, Ctx};
use sundial_integration_tests::support::{stores, Namespace, StoreFactory};

fn main() {
    let args = Arguments::from_args();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    let wanted: Option<Vec<String>> = std::env::var("SUNDIAL_TEST_STORES")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let in_ci = std::env::var_os("CI").is_some();
    let mut trials = Vec::new();
    for factory in stores() {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.iter().any(|x| x == factory.name()))
        {
            continue;
        }
        let unavailable = rt.block_on(factory.available()).err();
        if let Some(why) = &unavailable {
            if in_ci {
                eprintln!(
                    "store {} is unreachable (CI: its trials fail): {why}",
                    factory.name()
                );
            } else {
                eprintln!(
                    "store {} is unreachable, its trials are ignored: {why}",
                    factory.name()
                );
            }
        }
        for case in cases() {
            let name = format!("conformance::{}::{}", factory.name(), case.name);
            let factory: Arc<dyn StoreFactory> = Arc::clone(&factory);
            let rt = Arc::clone(&rt);
            let unavailable = unavailable.clone();
            let ignored = unavailable.is_some() && !in_ci;
            let run = case.run;
            let case_name = case.name;
            trials.push(
                Trial::test(name, move || {
                    if let Some(why) = unavailable {
                        return Err(Failed::from(format!("store unreachable: {why}")));
                    }
                    rt.block_on(async move {
                        let ns = Namespace::new(case_name);
                        let store = factory
                            .open(&ns)
                            .await
                            .map_err(|e| format!("open: {e:#}"))?;
                        let cx = Ctx {
                            factory: Arc::clone(&factory),
                            ns: ns.clone(),
                            store,
                        };
                        let result = run(&cx).await;
                        let _ = cx.store.shutdown().await;
                        if let Err(e) = factory.cleanup(&ns).await {
                            eprintln!("cleanup of {} failed: {e:#}", ns.0);
                        }
                        result.map_err(|e| Failed::from(format!("{e:#}")))
                    })
                })
                .with_ignored_flag(ignored),
            );
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
