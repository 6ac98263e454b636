//! ClickHouse server version detection and the features that depend on it.

use std::fmt;

/// A ClickHouse server version as reported by `SELECT version()`, e.g. `18.16.1` or
/// `24.8.4.13`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        ServerVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `18.16.1`, `24.8.4.13`, `23.3.1.2823-lts`. Missing parts are 0.
    pub fn parse(s: &str) -> Option<ServerVersion> {
        let mut it = s.trim().split(['.', '-']).map(|p| p.parse::<u32>());
        let major = it.next()?.ok()?;
        let minor = it.next().and_then(Result::ok).unwrap_or(0);
        let patch = it.next().and_then(Result::ok).unwrap_or(0);
        Some(ServerVersion {
            major,
            minor,
            patch,
        })
    }

    /// `major.minor` at least `(major, minor)`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// `insert_deduplication_token` exists (22.2+), together with
    /// `non_replicated_deduplication_window` on MergeTree tables.
    pub fn has_insert_dedup_token(&self) -> bool {
        self.at_least(22, 2)
    }

    /// Table TTL (19.6+).
    pub fn has_ttl(&self) -> bool {
        self.at_least(19, 6)
    }

    /// `LowCardinality` (19.3+ without the experimental flag).
    pub fn has_low_cardinality(&self) -> bool {
        self.at_least(19, 3)
    }

    /// `DateTime64` (20.1+).
    pub fn has_datetime64(&self) -> bool {
        self.at_least(20, 1)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_gates_features() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        assert_eq!(old, ServerVersion::new(18, 16, 1));
        assert!(!old.has_insert_dedup_token() && !old.has_ttl() && !old.has_low_cardinality());
        assert!(!old.has_datetime64());
        let new = ServerVersion::parse("24.8.4.13").unwrap();
        assert_eq!(new, ServerVersion::new(24, 8, 4));
        assert!(new.has_insert_dedup_token() && new.has_ttl() && new.has_datetime64());
        assert!(ServerVersion::parse("19.6").unwrap().has_ttl());
        assert!(!ServerVersion::parse("19.5.3").unwrap().has_ttl());
        assert!(
            ServerVersion::parse("22.2.1")
                .unwrap()
                .has_insert_dedup_token()
        );
        assert!(
            !ServerVersion::parse("22.1.9")
                .unwrap()
                .has_insert_dedup_token()
        );
        assert_eq!(
            ServerVersion::parse("23.3.1.2823-lts").unwrap(),
            ServerVersion::new(23, 3, 1)
        );
        assert!(ServerVersion::parse("").is_none());
        assert!(ServerVersion::parse("abc").is_none());
        assert!(old < new);
    }
}
