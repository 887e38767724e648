//! Store errors as users meet them: `?` from each store's constructors into
//! `sundial::Result`, connection failures that name the server, and malformed
//! Redis URLs explained without their password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sundial::{Error, JobStore, MongoJobStore, RedisJobStore, SqlJobStore};
use sundial_integration_tests::support::{postgres_url, redis_url, Namespace};

/// Opens, starts and stops a Redis and a PostgreSQL store with `?` only.
async fn open_both(redis: &str, pg: &str, name: &str) -> sundial::Result<()> {
    let redis = RedisJobStore::from_url(redis)?.with_prefix(name);
    let sql = SqlJobStore::from_url(pg)?.with_table(name)?;
    redis.start().await?;
    sql.start().await?;
    assert_eq!(redis.get_all_jobs().await?.len(), 0);
    assert_eq!(sql.get_all_jobs().await?.len(), 0);
    sql.drop_table().await?;
    sql.shutdown().await?;
    redis.purge().await?;
    redis.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constructors_work_with_question_mark() {
    let ns = Namespace::new("qmark");
    open_both(&redis_url(), &postgres_url(), &ns.0)
        .await
        .unwrap();

    let err = open_both(&redis_url(), &postgres_url(), "bad name")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("invalid table name"), "{err}");

    let err = open_both("redis://u:s3cret@h/x", &postgres_url(), &ns.0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("invalid Redis URL"), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");

    let err = open_both(&redis_url(), "oracle://u:s3cret@db/x", &ns.0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("oracle://u:***@db/x"), "{err}");
}

/// Database errors passed on with `?` name their backend.
#[tokio::test]
async fn database_errors_keep_their_backend_with_question_mark() {
    async fn raw(url: &str) -> sundial::Result<u64> {
        Ok(SqlJobStore::from_url(url)?.execute_raw("SELEC 1").await?)
    }
    let err = raw(&postgres_url()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Store {
                store: "postgres",
                temporary: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("syntax error"), "{err}");
    let err = raw(&sundial_integration_tests::support::mysql_url())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Store { store: "mysql", .. }),
        "{err:?}"
    );
    let err = Error::from(sundial::mongo::Error::NotStarted);
    assert!(
        matches!(err, Error::Store { store: "mongo", .. }),
        "{err:?}"
    );
}

/// Starts `store`, expecting a quick failure that names `addr`; returns the message.
async fn start_fails(store: &dyn JobStore, addr: &str, within: Duration) -> String {
    let began = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), store.start())
        .await
        .unwrap_or_else(|_| panic!("starting {} hung", store.backend()));
    let took = began.elapsed();
    let err = result.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(addr), "{msg}");
    assert!(err.is_temporary(), "{msg}");
    assert!(took < within, "{} took {took:?}: {msg}", store.backend());
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_ports_are_named_at_once() {
    let quick = Duration::from_secs(5);
    let pg = SqlJobStore::from_url("postgres://postgres:s3cret@127.0.0.1:1/test").unwrap();
    let msg = start_fails(&pg, "127.0.0.1:1", quick).await;
    assert!(
        msg.contains("cannot connect to postgres at 127.0.0.1:1") && msg.contains("refused"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");

    let my = SqlJobStore::from_url("mysql://root:s3cret@127.0.0.1:1/test").unwrap();
    let msg = start_fails(&my, "127.0.0.1:1", quick).await;
    assert!(
        msg.contains("cannot connect to mysql at 127.0.0.1:1") && msg.contains("refused"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");

    let redis = RedisJobStore::from_url("redis://u:s3cret@127.0.0.1:1/0").unwrap();
    let msg = start_fails(&redis, "127.0.0.1:1", quick).await;
    assert!(
        msg.contains("cannot connect to redis at 127.0.0.1:1") && msg.contains("refused"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");

    // The driver gives up after its 10 s server selection timeout.
    let mongo = MongoJobStore::from_url("mongodb://u:s3cret@127.0.0.1:1/db");
    let msg = start_fails(&mongo, "127.0.0.1:1", Duration::from_secs(15)).await;
    assert!(
        msg.contains("cannot connect to mongo at 127.0.0.1:1"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
}

#[tokio::test]
async fn unknown_hosts_and_wrong_passwords_are_named() {
    let pg = SqlJobStore::from_url("postgres://postgres@no-such-host.invalid:5432/test").unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), pg.start())
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot connect to postgres at no-such-host.invalid:5432"),
        "{err}"
    );

    let my = SqlJobStore::from_url("mysql://root:wrong-s3cret@127.0.0.1:3306/test").unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), my.start())
        .await
        .unwrap()
        .unwrap_err();
    assert!(!err.is_temporary(), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("cannot connect to mysql at 127.0.0.1:3306") && err.contains("Access denied"),
        "{err}"
    );
    assert!(!err.contains("wrong-s3cret"), "{err}");
}

#[test]
fn malformed_redis_urls_say_what_is_wrong() {
    for (url, problem) in [
        (
            "redis://user:s3cret@/bad:port:x",
            "the host name is missing",
        ),
        ("redis://user:s3cret@h:port/0", "the port is not a number"),
        ("redis://user:s3cret@h:6379/db", "not a database number"),
    ] {
        let err = RedisJobStore::from_url(url).unwrap_err().to_string();
        assert!(err.contains("invalid Redis URL"), "{url}: {err}");
        assert!(err.contains(problem), "{url}: {err}");
        assert!(err.contains("user:***@"), "{url}: {err}");
        assert!(!err.contains("s3cret"), "{url}: {err}");

        let err = sundial::store_from_url(url).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
        let err = err.to_string();
        assert!(
            err.contains(problem) && !err.contains("s3cret"),
            "{url}: {err}"
        );
    }
    let err = RedisJobStore::from_url("http://user:s3cret@h:6379/0")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the scheme is \"http\", not redis, rediss or redis+unix"),
        "{err}"
    );
    let err = RedisJobStore::from_url("redis://user:s3cret@/bad:port:x")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "invalid Redis URL \"redis://user:***@/bad:port:x\": the host name is missing"
    );
}
