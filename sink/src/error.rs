//! Typed errors of the sink. Every error says whether retrying can help; a ClickHouse error
//! also says which of three things it is ([`ErrorClass`]), which decides what the writer does
//! with the rows (`pipeline::writer`).
//!
//! ClickHouse's exception texts quote the values they choke on (`Cannot parse input: expected
//! \t before: Arbat 1…`, a constraint's `Column values: lat = 95`), so a [`ClickHouseError`]
//! displays only the code and its name (or the client-side failure): that is what goes into
//! logs and dead-letter reasons. The server's own text is kept for the one caller whose SQL
//! carries no record values (migrations, [`ClickHouseError::server_text`]).

use std::borrow::Cow;
use std::fmt;
use thiserror::Error;

/// Errors of the sink library.
#[derive(Debug, Error)]
pub enum SinkError {
    /// A ClickHouse request failed; [`ClickHouseError::class`] says whether it is transient,
    /// systemic or about the rows.
    #[error("clickhouse: {0}")]
    ClickHouse(ClickHouseError),
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
            SinkError::ClickHouse(e) => e.class == ErrorClass::Transient,
            SinkError::Io(_) => true,
            SinkError::Kafka(e) => !matches!(
                e.rdkafka_error_code(),
                Some(
                    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
                        | rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed
                        | rdkafka::types::RDKafkaErrorCode::GroupAuthorizationFailed
                )
            ),
            SinkError::Migration(_) | SinkError::Config(_) => false,
        }
    }

    /// The ClickHouse error, if this is one.
    pub fn clickhouse(&self) -> Option<&ClickHouseError> {
        match self {
            SinkError::ClickHouse(e) => Some(e),
            _ => None,
        }
    }
}

impl common::lifecycle::Retryable for SinkError {
    fn is_retryable(&self) -> bool {
        SinkError::is_retryable(self)
    }
}

/// What a failed ClickHouse request means for the rows it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// May go away by itself (network, timeouts, overload, ZooKeeper/Keeper, too many parts,
    /// memory): retry the same rows with backoff. Unknown codes are transient too: retrying
    /// a request that can never work only delays, while any other choice could divert data.
    Transient,
    /// The request itself can never work, for any row (unknown table, database or column,
    /// authentication, a read-only user, syntax). Splitting would dead-letter every row, so
    /// the rows are retried with backoff, logged at ERROR and counted: an operator must act.
    Systemic,
    /// ClickHouse refused the rows themselves (a value that does not parse or fit, a
    /// `throwIf` or a constraint): final for the data. The batch is split until the refused
    /// rows are found; they go to the dead-letter topic and the rest is written.
    Data,
}

impl ErrorClass {
    /// The metric label of the class.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Systemic => "systemic",
            ErrorClass::Data => "data",
        }
    }
}

/// Codes (and their names, as in ClickHouse's `src/Common/ErrorCodes.cpp`) that may go away
/// by themselves. Listed to name them in logs; any code not listed anywhere is transient too.
const TRANSIENT: &[(u32, &str)] = &[
    // The server is busy or short of resources; the same insert works once it is not.
    (159, "TIMEOUT_EXCEEDED"),
    (173, "CANNOT_ALLOCATE_MEMORY"),
    (201, "QUOTA_EXPIRED"), // the quota's interval ends
    (202, "TOO_MANY_SIMULTANEOUS_QUERIES"),
    (203, "NO_FREE_CONNECTION"),
    (241, "MEMORY_LIMIT_EXCEEDED"),
    (252, "TOO_MANY_PARTS"), // merges catch up
    (364, "RECEIVED_ERROR_TOO_MANY_REQUESTS"),
    (439, "CANNOT_SCHEDULE_TASK"), // thread pool full
    (473, "DEADLOCK_AVOIDED"),
    // Network between the sink, the server and its replicas.
    (95, "CANNOT_READ_FROM_SOCKET"),
    (96, "CANNOT_WRITE_TO_SOCKET"),
    (198, "DNS_ERROR"),
    (209, "SOCKET_TIMEOUT"),
    (210, "NETWORK_ERROR"),
    (279, "ALL_CONNECTION_TRIES_FAILED"),
    // Replication: ZooKeeper/Keeper away, a replica read-only until it reconnects, quorum.
    (225, "NO_ZOOKEEPER"),
    (242, "TABLE_IS_READ_ONLY"),
    (244, "UNEXPECTED_ZOOKEEPER_ERROR"),
    (285, "TOO_FEW_LIVE_REPLICAS"),
    (286, "UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE"),
    (289, "REPLICA_IS_NOT_IN_QUORUM"),
    (319, "UNKNOWN_STATUS_OF_INSERT"),
    (999, "KEEPER_EXCEPTION"),
    // The query was stopped (server shutting down, KILL QUERY), or the disk is full: the
    // rows are fine, the server is not.
    (236, "ABORTED"),
    (243, "NOT_ENOUGH_SPACE"),
    (394, "QUERY_WAS_CANCELLED"),
];

/// Codes that mean the request cannot work for any row: retried, never split.
const SYSTEMIC: &[(u32, &str)] = &[
    // The schema the sink writes is not there (a migration missing, a table dropped).
    (8, "THERE_IS_NO_COLUMN"),
    (10, "NOT_FOUND_COLUMN_IN_BLOCK"),
    (16, "NO_SUCH_COLUMN_IN_TABLE"),
    (47, "UNKNOWN_IDENTIFIER"),
    (60, "UNKNOWN_TABLE"),
    (81, "UNKNOWN_DATABASE"),
    // The body disagrees with the table's types as a whole: our Native and RowBinary
    // bodies are machine-written, so a short read is a schema mismatch, not a bad row.
    (33, "CANNOT_READ_ALL_DATA"),
    // The request itself (our SQL, format or settings).
    (62, "SYNTAX_ERROR"),
    (73, "UNKNOWN_FORMAT"),
    (115, "UNKNOWN_SETTING"),
    (452, "SETTING_CONSTRAINT_VIOLATION"),
    (471, "INVALID_SETTING_VALUE"),
    (472, "READONLY_SETTING"),
    // Who we are and what we may do.
    (164, "READONLY"),
    (192, "UNKNOWN_USER"),
    (193, "WRONG_PASSWORD"),
    (194, "REQUIRED_PASSWORD"),
    (195, "IP_ADDRESS_NOT_ALLOWED"),
    (291, "DATABASE_ACCESS_DENIED"),
    (392, "QUERY_IS_PROHIBITED"),
    (497, "ACCESS_DENIED"),
    (516, "AUTHENTICATION_FAILED"),
];

/// Codes that mean ClickHouse refused the rows: a value does not parse or fit its column, or
/// a check on the values (a `throwIf` in a materialized column or view, a constraint)
/// failed. Final for those rows; the others of the batch are fine.
const DATA: &[(u32, &str)] = &[
    // Does not parse.
    (6, "CANNOT_PARSE_TEXT"),
    (25, "CANNOT_PARSE_ESCAPE_SEQUENCE"),
    (26, "CANNOT_PARSE_QUOTED_STRING"),
    (27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED"),
    (38, "CANNOT_PARSE_DATE"),
    (41, "CANNOT_PARSE_DATETIME"),
    (72, "CANNOT_PARSE_NUMBER"),
    (376, "CANNOT_PARSE_UUID"),
    (441, "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING"),
    (467, "CANNOT_PARSE_BOOL"),
    // Does not fit.
    (19, "SIZE_OF_FIXED_STRING_DOESNT_MATCH"),
    (53, "TYPE_MISMATCH"),
    (69, "ARGUMENT_OUT_OF_BOUND"),
    (70, "CANNOT_CONVERT_TYPE"),
    (117, "INCORRECT_DATA"),
    (128, "TOO_LARGE_ARRAY_SIZE"),
    (131, "TOO_LARGE_STRING_SIZE"),
    (190, "SIZES_OF_ARRAYS_DOESNT_MATCH"),
    (321, "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"),
    (349, "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN"),
    (407, "DECIMAL_OVERFLOW"),
    // A check on the values says no.
    (153, "ILLEGAL_DIVISION"), // a division by zero in a view's expression
    (395, "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"),
    (469, "VIOLATED_CONSTRAINT"),
];

/// The class and name of ClickHouse exception `code` (unknown codes: transient, unnamed).
pub fn classify_code(code: u32) -> (ErrorClass, Option<&'static str>) {
    let find = |list: &[(u32, &'static str)]| list.iter().find(|(c, _)| *c == code).map(|e| e.1);
    if let Some(name) = find(SYSTEMIC) {
        (ErrorClass::Systemic, Some(name))
    } else if let Some(name) = find(DATA) {
        (ErrorClass::Data, Some(name))
    } else {
        (ErrorClass::Transient, find(TRANSIENT))
    }
}

/// A failed ClickHouse request, classified. Its `Display` is value-free (see the module
/// doc); so is its `Debug`, which leaves the server's text out.
#[derive(Clone)]
pub struct ClickHouseError {
    pub class: ErrorClass,
    /// ClickHouse's exception code, when the server answered with one.
    pub code: Option<u32>,
    /// The code's name, or what failed on the client side (our words or the client
    /// crate's: no record values).
    what: Cow<'static, str>,
    /// The server's exception text: may quote record values. Never displayed.
    server_text: Option<String>,
}

impl ClickHouseError {
    /// A failure found on our side of the connection.
    pub fn client(class: ErrorClass, what: impl Into<Cow<'static, str>>) -> ClickHouseError {
        ClickHouseError {
            class,
            code: None,
            what: what.into(),
            server_text: None,
        }
    }

    /// The server's answer `body` (its exception text, or only the code from the
    /// `X-ClickHouse-Exception-Code` header when the body was empty).
    pub fn from_response(body: &str) -> ClickHouseError {
        match exception_code(body) {
            Some(code) => {
                let (class, name) = classify_code(code);
                ClickHouseError {
                    class,
                    code: Some(code),
                    what: Cow::Borrowed(name.unwrap_or("")),
                    server_text: Some(body.to_string()),
                }
            }
            // A proxy's error page, a truncated answer: nothing says the request is wrong.
            None => ClickHouseError {
                class: ErrorClass::Transient,
                code: None,
                what: Cow::Borrowed("an error response without an exception code"),
                server_text: Some(body.to_string()),
            },
        }
    }

    /// ClickHouse's name of the code (`FUNCTION_THROW_IF_VALUE_IS_NON_ZERO`), if it has one
    /// here: a bounded set, fit for a metric label.
    pub fn name(&self) -> Option<&str> {
        (self.code.is_some() && !self.what.is_empty()).then_some(&*self.what)
    }

    /// The server's exception text. It may quote record values: only for errors of requests
    /// that carry none (the migrations' DDL), never for logs of inserts or dead letters.
    pub fn server_text(&self) -> Option<&str> {
        self.server_text.as_deref()
    }

    /// The column the server's text blames, if it names one of `columns` where ClickHouse
    /// names a column (`column lat`, `name: lat,`, `key lat)`). Only a name from `columns`
    /// is ever returned, so no text of the message (or value in it) gets out.
    pub fn column_in<'c>(&self, columns: &[&'c str]) -> Option<&'c str> {
        let text = self.server_text.as_deref()?;
        blamed_column(text, columns)
    }
}

impl fmt::Display for ClickHouseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.name()) {
            (Some(code), Some(name)) => write!(f, "code {code} {name}"),
            (Some(code), None) => write!(f, "code {code}"),
            (None, _) => f.write_str(&self.what),
        }
    }
}

impl fmt::Debug for ClickHouseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseError")
            .field("class", &self.class)
            .field("code", &self.code)
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl From<ClickHouseError> for SinkError {
    fn from(e: ClickHouseError) -> Self {
        SinkError::ClickHouse(e)
    }
}

impl From<clickhouse::error::Error> for SinkError {
    fn from(e: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error as E;
        let class = match &e {
            E::BadResponse(body) => return ClickHouseError::from_response(body).into(),
            // Our request or row type does not fit what the client or server expects: the
            // same for every row.
            E::InvalidParams(_)
            | E::SchemaMismatch(_)
            | E::Unsupported(_)
            | E::NotEnoughData
            | E::Custom(_) => ErrorClass::Systemic,
            // Network, timeouts, a (de)compression of a broken stream, anything else.
            _ => ErrorClass::Transient,
        };
        // The client crate's own words: about the connection or the request, no values.
        ClickHouseError::client(class, e.to_string()).into()
    }
}

/// The exception code of a ClickHouse error body: `Code: NNN` at its start (18.16:
/// `Code: 60, e.displayText() = …`; current: `Code: 60. DB::Exception: …`), or the whole
/// body when it is only the code (the client crate falls back to the exception-code header).
pub(crate) fn exception_code(body: &str) -> Option<u32> {
    let body = body.trim();
    if !body.is_empty() && body.len() <= 5 && body.bytes().all(|b| b.is_ascii_digit()) {
        return body.parse().ok();
    }
    let rest = &body[body.find("Code: ")? + 6..];
    let digits = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    if digits.len() > 5 {
        return None;
    }
    digits.parse().ok()
}

/// The first of `columns` that `text` names where ClickHouse names a column.
fn blamed_column<'c>(text: &str, columns: &[&'c str]) -> Option<&'c str> {
    const BEFORE: &[&str] = &["column ", "column `", "column '", "name: ", "key "];
    let lower = text.to_ascii_lowercase();
    for marker in BEFORE {
        let mut from = 0;
        while let Some(at) = lower[from..].find(marker) {
            let start = from + at + marker.len();
            from = start;
            let ident: &str = &text[start..][..text[start..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count()];
            if let Some(c) = columns.iter().find(|c| **c == ident) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real answers of ClickHouse 18.16 (local server, `curl`) and of current servers (the
    /// `(NAME) (version …)` format), with the class each must get.
    const TEXTS: &[(&str, ErrorClass, u32)] = &[
        // 18.16
        (
            "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero, e.what() = DB::Exception",
            ErrorClass::Data,
            395,
        ),
        (
            "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero: while pushing to view lastseen.guard, e.what() = DB::Exception",
            ErrorClass::Data,
            395,
        ),
        (
            "Code: 60, e.displayText() = DB::Exception: Table lastseen.nope doesn't exist., e.what() = DB::Exception",
            ErrorClass::Systemic,
            60,
        ),
        (
            "Code: 16, e.displayText() = DB::Exception: No such column nope in table pings, e.what() = DB::Exception",
            ErrorClass::Systemic,
            16,
        ),
        (
            "Code: 81, e.displayText() = DB::Exception: Database nodb doesn't exist, e.what() = DB::Exception",
            ErrorClass::Systemic,
            81,
        ),
        (
            "Code: 62, e.displayText() = DB::Exception: Syntax error: failed at position 37: VALUS. Expected one of: VALUES, OpeningRoundBracket, token, WITH, FORMAT, SELECT, e.what() = DB::Exception",
            ErrorClass::Systemic,
            62,
        ),
        (
            "Code: 193, e.displayText() = DB::Exception: Wrong password for user default, e.what() = DB::Exception",
            ErrorClass::Systemic,
            193,
        ),
        (
            "Code: 192, e.displayText() = DB::Exception: Unknown user nobody, e.what() = DB::Exception",
            ErrorClass::Systemic,
            192,
        ),
        (
            "Code: 164, e.displayText() = DB::Exception: Cannot insert into table in readonly mode, e.what() = DB::Exception",
            ErrorClass::Systemic,
            164,
        ),
        (
            "Code: 115, e.displayText() = DB::Exception: Unknown setting nonexistent_setting, e.what() = DB::Exception",
            ErrorClass::Systemic,
            115,
        ),
        (
            "Code: 53, e.displayText() = DB::Exception: Type mismatch in IN or VALUES section. Expected: UInt32. Got: String, e.what() = DB::Exception",
            ErrorClass::Data,
            53,
        ),
        (
            "Code: 131, e.displayText() = DB::Exception: Too large value for FixedString(2): (at row 1)\n, e.what() = DB::Exception",
            ErrorClass::Data,
            131,
        ),
        (
            "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \\t before: Arbat 1\\t2020-01-01\\n: (at row 1)\n\nRow 1:\nColumn 0,   name: s, type: FixedString(2), parsed text: \"ab\"\nColumn 1,   name: address, type: UInt8,          ERROR: text \"Arbat 1<TAB>20\" is not like UInt8\n\n, e.what() = DB::Exception",
            ErrorClass::Data,
            27,
        ),
        (
            "Code: 38, e.displayText() = DB::Exception: Cannot parse date: value is too short: (at row 1)\n\nRow 1:\nColumn 2,   name: d, type: Date,           parsed text: \"55\"ERROR: Date must be in YYYY-MM-DD format.\n\n, e.what() = DB::Exception",
            ErrorClass::Data,
            38,
        ),
        (
            "Code: 153, e.displayText() = DB::Exception: Division by zero, e.what() = DB::Exception",
            ErrorClass::Data,
            153,
        ),
        (
            "Code: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded: would use 2.00 MiB (attempt to allocate chunk of 4096 bytes), maximum: 1000.00 B, e.what() = DB::Exception",
            ErrorClass::Transient,
            241,
        ),
        (
            "Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts., e.what() = DB::Exception",
            ErrorClass::Transient,
            252,
        ),
        (
            "Code: 242, e.displayText() = DB::Exception: Table is in readonly mode, e.what() = DB::Exception",
            ErrorClass::Transient,
            242,
        ),
        (
            "Code: 999, e.displayText() = zkutil::KeeperException: Connection loss, path: /clickhouse/tables/01/pings/blocks, e.what() = zkutil::KeeperException",
            ErrorClass::Transient,
            999,
        ),
        (
            "Code: 202, e.displayText() = DB::Exception: Too many simultaneous queries. Maximum: 100, e.what() = DB::Exception",
            ErrorClass::Transient,
            202,
        ),
        (
            "Code: 210, e.displayText() = DB::NetException: Connection refused: (ch-2:9000), e.what() = DB::NetException",
            ErrorClass::Transient,
            210,
        ),
        (
            "Code: 209, e.displayText() = DB::NetException: Timeout exceeded while reading from socket (10.0.0.5:9000), e.what() = DB::NetException",
            ErrorClass::Transient,
            209,
        ),
        // current servers
        (
            "Code: 395. DB::Exception: Value passed to 'throwIf' function is non-zero: while executing 'FUNCTION throwIf(equals(device_id, 'poison-device') :: 2) -> throwIf(equals(device_id, 'poison-device')) UInt8 : 3'. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO) (version 23.8.2.7 (official build))",
            ErrorClass::Data,
            395,
        ),
        (
            "Code: 469. DB::Exception: Constraint `lat_range` for table lastseen.pings (7a9c) is violated at row 1. Expression: ((lat >= -90) AND (lat <= 90)). Column values: lat = 95.123456. (VIOLATED_CONSTRAINT) (version 24.3.1.2672 (official build))",
            ErrorClass::Data,
            469,
        ),
        (
            "Code: 60. DB::Exception: Table lastseen.pings does not exist. (UNKNOWN_TABLE) (version 22.8.5.29 (official build))",
            ErrorClass::Systemic,
            60,
        ),
        (
            "Code: 497. DB::Exception: lastseen_sink: Not enough privileges. To execute this query, it's necessary to have the grant INSERT(person_id, device_id) ON lastseen.pings. (ACCESS_DENIED) (version 23.3.1.2823 (official build))",
            ErrorClass::Systemic,
            497,
        ),
        (
            "Code: 516. DB::Exception: lastseen_sink: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED) (version 22.3.2.1)",
            ErrorClass::Systemic,
            516,
        ),
        (
            "Code: 164. DB::Exception: analyst: Cannot execute query in readonly mode. (READONLY) (version 23.8.1.1)",
            ErrorClass::Systemic,
            164,
        ),
        (
            "Code: 252. DB::Exception: Too many parts (3001) in table 'lastseen.pings'. Merges are processing significantly slower than inserts. (TOO_MANY_PARTS) (version 24.1.1.1)",
            ErrorClass::Transient,
            252,
        ),
        (
            "Code: 241. DB::Exception: Memory limit (total) exceeded: would use 9.32 GiB (attempt to allocate chunk of 4360384 bytes), maximum: 9.31 GiB. (MEMORY_LIMIT_EXCEEDED) (version 23.3.1.1)",
            ErrorClass::Transient,
            241,
        ),
        (
            "Code: 242. DB::Exception: Table is in readonly mode (replica path: /clickhouse/tables/01/pings/replicas/r1). (TABLE_IS_READ_ONLY) (version 23.8.1.1)",
            ErrorClass::Transient,
            242,
        ),
        (
            "Code: 999. Coordination::Exception: Connection loss, path /clickhouse/tables/01/pings/blocks. (KEEPER_EXCEPTION) (version 23.8.1.1)",
            ErrorClass::Transient,
            999,
        ),
        (
            "Code: 202. DB::Exception: Too many simultaneous queries. Maximum: 100. (TOO_MANY_SIMULTANEOUS_QUERIES) (version 23.8.1.1)",
            ErrorClass::Transient,
            202,
        ),
        (
            "Code: 27. DB::Exception: Cannot parse input: expected '\"' before: 'Arbat 1\",\"d\":\"2020-01-01\"}\\n': (while reading the value of key address): (at row 1)\n: While executing ParallelParsingBlockInputFormat. (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 23.8.1.1)",
            ErrorClass::Data,
            27,
        ),
        // An unknown code (a newer server's) is transient: retried, never diverted.
        (
            "Code: 1234. DB::Exception: Something new. (SOMETHING_NEW) (version 30.1.1.1)",
            ErrorClass::Transient,
            1234,
        ),
    ];

    #[test]
    fn real_error_texts_classify() {
        for (text, class, code) in TEXTS {
            let e = ClickHouseError::from_response(text);
            assert_eq!((e.class, e.code), (*class, Some(*code)), "{text}");
            let s: SinkError = clickhouse::error::Error::BadResponse((*text).into()).into();
            assert_eq!(s.is_retryable(), *class == ErrorClass::Transient, "{text}");
        }
        // Every classified code is named, and the numbers agree with ClickHouse's names.
        for (code, name) in TRANSIENT.iter().chain(SYSTEMIC).chain(DATA) {
            assert_eq!(classify_code(*code).1, Some(*name));
            for (text, _, c) in TEXTS {
                if c == code && text.contains(") (version") {
                    assert!(text.contains(&format!("({name})")), "{text} is not {name}");
                }
            }
        }
        // No code is in two lists.
        let mut all: Vec<u32> = TRANSIENT
            .iter()
            .chain(SYSTEMIC)
            .chain(DATA)
            .map(|e| e.0)
            .collect();
        all.sort_unstable();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n, "a code in two lists");
    }

    #[test]
    fn codes_parse_from_either_format_or_the_header() {
        assert_eq!(
            exception_code("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist"),
            Some(60)
        );
        assert_eq!(
            exception_code("Code: 60. DB::Exception: Table x does not exist. (UNKNOWN_TABLE)"),
            Some(60)
        );
        assert_eq!(exception_code("395"), Some(395));
        assert_eq!(exception_code("500 Internal Server Error"), None);
        assert_eq!(exception_code("garbage"), None);
        assert_eq!(exception_code("Code: 99999999999"), None);
        // No code: transient (nothing says the request or the rows are wrong).
        let e = ClickHouseError::from_response("<html>502 Bad Gateway</html>");
        assert_eq!((e.class, e.code), (ErrorClass::Transient, None));
    }

    #[test]
    fn client_side_errors_classify() {
        let e: SinkError = clickhouse::error::Error::TimedOut.into();
        assert!(e.is_retryable());
        let e: SinkError = clickhouse::error::Error::NotEnoughData.into();
        assert_eq!(e.clickhouse().unwrap().class, ErrorClass::Systemic);
        assert!(!e.is_retryable());
    }

    /// What goes into logs and dead-letter reasons: the code and name, never the text that
    /// quotes the values.
    #[test]
    fn display_and_debug_carry_no_values() {
        let values = [
            "Arbat 1",
            "95.123456",
            "poison-device",
            "lat = 95",
            "2020-01-01",
        ];
        for (text, _, code) in TEXTS {
            let e = ClickHouseError::from_response(text);
            for shown in [
                e.to_string(),
                format!("{e:?}"),
                SinkError::from(e.clone()).to_string(),
            ] {
                assert!(shown.contains(&code.to_string()), "{shown}");
                for v in values {
                    assert!(!shown.contains(v), "{shown} echoes {v}");
                }
            }
        }
        let e = ClickHouseError::from_response(TEXTS[0].0);
        assert_eq!(
            e.to_string(),
            "code 395 FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"
        );
        assert_eq!(e.name(), Some("FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"));
        let unknown = ClickHouseError::from_response("Code: 1234. DB::Exception: x (NEW_THING)");
        assert_eq!(unknown.to_string(), "code 1234");
        assert_eq!(unknown.name(), None);
    }

    #[test]
    fn only_known_columns_are_blamed() {
        let cols = &["person_id", "device_id", "lat", "lon", "address"];
        let blame = |i: usize| ClickHouseError::from_response(TEXTS[i].0).column_in(cols);
        // 18.16's row dump: `name: address, …, ERROR`.
        let parse = TEXTS.iter().position(|t| t.2 == 27).unwrap();
        assert_eq!(blame(parse), Some("address"));
        // A column that is not ours, or a value that looks like a name, gives nothing.
        let other = ClickHouseError::from_response(
            "Code: 16, e.displayText() = DB::Exception: No such column Arbat in table t",
        );
        assert_eq!(other.column_in(cols), None);
        let current = ClickHouseError::from_response(TEXTS[TEXTS.len() - 2].0);
        assert_eq!(current.column_in(cols), Some("address"));
        assert_eq!(
            ClickHouseError::from_response(TEXTS[0].0).column_in(cols),
            None
        );
    }
}
