//! A thin wrapper over the official `clickhouse` crate that works against ClickHouse 18.16:
//! validation off (no `RowBinaryWithNamesAndTypes` there), the database set on the client and
//! bare table names in `INSERT`, text (TabSeparated) results for administrative queries.

use crate::error::{ClickHouseError, ErrorClass, SinkError};
use crate::version::ServerVersion;
use bytes::Bytes;
use clickhouse::{Client, Compression, Row, RowWrite};
use common::config::ClickHouseConfig;
use std::time::Duration;

/// Longest time for sending an insert body and for the server to confirm it.
const INSERT_TIMEOUT: Duration = Duration::from_secs(60);

/// ClickHouse access for the sink.
#[derive(Clone)]
pub struct Ch {
    client: Client,
    server: Client,
    database: String,
}

impl std::fmt::Debug for Ch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ch")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Ch {
    pub fn new(cfg: &ClickHouseConfig) -> Ch {
        let server = Client::default()
            .with_url(&cfg.url)
            .with_user(&cfg.user)
            .with_password(&cfg.password)
            .with_validation(false)
            .with_compression(match cfg.compression {
                common::config::Compression::None => Compression::None,
                common::config::Compression::Lz4 => Compression::Lz4,
            });
        let client = server.clone().with_database(&cfg.database);
        Ch {
            client,
            server,
            database: cfg.database.clone(),
        }
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// `SELECT version()`.
    pub async fn version(&self) -> Result<ServerVersion, SinkError> {
        let rows = fetch_tsv(&self.server, "SELECT version()").await?;
        let v = rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default();
        ServerVersion::parse(&v).ok_or_else(|| {
            ClickHouseError::client(ErrorClass::Systemic, format!("unparsable version `{v}`"))
                .into()
        })
    }

    /// `CREATE DATABASE IF NOT EXISTS` for the configured database (needs a client without a
    /// default database, which may not exist yet).
    pub async fn create_database(&self) -> Result<(), SinkError> {
        let sql = format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            quote_ident(&self.database)
        );
        self.server.query_raw(&sql).execute().await?;
        Ok(())
    }

    /// Executes one statement in the configured database.
    pub async fn exec(&self, sql: &str) -> Result<(), SinkError> {
        self.client.query_raw(sql).execute().await?;
        Ok(())
    }

    /// Runs a query in the configured database and returns its TabSeparated rows.
    pub async fn fetch(&self, sql: &str) -> Result<Vec<Vec<String>>, SinkError> {
        fetch_tsv(&self.client, sql).await
    }

    /// `SELECT 1`, to report health while idle.
    pub async fn ping(&self) -> Result<(), SinkError> {
        fetch_tsv(&self.server, "SELECT 1").await.map(|_| ())
    }

    /// One `INSERT INTO table (columns) FORMAT Native` whose body, `chunks`, is already encoded
    /// (see [`crate::rows::PingBlock`]); Ok only once the server has confirmed it, including
    /// the materialized views. `dedup_token` as in [`Ch::insert`].
    pub async fn insert_native(
        &self,
        table: &str,
        columns: &str,
        chunks: &[Bytes],
        dedup_token: Option<&str>,
    ) -> Result<(), SinkError> {
        let sql = format!(
            "INSERT INTO {} ({columns}) FORMAT Native",
            quote_ident(table)
        );
        let mut insert = self
            .client
            .insert_formatted_with(sql)
            .with_timeouts(Some(INSERT_TIMEOUT), Some(INSERT_TIMEOUT));
        if let Some(token) = dedup_token {
            insert = insert.with_setting("insert_deduplication_token", token);
        }
        for chunk in chunks {
            insert.send(chunk.clone()).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// One `INSERT INTO table FORMAT RowBinary` with all `rows`; Ok only once the server has
    /// confirmed it (including the materialized views). `dedup_token` is passed as
    /// `insert_deduplication_token` (only give one when the server supports it).
    pub async fn insert<T>(
        &self,
        table: &str,
        rows: &[T],
        dedup_token: Option<&str>,
    ) -> Result<(), SinkError>
    where
        T: Row + RowWrite + for<'a> Row<Value<'a> = T>,
    {
        let mut insert = self
            .client
            .insert::<T>(table)
            .await?
            .with_timeouts(Some(INSERT_TIMEOUT), Some(INSERT_TIMEOUT));
        if let Some(token) = dedup_token {
            insert = insert.with_setting("insert_deduplication_token", token);
        }
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }
}

async fn fetch_tsv(client: &Client, sql: &str) -> Result<Vec<Vec<String>>, SinkError> {
    let mut cursor = client.query_raw(sql).fetch_bytes("TabSeparated")?;
    let bytes = cursor.collect().await?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(unescape_tsv).collect())
        .collect())
}

fn unescape_tsv(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Backquotes an identifier for ClickHouse.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// Quotes a string literal for ClickHouse.
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}
