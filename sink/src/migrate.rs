//! Versioned schema migrations (`sink/migrations/NNNN_name.sql`), embedded in the binary,
//! applied in order at start-up and by `sink migrate`, recorded in `schema_migrations`.
//!
//! Safe to run twice and from two sinks at once: every statement is idempotent
//! (`CREATE ... IF NOT EXISTS`), `schema_migrations` is a ReplacingMergeTree keyed by version,
//! and a migration is recorded only after all its statements succeeded. A migration that was
//! recorded with a different checksum is an error (applied files must never change: add a new
//! one).
//!
//! Optional migrations (`sink/migrations/optional/*.sql`) carry a `-- requires: MAJOR.MINOR`
//! line and are applied at every start-up on servers at least that new; they are idempotent
//! and may use `{retention_days}`.

use crate::ch::{Ch, quote_str};
use crate::error::{ErrorClass, SinkError};
use crate::version::ServerVersion;
use std::collections::BTreeMap;

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The migrations, in order. `tests::embedded_list_matches_directory` keeps this in sync with
/// the directory.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_core_tables.sql",
        sql: include_str!("../migrations/0001_core_tables.sql"),
    },
    Migration {
        version: 2,
        name: "0002_person_status.sql",
        sql: include_str!("../migrations/0002_person_status.sql"),
    },
    Migration {
        version: 3,
        name: "0003_dashboard_aggregates.sql",
        sql: include_str!("../migrations/0003_dashboard_aggregates.sql"),
    },
];

/// Version-gated, re-applied at every start-up.
pub const OPTIONAL: &[(&str, &str)] = &[
    (
        "optional/0001_pings_ttl.sql",
        include_str!("../migrations/optional/0001_pings_ttl.sql"),
    ),
    (
        "optional/0002_insert_dedup_window.sql",
        include_str!("../migrations/optional/0002_insert_dedup_window.sql"),
    ),
];

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
    (version UInt32, name String, checksum String, applied_at DateTime) \
    ENGINE = ReplacingMergeTree() ORDER BY version";

/// Splits a migration file into statements: `--` comment lines dropped, split on `;`.
/// (Migrations must not contain `;` or `--` inside string literals.)
pub fn statements(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `-- requires: 19.6` → (19, 6).
pub fn required_version(sql: &str) -> Option<(u32, u32)> {
    sql.lines().find_map(|l| {
        let v = l
            .trim()
            .strip_prefix("--")?
            .trim()
            .strip_prefix("requires:")?
            .trim();
        let p = ServerVersion::parse(v)?;
        Some((p.major, p.minor))
    })
}

/// A stable checksum of a migration's statements (comments and whitespace don't count).
pub fn checksum(sql: &str) -> String {
    let norm = statements(sql).join(";\n");
    format!("{:016x}", xxh64(norm.as_bytes()))
}

fn xxh64(data: &[u8]) -> u64 {
    // FNV-1a 64: enough to detect an edited file, no extra dependency.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<u32>,
    pub already: Vec<u32>,
    pub optional_applied: Vec<String>,
    pub optional_skipped: Vec<String>,
}

/// Creates the database and applies every pending migration, then the optional ones the
/// server supports.
pub async fn migrate(
    ch: &Ch,
    version: ServerVersion,
    retention_days: u64,
) -> Result<MigrationReport, SinkError> {
    ch.create_database().await?;
    ch.exec(MIGRATIONS_TABLE).await?;
    let mut recorded: BTreeMap<u32, String> = BTreeMap::new();
    for row in ch
        .fetch("SELECT version, checksum FROM schema_migrations FINAL")
        .await?
    {
        if let (Some(v), Some(c)) = (row.first().and_then(|v| v.parse().ok()), row.get(1)) {
            recorded.insert(v, c.clone());
        }
    }
    let mut report = MigrationReport::default();
    for m in MIGRATIONS {
        let sum = checksum(m.sql);
        if let Some(old) = recorded.get(&m.version) {
            if *old != sum {
                return Err(SinkError::Migration(format!(
                    "{} was applied with checksum {old} but the file now has {sum}; \
                     applied migrations must not change, add a new one",
                    m.name
                )));
            }
            report.already.push(m.version);
            continue;
        }
        for stmt in statements(m.sql) {
            ch.exec(&stmt).await.map_err(|e| match e {
                // The statement is ours (no record values): the server's own words help.
                SinkError::ClickHouse(c) if c.class != ErrorClass::Transient => {
                    let msg = c
                        .server_text()
                        .map_or_else(|| c.to_string(), str::to_string);
                    SinkError::Migration(format!("{}: {msg}", m.name))
                }
                other => other,
            })?;
        }
        ch.exec(&format!(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) \
             VALUES ({}, {}, {}, now())",
            m.version,
            quote_str(m.name),
            quote_str(&sum)
        ))
        .await?;
        tracing::info!(migration = m.name, "applied migration");
        report.applied.push(m.version);
    }
    for (name, sql) in OPTIONAL {
        let supported = required_version(sql).is_none_or(|(a, b)| version.at_least(a, b));
        if !supported {
            report.optional_skipped.push((*name).to_string());
            continue;
        }
        for stmt in statements(sql) {
            let stmt = stmt.replace("{retention_days}", &retention_days.to_string());
            ch.exec(&stmt).await?;
        }
        report.optional_applied.push((*name).to_string());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_list_matches_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let names: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, names);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            assert!(
                m.sql.trim_start().starts_with("--"),
                "{} needs a comment block",
                m.name
            );
        }
        let opt = std::fs::read_dir(format!("{dir}/optional"))
            .unwrap()
            .count();
        assert_eq!(opt, OPTIONAL.len());
    }

    #[test]
    fn statements_split_and_strip_comments() {
        let s = statements(
            "-- head\nCREATE TABLE a (x UInt8) ENGINE = Memory; -- tail\n\n-- x\nSELECT 1;\n",
        );
        assert_eq!(
            s,
            vec!["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1"]
        );
        assert_eq!(checksum("SELECT 1; -- c"), checksum("-- other\nSELECT 1;"));
        assert_ne!(checksum("SELECT 1"), checksum("SELECT 2"));
        assert_eq!(required_version("-- requires: 19.6\nALTER"), Some((19, 6)));
        assert_eq!(required_version("ALTER"), None);
        for m in MIGRATIONS {
            for st in statements(m.sql) {
                assert!(st.contains("IF NOT EXISTS"), "not idempotent: {st}");
            }
        }
    }
}
