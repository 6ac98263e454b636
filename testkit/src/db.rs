//! ClickHouse for assertions, through the sink's own client ([`sink::ch::Ch`]): what the
//! tests read is read the way the sink talks to the server.

use anyhow::{Context, Result};
use common::config::ClickHouseConfig;
use sink::ch::{Ch, quote_ident};
use std::time::{Duration, Instant};

/// ClickHouse HTTP URL for tests (`LASTSEEN_TEST_CLICKHOUSE`, default `http://127.0.0.1:8123`).
pub fn clickhouse_url() -> String {
    std::env::var("LASTSEEN_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// The configuration of the test ClickHouse with `database`.
pub fn clickhouse_config(database: &str) -> ClickHouseConfig {
    let mut c = common::Config::defaults().clickhouse;
    c.url = clickhouse_url();
    c.database = database.to_string();
    c
}

/// One database of the test ClickHouse.
#[derive(Debug, Clone)]
pub struct Db {
    ch: Ch,
    server: Ch,
}

impl Db {
    /// `database` on the test ClickHouse.
    pub fn new(database: &str) -> Db {
        Db::with_config(&clickhouse_config(database))
    }

    /// The database and server of `cfg`.
    pub fn with_config(cfg: &ClickHouseConfig) -> Db {
        // Statements about the database itself run in `default`: it may not exist.
        let mut server = cfg.clone();
        server.database = "default".into();
        Db {
            ch: Ch::new(cfg),
            server: Ch::new(&server),
        }
    }

    /// The sink's client on this database.
    pub fn ch(&self) -> &Ch {
        &self.ch
    }

    /// The rows of `sql` (TabSeparated, unescaped; without a `FORMAT` clause).
    pub async fn rows(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        self.ch
            .fetch(sql)
            .await
            .with_context(|| format!("ClickHouse query `{sql}`"))
    }

    /// The rows of `sql` as text: fields joined by tabs, rows by newlines.
    pub async fn query(&self, sql: &str) -> Result<String> {
        let rows = self.rows(sql).await?;
        Ok(rows
            .iter()
            .map(|r| r.join("\t"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// The one number `sql` returns.
    pub async fn count(&self, sql: &str) -> Result<u64> {
        let s = self.query(sql).await?;
        s.trim()
            .parse()
            .with_context(|| format!("`{sql}` returned {s:?}"))
    }

    /// The one number `sql` returns, or None while it fails (a table missing, the server
    /// down).
    pub async fn scalar(&self, sql: &str) -> Option<i64> {
        self.query(sql).await.ok()?.trim().parse().ok()
    }

    /// Polls `sql` until it returns `want` or `timeout` passes; returns the last value
    /// (`u64::MAX` while the query fails).
    pub async fn wait_count(&self, sql: &str, want: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.count(sql).await.unwrap_or(u64::MAX);
            if got == want || Instant::now() > deadline {
                return Ok(got);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// [`Db::wait_count`] that panics on a timeout, naming the query and the last value.
    pub async fn wait_for(&self, sql: &str, want: u64, timeout: Duration) {
        let got = self
            .wait_count(sql, want, timeout)
            .await
            .unwrap_or(u64::MAX);
        assert_eq!(got, want, "timeout waiting for `{sql}` = {want}");
    }

    /// Drops the database (best effort).
    pub async fn drop_database(&self) {
        let sql = format!(
            "DROP DATABASE IF EXISTS {}",
            quote_ident(self.ch.database())
        );
        let _ = self.server.exec(&sql).await;
    }
}
