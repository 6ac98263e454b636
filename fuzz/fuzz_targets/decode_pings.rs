//! Fuzzes ingest's request decoding and validation: arbitrary bytes must never panic, and
//! whatever is accepted must satisfy the documented bounds.
#![no_main]

use ingest::decode::{DecodeError, Limits, MAX_DETAILS, decode_pings, decode_registration};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_756_684_800_000;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    match decode_pings(data, &limits, NOW) {
        Ok(pings) => {
            assert!(!pings.is_empty() && pings.len() <= limits.max_batch);
            for p in pings {
                assert!(p.lat.is_finite() && (-90.0..=90.0).contains(&p.lat));
                assert!(p.lon.is_finite() && (-180.0..=180.0).contains(&p.lon));
                assert!(p.device_ts <= NOW + limits.max_future_skew_ms);
                assert!(p.device_ts >= NOW - limits.max_age_ms);
                assert!(p.accuracy_m.is_none_or(|a| a.is_finite() && a >= 0.0));
            }
        }
        Err(DecodeError::Invalid { details, .. }) => {
            assert!(!details.is_empty() && details.len() <= MAX_DETAILS)
        }
        Err(DecodeError::Malformed { .. }) => {}
    }
    if let Ok(r) = decode_registration(data) {
        let n = r.address.chars().count();
        assert!((1..=500).contains(&n));
        assert_eq!(r.lat.is_some(), r.lon.is_some());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ingest::decode::parse_rfc3339(s);
    }
});
