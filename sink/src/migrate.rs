//! Versioned schema migrations (`sink/migrations/NNNN_name.sql`), embedded in the binary,
//! applied in order at start-up and by `sink migrate`, recorded in `schema_migrations`.
//!
//! Safe to run twice and from two sinks at once: every statement is idempotent
//! (`CREATE ... IF NOT EXISTS`, `DROP ... IF EXISTS`, `ALTER TABLE t ADD COLUMN c` skipped
//! when `c` exists — 18.16 has no `ADD COLUMN IF NOT EXISTS` — and backfills whose rows
//! collapse in a ReplacingMergeTree), `schema_migrations` is a ReplacingMergeTree keyed by version,
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
    Migration {
        version: 4,
        name: "0004_event_sequence.sql",
        sql: include_str!("../migrations/0004_event_sequence.sql"),
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

/// `ALTER TABLE t ADD COLUMN c ...` → `(t, c)`: the statements [`migrate`] makes idempotent
/// itself, by skipping them when the column exists.
pub fn added_column(stmt: &str) -> Option<(&str, &str)> {
    let mut w = stmt.split_whitespace();
    let head: Vec<&str> = w.by_ref().take(2).collect();
    if !head
        .iter()
        .map(|x| x.to_ascii_uppercase())
        .eq(["ALTER", "TABLE"])
    {
        return None;
    }
    let table = w.next()?;
    let (a, b) = (w.next()?, w.next()?);
    if !(a.eq_ignore_ascii_case("ADD") && b.eq_ignore_ascii_case("COLUMN")) {
        return None;
    }
    let column = w.next()?;
    if column.eq_ignore_ascii_case("IF") {
        return None; // IF NOT EXISTS: idempotent by itself
    }
    Some((table, column))
}

/// Whether a statement may run twice (and from two sinks at once) with the same result.
pub fn idempotent(stmt: &str) -> bool {
    let upper = stmt.to_ascii_uppercase();
    upper.contains("IF NOT EXISTS")
        || upper.starts_with("DROP TABLE IF EXISTS")
        || added_column(stmt).is_some()
        // A backfill into person_status (a ReplacingMergeTree keyed by person with a version
        // derived from the event): a second run inserts identical rows, which collapse.
        || upper.starts_with("INSERT INTO PERSON_STATUS ")
}

async fn column_exists(ch: &Ch, table: &str, column: &str) -> Result<bool, SinkError> {
    let rows = ch
        .fetch(&format!(
            "SELECT count() FROM system.columns WHERE database = currentDatabase() \
             AND table = {} AND name = {}",
            quote_str(table),
            quote_str(column)
        ))
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .is_some_and(|n| n != "0"))
}

/// Runs one migration statement; an `ADD COLUMN` whose column exists is skipped (also when
/// another sink added it between the check and the `ALTER`).
async fn exec_idempotent(ch: &Ch, stmt: &str) -> Result<(), SinkError> {
    let Some((table, column)) = added_column(stmt) else {
        return ch.exec(stmt).await;
    };
    if column_exists(ch, table, column).await? {
        return Ok(());
    }
    match ch.exec(stmt).await {
        Err(e) if column_exists(ch, table, column).await.unwrap_or(false) => {
            tracing::debug!(table, column, error = %e, "column added concurrently");
            Ok(())
        }
        other => other,
    }
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
    apply(ch, version, retention_days, MIGRATIONS).await
}

/// [`migrate`] with the first migrations only: `migrations` is a prefix of [`MIGRATIONS`].
/// For tests of an upgrade: a database as an older sink left it.
pub async fn apply(
    ch: &Ch,
    version: ServerVersion,
    retention_days: u64,
    migrations: &[Migration],
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
    for m in migrations {
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
            exec_idempotent(ch, &stmt).await.map_err(|e| match e {
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
                assert!(idempotent(&st), "not idempotent: {st}");
            }
        }
        assert_eq!(
            added_column("ALTER TABLE person_events ADD COLUMN seq Int64 DEFAULT -1"),
            Some(("person_events", "seq"))
        );
        assert_eq!(
            added_column("alter table t add column if not exists c UInt8"),
            None
        );
        assert_eq!(added_column("ALTER TABLE t DROP COLUMN c"), None);
        assert!(!idempotent("INSERT INTO pings SELECT * FROM x"));
    }

    /// 0004's view and backfill must derive person_status rows the same way, or a backfilled
    /// row and the view's row of one event would differ (and not collapse).
    #[test]
    fn event_sequence_view_and_backfill_agree() {
        let sts = statements(MIGRATIONS[3].sql);
        let select = |s: &str| s[s.find("SELECT").unwrap()..].to_string();
        let mv = sts
            .iter()
            .find(|s| s.contains("MATERIALIZED VIEW"))
            .unwrap();
        let fill = sts
            .iter()
            .find(|s| s.starts_with("INSERT INTO person_status"))
            .unwrap();
        assert_eq!(select(mv), select(fill));
    }

    /// The SQL status mapping is the one of `EventKind::status`.
    #[test]
    fn status_mapping_matches_the_processor() {
        use common::record::EventKind;
        let sql = MIGRATIONS[3].sql;
        let at = sql.find("transform(kind").unwrap();
        let arrays: Vec<Vec<String>> = sql[at..]
            .split('[')
            .skip(1)
            .take(2)
            .map(|a| {
                a[..a.find(']').unwrap()]
                    .split(',')
                    .map(|x| x.trim().trim_matches('\'').to_string())
                    .collect()
            })
            .collect();
        for k in EventKind::ALL {
            let i = arrays[0].iter().position(|x| x == k.as_str()).unwrap();
            assert_eq!(arrays[1][i], k.status().as_str(), "{k}");
        }
        assert_eq!(arrays[0].len(), EventKind::ALL.len());
    }
}
