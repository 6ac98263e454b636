//! The configuration's tests: defaults, layering, the every-problem report, typed values,
//! `--print-config`.

use super::*;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_load_and_match_the_issue() {
    let c = Config::defaults();
    assert_eq!(c.policy.notice_after, Duration::from_secs(48 * 3600));
    assert_eq!(c.policy.deregister_after, Duration::from_secs(72 * 3600));
    assert_eq!(c.clock.tick_interval, Duration::from_secs(1));
    assert_eq!(c.clock.outage_after, Duration::from_secs(30));
    assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(
        c.ingest.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.processor.commit_interval, Duration::from_millis(200));
    assert_eq!(
        c.processor.partition_check_interval,
        Duration::from_secs(10)
    );
}

#[test]
fn a_zero_partition_check_interval_is_a_startup_error() {
    let mut c = Config::defaults();
    c.processor.partition_check_interval = Duration::ZERO;
    assert_eq!(
        c.validate(),
        vec!["processor.partition_check_interval: must be greater than zero".to_string()]
    );
}

#[test]
fn every_default_key_is_documented_by_a_comment() {
    let mut prev_comment = false;
    for line in DEFAULTS_TOML.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            prev_comment = true;
            continue;
        }
        if t.contains(" = ") {
            assert!(prev_comment, "undocumented key: {t}");
        }
        prev_comment = false;
    }
}

#[test]
fn env_overrides_file_overrides_defaults() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[policy]\nnotice_after = \"10s\"\nderegister_after = \"1m\"\n[ingest]\nmax_batch = 7"
    )
    .unwrap();
    let c = Config::load_from(
        Some(f.path()),
        env(&[
            ("LASTSEEN_POLICY__NOTICE_AFTER", "5s"),
            ("LASTSEEN_INGEST__INSTANCE_ID", "123"),
            ("LASTSEEN_SINK__COORDINATE_DECIMALS", "3"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.policy.notice_after, Duration::from_secs(5));
    assert_eq!(c.policy.deregister_after, Duration::from_secs(60));
    assert_eq!(c.ingest.max_batch, 7);
    // A numeric-looking env value still fills a string field.
    assert_eq!(c.ingest.instance_id, "123");
    assert_eq!(c.sink.coordinate_decimals, 3);
}

#[test]
fn every_problem_is_listed_at_once() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[ingest]\nmax_batch = \"many\"\nbogus = 1\n[nope]\nx = 1"
    )
    .unwrap();
    let err = Config::load_from(
        Some(f.path()),
        env(&[
            ("LASTSEEN_POLICY__NOTICE_AFTER", "soon"),
            ("LASTSEEN_CLOCK__TICK_INTERVAL", "0s"),
            ("LASTSEEN_KAFKA", "x"),
        ]),
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "ingest.max_batch",
        "ingest.bogus",
        "unknown field `bogus`",
        "unknown section `nope`",
        "policy.notice_after from $LASTSEEN_POLICY__NOTICE_AFTER",
        "`soon` is not a duration",
        "clock.tick_interval: must be greater than zero",
        "$LASTSEEN_KAFKA: expected",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(err.problems.len(), 6, "{text}");
}

#[test]
fn clickhouse_compression_is_lz4_or_none() {
    let ok = Config::load_from(None, env(&[("LASTSEEN_CLICKHOUSE__COMPRESSION", "none")]));
    assert_eq!(ok.unwrap().clickhouse.compression, Compression::None);
    assert_eq!(Config::defaults().clickhouse.compression, Compression::Lz4);
    let err =
        Config::load_from(None, env(&[("LASTSEEN_CLICKHOUSE__COMPRESSION", "zstd")])).unwrap_err();
    // The key, the value and the choices as before; the problem now also says where the
    // value came from, like every other value problem (a field of type Compression is checked
    // while loading, with the origin at hand, not afterwards by validate()).
    assert!(
        err.to_string().contains(
            "clickhouse.compression from $LASTSEEN_CLICKHOUSE__COMPRESSION: `zstd` is not one of lz4, none"
        ),
        "{err}"
    );
    assert_eq!(err.problems.len(), 1, "{err}");
}

#[test]
fn invalid_policy_is_a_startup_error() {
    let err = Config::load_from(
        None,
        env(&[
            ("LASTSEEN_POLICY__NOTICE_AFTER", "72h"),
            ("LASTSEEN_POLICY__DEREGISTER_AFTER", "48h"),
        ]),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("must be shorter than policy.deregister_after"),
        "{err}"
    );
    let zero = PolicyConfig {
        notice_after: Duration::ZERO,
        deregister_after: Duration::ZERO,
    };
    assert_eq!(zero.validate().len(), 3);
}

#[test]
fn durations_parse_like_the_docs_say() {
    assert_eq!(parse_duration("48h").unwrap(), Duration::from_secs(172_800));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(fmt_duration(Duration::from_secs(172_800)), "2days");
    assert!(parse_duration("5 parsecs").is_err());
}

#[test]
fn env_names_cover_every_key() {
    let names = env_var_names();
    assert_eq!(
        names.get("LASTSEEN_POLICY__NOTICE_AFTER").unwrap(),
        "policy.notice_after"
    );
    assert!(names.len() > 40);
}

#[test]
fn redaction_hides_secrets() {
    let mut c = Config::defaults();
    c.clickhouse.password = "hunter2".into();
    let t = redacted_toml(&c);
    assert!(!t.contains("hunter2") && !t.contains("change-me"));
}

#[test]
fn bad_typed_values_do_not_hide_each_other_or_the_rules() {
    // Two bad values in one section, bad values in three more sections, and a broken rule
    // between two good values: every one of them is reported.
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "[log]\nformat = \"yaml\"\n[processor]\nlisten = 9101").unwrap();
    let err = Config::load_from(
        Some(f.path()),
        env(&[
            ("LASTSEEN_INGEST__LISTEN", "localhost"),
            ("LASTSEEN_INGEST__MAX_FUTURE_SKEW", "a while"),
            ("LASTSEEN_CLICKHOUSE__COMPRESSION", "gzip"),
            ("LASTSEEN_SINK__LISTEN", "127.0.0.1:99999"),
            ("LASTSEEN_POLICY__NOTICE_AFTER", "72h"),
            ("LASTSEEN_POLICY__DEREGISTER_AFTER", "48h"),
        ]),
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "ingest.listen from $LASTSEEN_INGEST__LISTEN: `localhost` is not an address like 127.0.0.1:8080",
        "ingest.max_future_skew from $LASTSEEN_INGEST__MAX_FUTURE_SKEW: `a while` is not a duration",
        "clickhouse.compression from $LASTSEEN_CLICKHOUSE__COMPRESSION: `gzip` is not one of lz4, none",
        "sink.listen from $LASTSEEN_SINK__LISTEN: `127.0.0.1:99999` is not an address",
        "log.format in ",
        "`yaml` is not one of text, json",
        "processor.listen in ",
        "must be shorter than policy.deregister_after",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(err.problems.len(), 7, "{text}");
}

#[test]
fn typed_values_load_from_file_and_environment() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[log]\nformat = \"json\"\n[processor]\nlisten = \"[::1]:9201\""
    )
    .unwrap();
    let c = Config::load_from(
        Some(f.path()),
        env(&[
            ("LASTSEEN_INGEST__LISTEN", "0.0.0.0:18080"),
            ("LASTSEEN_CLICKHOUSE__COMPRESSION", "none"),
        ]),
    )
    .unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(
        c.processor.listen,
        "[::1]:9201".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.ingest.listen, SocketAddr::from(([0, 0, 0, 0], 18080)));
    assert_eq!(c.clickhouse.compression, Compression::None);
    let d = Config::defaults();
    assert_eq!(
        (d.log.format, d.sink.listen.port()),
        (LogFormat::Text, 9102)
    );
    assert_eq!(LogFormat::NAMES, ["text", "json"]);
    assert_eq!("lz4".parse::<Compression>(), Ok(Compression::Lz4));
}

#[test]
fn printed_config_loads_back_to_the_same_config() {
    // --print-config writes the typed values as a user writes them: the output is a valid
    // configuration file, equal to the input but for the redacted secrets.
    let mut c = Config::load_from(
        None,
        env(&[
            ("LASTSEEN_LOG__FORMAT", "json"),
            ("LASTSEEN_CLICKHOUSE__COMPRESSION", "none"),
            ("LASTSEEN_CLICKHOUSE__PASSWORD", "hunter2"),
            ("LASTSEEN_SINK__LISTEN", "[::1]:0"),
        ]),
    )
    .unwrap();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    write!(f, "{}", redacted_toml(&c)).unwrap();
    let back = Config::load_from(Some(f.path()), std::iter::empty()).unwrap();
    assert_eq!(back.clickhouse.password, "<redacted>");
    assert_eq!(back.auth.hs256_secret, "<redacted>");
    c.clickhouse.password = "<redacted>".into();
    c.auth.hs256_secret = "<redacted>".into();
    assert_eq!(back, c);
}

#[test]
fn every_default_section_has_a_checker() {
    let defaults: toml::Table = DEFAULTS_TOML.parse().unwrap();
    for (name, section) in defaults {
        let toml::Value::Table(t) = section else {
            panic!("{name} is not a section")
        };
        assert_eq!(load::check_section(&name, t), Ok(()), "section {name}");
    }
}
