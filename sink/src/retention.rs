//! Ping retention: drops day partitions of `pings` (and `pings_per_minute`) older than
//! `sink.pings_retention`. `ALTER TABLE ... DROP PARTITION` works on every ClickHouse version.

use crate::ch::{Ch, quote_str};
use crate::error::SinkError;
use std::time::Duration;

/// Tables partitioned by `toYYYYMMDD(...)` that follow the ping retention.
pub const TABLES: &[&str] = &["pings", "pings_per_minute"];

/// The `YYYYMMDD` (UTC) of the first day that is kept: every partition of a day that ended
/// more than `retention` before `now_ms` is dropped.
pub fn cutoff_day(now_ms: i64, retention: Duration) -> u32 {
    let keep_from_ms = now_ms - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
    let days = keep_from_ms.div_euclid(86_400_000);
    yyyymmdd(days)
}

/// Days since 1970-01-01 → YYYYMMDD (proleptic Gregorian, Howard Hinnant's algorithm).
pub fn yyyymmdd(days: i64) -> u32 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    u32::try_from(y * 10_000 + m * 100 + d).unwrap_or(0)
}

/// Drops expired partitions; returns the (table, partition) pairs dropped.
pub async fn enforce(
    ch: &Ch,
    retention: Duration,
    now_ms: i64,
) -> Result<Vec<(String, String)>, SinkError> {
    let cutoff = cutoff_day(now_ms, retention);
    let tables: Vec<String> = TABLES.iter().map(|t| quote_str(t)).collect();
    let sql = format!(
        "SELECT DISTINCT table, partition FROM system.parts \
         WHERE database = {} AND table IN ({}) AND active",
        quote_str(ch.database()),
        tables.join(", ")
    );
    let mut dropped = Vec::new();
    for row in ch.fetch(&sql).await? {
        let (Some(table), Some(partition)) = (row.first(), row.get(1)) else {
            continue;
        };
        let Ok(day) = partition.trim_matches('\'').parse::<u32>() else {
            continue;
        };
        if day < cutoff {
            ch.exec(&format!(
                "ALTER TABLE {} DROP PARTITION {day}",
                crate::ch::quote_ident(table)
            ))
            .await?;
            tracing::info!(table = %table, partition = day, "dropped expired partition");
            dropped.push((table.clone(), partition.clone()));
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(yyyymmdd(0), 19700101);
        assert_eq!(yyyymmdd(19_939), 20240804);
        assert_eq!(yyyymmdd(11_015), 20000228);
        assert_eq!(yyyymmdd(11_016), 20000229);
        // 2025-09-01T12:00Z with 30 days: keep from 2025-08-02.
        let now = 1_756_728_000_000;
        assert_eq!(cutoff_day(now, Duration::from_secs(30 * 86_400)), 20250802);
    }
}
