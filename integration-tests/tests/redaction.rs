//! Passwords in store URLs never reach error messages or `Debug` output: of
//! stores built from URLs (started or not), of `store_from_url` errors, and of
//! a scheduler builder holding such stores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sundial::prelude::*;
use sundial::{JobStore, MongoJobStore, RedisJobStore, SqlJobStore};
use sundial_integration_tests::support::{
    mongo_url, mysql_url, postgres_url, redis_url, Namespace,
};

const PW: &str = "s3cr3t-pw";

/// Store URLs holding [`PW`], each with whether the store's `Debug` shows its URL.
fn urls() -> Vec<(String, bool)> {
    [
        ("postgres://user:{PW}@127.0.0.1:5432/test", true),
        (
            "postgresql://user:{PW}@127.0.0.1:5432/test?sslmode=disable",
            true,
        ),
        ("postgres://user@127.0.0.1:5432/test?password={PW}", true),
        ("postgres://user:{PW}@127.0.0.1/test#table=other_jobs", true),
        ("mysql://u:{PW}@127.0.0.1:3306/test", true),
        ("mariadb://u:{PW}@127.0.0.1:3306/test", true),
        (
            "mysql://u@127.0.0.1/test?PASSWORD={PW}&ssl-mode=DISABLED",
            true,
        ),
        ("redis://:{PW}@127.0.0.1:6379/0", false),
        ("redis://user:{PW}@127.0.0.1:6379", false),
        ("redis://user:{PW}@127.0.0.1:6380/1#prefix=other", false),
        ("mongodb://u:{PW}@127.0.0.1:27018/db", true),
        ("mongodb://u:{PW}@h1:27017,h2:27017/db?replicaSet=rs", true),
        ("mongodb+srv://u:{PW}@cluster0.example.net/db", true),
        (
            "mongodb://u@127.0.0.1:27018/db?token={PW}#table=other",
            true,
        ),
    ]
    .into_iter()
    .map(|(u, shown)| (u.replace("{PW}", PW), shown))
    .collect()
}

fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(PW), "{what} shows the password: {text}");
}

#[test]
fn stores_from_urls_hide_passwords_in_debug() {
    let mut builder = Scheduler::builder();
    for (i, (url, shown)) in urls().into_iter().enumerate() {
        let store = store_from_url(&url).unwrap();
        let debug = format!("{store:?}");
        assert_hidden(&url, &debug);
        if shown {
            assert!(debug.contains("***"), "{url}: {debug}");
        }
        builder = builder.jobstore_arc(format!("s{i}"), store);
    }
    assert_hidden("the builder", &format!("{builder:?}"));

    let pg = format!("postgres://user:{PW}@127.0.0.1/test");
    let my = format!("mysql://u:{PW}@127.0.0.1/test");
    for store in [
        SqlJobStore::postgres(&pg),
        SqlJobStore::mysql(&my),
        SqlJobStore::from_url(&pg).unwrap(),
    ] {
        assert_hidden("SqlJobStore", &format!("{store:?}"));
    }
    let mongo = MongoJobStore::from_url(&format!("mongodb://u:{PW}@127.0.0.1/db"));
    assert_hidden("MongoJobStore", &format!("{mongo:?}"));
    let redis = RedisJobStore::from_url(&format!("redis://u:{PW}@127.0.0.1/0")).unwrap();
    assert_hidden("RedisJobStore", &format!("{redis:?}"));
}

#[tokio::test]
async fn mongo_store_on_a_client_hides_the_password_in_debug() {
    let client = mongodb::Client::with_uri_str(format!("mongodb://u:{PW}@127.0.0.1:1/db"))
        .await
        .unwrap();
    let store = MongoJobStore::from_client(client);
    assert_hidden("MongoJobStore", &format!("{store:?}"));
}

#[test]
fn store_from_url_errors_hide_passwords() {
    for url in [
        format!("oracle://u:{PW}@db/x"),
        format!("cassandra://u:{PW}@h/x?password={PW}"),
        format!("u:{PW}@h/db"),
        format!("//u:{PW}@h/db"),
        format!("postgres://u:{PW}@db/x#table=bad name"),
        format!("mysql://u:{PW}@db/x#table=x;drop"),
        format!("redis://u:{PW}@h:notaport/0"),
        format!("redis://u:{PW}@h/notadb"),
        // This build's redis client has no TLS.
        format!("rediss://u:{PW}@h:6380/0"),
    ] {
        let Err(err) = store_from_url(&url) else {
            panic!("{url} was accepted");
        };
        assert_hidden(&url, &err.to_string());
    }
    let err = store_from_url(&format!("oracle://u:{PW}@db/x?pwd={PW}"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("oracle://u:***@db/x?pwd=***") && err.contains("supported schemes"),
        "{err}"
    );
    let err = SqlJobStore::from_url(&format!("oracle://u:{PW}@db/x"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("oracle://u:***@db/x"), "{err}");
}

/// `url` with user info `user:PW`.
fn with_password(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    format!("{scheme}://{user}:{PW}@{rest}")
}

/// Checks that `result` (of starting `store`) and the store's `Debug` hide the password.
fn check_started(what: &str, store: &dyn JobStore, result: &sundial::Result<()>) {
    if let Err(e) = result {
        assert_hidden(what, &e.to_string());
        assert_hidden(what, &format!("{e:?}"));
    }
    assert_hidden(what, &format!("{store:?}"));
}

/// On the local servers: PostgreSQL trusts every password (the store starts),
/// MariaDB refuses it, Redis and the MongoDB test server refuse or ignore it;
/// either way neither the error nor the store's `Debug` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_stores_and_their_errors_hide_passwords() {
    let ns = Namespace::new("redaction");
    let pg = SqlJobStore::from_url(&with_password(&postgres_url(), "postgres"))
        .unwrap()
        .with_table(&ns.0)
        .unwrap();
    let started = pg.start().await;
    check_started("postgres", &pg, &started);
    if started.is_ok() {
        pg.drop_table().await.unwrap();
        pg.shutdown().await.unwrap();
    }

    let my = SqlJobStore::from_url(&with_password(&mysql_url(), "root"))
        .unwrap()
        .with_table(&ns.0)
        .unwrap();
    let started = my.start().await;
    assert!(started.is_err(), "MariaDB took a wrong password");
    check_started("mysql", &my, &started);

    let redis = RedisJobStore::from_url(&with_password(&redis_url(), "default"))
        .unwrap()
        .with_prefix(&ns.0);
    let started = redis.start().await;
    check_started("redis", &redis, &started);

    let mongo = MongoJobStore::from_url(&with_password(&mongo_url(), "u")).with_collection(&ns.0);
    let started = mongo.start().await;
    check_started("mongo", &mongo, &started);
    if started.is_ok() {
        mongo.drop_collection().await.unwrap();
    }
}
