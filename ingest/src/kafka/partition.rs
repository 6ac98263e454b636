//! The partition librdkafka's default partitioner picks for a keyed record, computed by us.
//!
//! librdkafka's default `partitioner` is `consistent_random` (`src/rdkafka_msg.c`,
//! `rd_kafka_msg_partitioner_consistent_random`): a non-empty key goes to
//! `rd_crc32(key) % partition_cnt` (`rd_kafka_msg_partitioner_consistent`), an empty or absent
//! key to a random or sticky partition. `rd_crc32` is the standard CRC-32 (IEEE 802.3,
//! reflected polynomial `0xEDB88320`, initial value and final xor `0xFFFFFFFF`: zlib's `crc32`,
//! which librdkafka uses when built with zlib, and its own table otherwise); the modulo is
//! unsigned. [`consistent`] is exactly that for non-empty keys, so a record sent to the
//! partition it returns lands where librdkafka's partitioner (and any other default-configured
//! librdkafka producer) would put it for the same partition count. For an empty key it returns
//! [`UNASSIGNED`], leaving the choice to librdkafka.
//!
//! A change of the partition count moves keys to other partitions, with this function exactly
//! as with librdkafka's partitioner: `crc % n` differs for most keys when `n` changes.

/// librdkafka's "let the partitioner choose" partition (`RD_KAFKA_PARTITION_UA`).
pub const UNASSIGNED: i32 = -1;

/// CRC-32 (IEEE), the `rd_crc32` of librdkafka (`crc32fast` computes the same standard CRC).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The partition librdkafka's `consistent_random` (and `consistent`) partitioner picks for a
/// non-empty `key` among `partitions` partitions; [`UNASSIGNED`] for an empty key or an
/// unknown (non-positive) partition count.
pub fn consistent(key: &[u8], partitions: i32) -> i32 {
    if key.is_empty() || partitions <= 0 {
        return UNASSIGNED;
    }
    // `partitions` is positive, so the remainder is below it and fits an i32.
    (crc32(key) % partitions as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_values() {
        // The CRC-32/ISO-HDLC check value, and a few well-known ones.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"a"), 0xE8B7_BE43);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn consistent_is_crc_modulo_count_and_leaves_the_rest_to_librdkafka() {
        assert_eq!(consistent(b"123456789", 1), 0);
        assert_eq!(consistent(b"123456789", 7), (0xCBF4_3926u32 % 7) as i32);
        // Above i32::MAX: the modulo is unsigned, as in C (`uint32_t % int32_t`).
        assert!(crc32(b"123456789") > i32::MAX as u32);
        assert_eq!(consistent(b"123456789", 6), (0xCBF4_3926u32 % 6) as i32);
        assert_eq!(consistent(b"", 6), UNASSIGNED);
        assert_eq!(consistent(b"person", 0), UNASSIGNED);
        assert_eq!(consistent(b"person", -1), UNASSIGNED);
        for n in 1..50 {
            for i in 0..200 {
                let p = consistent(format!("person-{i}").as_bytes(), n);
                assert!((0..n).contains(&p));
            }
        }
    }
}
