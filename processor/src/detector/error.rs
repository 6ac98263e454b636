//! Typed errors of the detector.

use common::codec::changelog::ChangelogError;

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
    /// A person's changelog value could not be decoded.
    #[error("bad person snapshot: {person_id}: {error}")]
    BadPerson {
        person_id: String,
        error: ChangelogError,
    },
    /// A partition's clock value could not be decoded.
    #[error("bad clock snapshot: {0}")]
    BadClock(ChangelogError),
}
