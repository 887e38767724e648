//! PostgreSQL and MySQL/MariaDB backend on a sqlx `AnyPool`.

use async_trait::async_trait;
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Row as _};
use tokio::sync::OnceCell;

use crate::schema::{Row, Sql};
use crate::{Backend, Error, Param};

#[derive(Debug)]
pub(crate) struct SqlxBackend {
    url: Option<String>,
    name: &'static str,
    pool: OnceCell<AnyPool>,
}

fn bind<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    params: &'q [Param],
) -> Query<'q, Any, AnyArguments<'q>> {
    for p in params {
        q = match p {
            Param::Int(i) => q.bind(*i),
            Param::OptInt(i) => q.bind(*i),
            Param::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

fn read_row(r: &AnyRow) -> Result<Row, sqlx::Error> {
    Ok(Row {
        id: r.try_get(0)?,
        next_run_time: r.try_get(1)?,
        // MySQL reports LONGTEXT as BLOB to the Any driver: accept bytes too.
        job: match r.try_get::<String, _>(2) {
            Ok(s) => s,
            Err(_) => String::from_utf8_lossy(&r.try_get::<Vec<u8>, _>(2)?).into_owned(),
        },
        lease_owner: r.try_get(3)?,
        lease_until: r.try_get(4)?,
        version: r.try_get(5)?,
    })
}

impl SqlxBackend {
    pub(crate) fn new(url: &str, name: &'static str) -> Self {
        SqlxBackend {
            url: Some(url.to_string()),
            name,
            pool: OnceCell::new(),
        }
    }

    pub(crate) fn from_pool(pool: AnyPool, name: &'static str) -> Self {
        SqlxBackend {
            url: None,
            name,
            pool: OnceCell::new_with(Some(pool)),
        }
    }

    fn pool(&self) -> Result<&AnyPool, Error> {
        self.pool.get().ok_or(Error::NotStarted)
    }
}

#[async_trait]
impl Backend for SqlxBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn connect(&self) -> Result<(), Error> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        self.pool
            .get_or_try_init(|| async {
                sqlx::any::install_default_drivers();
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(Error::from)
            })
            .await?;
        Ok(())
    }

    async fn close(&self) {
        if let Some(p) = self.pool.get() {
            if self.url.is_some() {
                p.close().await;
            }
        }
    }

    async fn execute(&self, sql: String, params: Vec<Param>) -> Result<u64, Error> {
        let r = bind(sqlx::query(&sql), &params)
            .execute(self.pool()?)
            .await?;
        Ok(r.rows_affected())
    }

    async fn query_rows(&self, sql: String, params: Vec<Param>) -> Result<Vec<Row>, Error> {
        let rows = bind(sqlx::query(&sql), &params)
            .fetch_all(self.pool()?)
            .await?;
        Ok(rows.iter().map(read_row).collect::<Result<Vec<_>, _>>()?)
    }

    async fn query_int(&self, sql: String, params: Vec<Param>) -> Result<Option<i64>, Error> {
        let row = bind(sqlx::query(&sql), &params)
            .fetch_optional(self.pool()?)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<i64>, _>(0)?,
            None => None,
        })
    }

    async fn query_ids(&self, sql: String, params: Vec<Param>) -> Result<Vec<String>, Error> {
        let rows = bind(sqlx::query(&sql), &params)
            .fetch_all(self.pool()?)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<String>, _>>()?)
    }

    async fn execute_all(&self, statements: Vec<(String, Vec<Param>)>) -> Result<(), Error> {
        let mut tx = self.pool()?.begin().await?;
        for (sql, params) in &statements {
            bind(sqlx::query(sql), params).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn apply_then_check(
        &self,
        statements: Vec<(String, Vec<Param>)>,
        check: (String, Vec<Param>),
    ) -> Result<Vec<(String, i64, Option<String>)>, Error> {
        let mut tx = self.pool()?.begin().await?;
        for (sql, params) in &statements {
            bind(sqlx::query(sql), params).execute(&mut *tx).await?;
        }
        let rows = bind(sqlx::query(&check.0), &check.1)
            .fetch_all(&mut *tx)
            .await?;
        let state = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        tx.commit().await?;
        Ok(state)
    }

    async fn claim(
        &self,
        sql: &Sql,
        now: i64,
        owner: String,
        until: i64,
        limit: i64,
    ) -> Result<Vec<Row>, Error> {
        let mut tx = self.pool()?.begin().await?;
        let select = sql.select_due();
        let params = [Param::Int(now), Param::Int(now), Param::Int(limit)];
        let fetched = bind(sqlx::query(&select), &params)
            .fetch_all(&mut *tx)
            .await?;
        let mut rows = fetched
            .iter()
            .map(read_row)
            .collect::<Result<Vec<_>, _>>()?;
        if !rows.is_empty() {
            let mut params = vec![Param::Text(owner.clone()), Param::Int(until)];
            params.extend(rows.iter().map(|r| Param::Text(r.id.clone())));
            let claim = sql.claim(rows.len());
            bind(sqlx::query(&claim), &params).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        for r in &mut rows {
            r.lease_owner = Some(owner.clone());
            r.lease_until = Some(until);
            r.version += 1;
        }
        Ok(rows)
    }
}
