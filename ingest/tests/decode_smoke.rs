//! Stable smoke test for the request decoder (the cargo-fuzz target in `fuzz/` is the deep
//! one): random bytes and random JSON-ish bodies must never panic, and accepted pings must
//! respect the documented bounds.

use ingest::decode::{
    DecodeError, Limits, MAX_DETAILS, decode_pings, decode_registration, parse_rfc3339,
};
use proptest::prelude::*;

const NOW: i64 = 1_756_684_800_000;

fn check(data: &[u8]) {
    let limits = Limits::default();
    match decode_pings(data, &limits, NOW) {
        Ok(pings) => {
            assert!(!pings.is_empty() && pings.len() <= limits.max_batch);
            for p in pings {
                assert!((-90.0..=90.0).contains(&p.lat) && (-180.0..=180.0).contains(&p.lon));
                assert!(p.device_ts <= NOW + limits.max_future_skew_ms);
                assert!(p.device_ts >= NOW - limits.max_age_ms);
            }
        }
        Err(DecodeError::Invalid { details, .. }) => {
            assert!(!details.is_empty() && details.len() <= MAX_DETAILS)
        }
        Err(DecodeError::Malformed { .. }) => {}
    }
    if let Ok(r) = decode_registration(data) {
        assert!((1..=500).contains(&r.address.chars().count()));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_rfc3339(s);
    }
}

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        Just(NOW.to_string()),
        Just("\"2025-09-01T00:00:00Z\"".to_string()),
        "[0-9T:+.Z-]{0,30}".prop_map(|s| format!("\"{s}\"")),
        "\\PC{0,10}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("ts".to_string()),
                        Just("lat".to_string()),
                        Just("lon".to_string()),
                        Just("accuracy_m".to_string()),
                        Just("pings".to_string()),
                        Just("address".to_string()),
                        "[a-z]{1,5}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| format!(
                "{{{}}}",
                kv.iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&data);
    }

    #[test]
    fn random_json_never_panics(v in json_value()) {
        check(v.as_bytes());
        let wrapped = format!("{{\"pings\":[{v},{v}]}}");
        check(wrapped.as_bytes());
    }

    #[test]
    fn truncated_valid_bodies_never_panic(cut in 0usize..200) {
        let body = format!(
            r#"{{"pings":[{{"ts":{NOW},"lat":55.75,"lon":37.61,"accuracy_m":3}},{{"ts":"2025-09-01T03:00:00+03:00","lat":1,"lon":2}}]}}"#
        );
        let b = body.as_bytes();
        check(&b[..cut.min(b.len())]);
    }
}
