//! Typed errors of the sink. Every error says whether retrying can help.

use thiserror::Error;

/// Errors of the sink library.
#[derive(Debug, Error)]
pub enum SinkError {
    /// ClickHouse could not be reached or answered with an error that may go away
    /// (network, timeout, overload, server restarting).
    #[error("clickhouse unavailable: {0}")]
    ClickHouseUnavailable(String),
    /// ClickHouse rejected the request in a way retrying will not fix (bad SQL, missing table,
    /// authentication, schema mismatch). An operator has to act.
    #[error("clickhouse rejected the request: {0}")]
    ClickHouseRejected(String),
    /// A migration file that was already applied has changed, or a migration is malformed.
    #[error("migration error: {0}")]
    Migration(String),
    /// Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Configuration that cannot work (bad listen address, ...).
    #[error("configuration: {0}")]
    Config(String),
    /// I/O (admin listener).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl SinkError {
    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::ClickHouseUnavailable(_) | SinkError::Io(_) => true,
            SinkError::Kafka(e) => !matches!(
                e.rdkafka_error_code(),
                Some(
                    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
                        | rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed
                        | rdkafka::types::RDKafkaErrorCode::GroupAuthorizationFailed
                )
            ),
            SinkError::ClickHouseRejected(_) | SinkError::Migration(_) | SinkError::Config(_) => {
                false
            }
        }
    }
}

/// ClickHouse exception codes that mean "the request itself is wrong" (retrying won't help).
const PERMANENT_CODES: &[u32] = &[
    16,  // NO_SUCH_COLUMN_IN_TABLE
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  // CANNOT_READ_ALL_DATA (row type does not match the table)
    47,  // UNKNOWN_IDENTIFIER
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR
    81,  // UNKNOWN_DATABASE
    115, // UNKNOWN_SETTING
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    194, // REQUIRED_PASSWORD
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

impl From<clickhouse::error::Error> for SinkError {
    fn from(e: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error as E;
        let text = e.to_string();
        match &e {
            E::BadResponse(body) => {
                let code = exception_code(body);
                if code.is_some_and(|c| PERMANENT_CODES.contains(&c)) {
                    SinkError::ClickHouseRejected(text)
                } else {
                    SinkError::ClickHouseUnavailable(text)
                }
            }
            E::InvalidParams(_)
            | E::SchemaMismatch(_)
            | E::Unsupported(_)
            | E::NotEnoughData
            | E::Custom(_) => SinkError::ClickHouseRejected(text),
            _ => SinkError::ClickHouseUnavailable(text),
        }
    }
}

/// Extracts `Code: NNN` from a ClickHouse error body.
pub(crate) fn exception_code(body: &str) -> Option<u32> {
    let rest = &body[body.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl common::lifecycle::Retryable for SinkError {
    fn is_retryable(&self) -> bool {
        SinkError::is_retryable(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify() {
        assert_eq!(
            exception_code("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist"),
            Some(60)
        );
        assert_eq!(exception_code("garbage"), None);
        let e: SinkError =
            clickhouse::error::Error::BadResponse("Code: 60, e.displayText()".into()).into();
        assert!(!e.is_retryable());
        let e: SinkError =
            clickhouse::error::Error::BadResponse("Code: 241, memory limit".into()).into();
        assert!(e.is_retryable());
        let e: SinkError = clickhouse::error::Error::TimedOut.into();
        assert!(e.is_retryable());
    }
}
