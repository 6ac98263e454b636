//! Typed errors of the detector.

/// Everything the detector can refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectorError {
    /// The policy or clock configuration is unusable; every problem is listed.
    #[error("invalid detector configuration: {}", problems.join("; "))]
    InvalidConfig { problems: Vec<String> },
    /// `restore_person` / `restore_clock` were called after records were applied: restoring
    /// is only defined on a fresh detector (one per assigned partition).
    #[error("restore called after records were applied; build a fresh detector to restore")]
    RestoreAfterStart,
    /// A snapshot could not be decoded.
    #[error("bad {what} snapshot: {reason}")]
    BadSnapshot { what: &'static str, reason: String },
}

impl DetectorError {
    pub(crate) fn bad(what: &'static str, reason: impl Into<String>) -> Self {
        DetectorError::BadSnapshot {
            what,
            reason: reason.into(),
        }
    }
}
