//! The changelog topic: the processor's state, compacted by key, one partition per contacts
//! partition. Two kinds of record, told apart by the key:
//!
//! - key = the person id (UTF-8) → a [`PersonSnapshot`];
//! - key = [`CLOCK_KEY`] → the partition's [`ClockSnapshot`].
//!
//! Values are binary, little-endian, with a version marker in the first byte. The format is
//! what the running system has written since version 1; a change needs a new version (and the
//! old one still decoded), because a partition is restored from whatever its changelog holds.
//!
//! ```text
//! person: version=1 u8 | flags u8 | seq u32 | last_contact_at i64 | last_contact_virtual i64
//!         | address bytes to the end (UTF-8, empty unless registered)
//! clock:  version=1 u8 | started u8 (0/1) | stream_time i64 | excluded_outage_ms i64
//! ```
//!
//! Decoding borrows (the address is a slice of the value) and checks every invariant a
//! snapshot written by the detector holds, so a corrupt record is refused at restore, not
//! acted on.

use crate::record::Millis;

/// Changelog key of a partition's clock. Person ids never start with a NUL byte (ingest only
/// accepts printable ids).
pub const CLOCK_KEY: &[u8] = b"\0clock";

/// First byte of every person snapshot.
pub const PERSON_VERSION: u8 = 1;
/// First byte of every clock snapshot.
pub const CLOCK_VERSION: u8 = 1;

/// [`PersonSnapshot::flags`]: registered (has an address and deadlines).
pub const REGISTERED: u8 = 1;
/// [`PersonSnapshot::flags`]: registered and a silence notice was sent for the current silence.
pub const NOTICED: u8 = 2;
/// [`PersonSnapshot::flags`]: not registered because of a deregistration.
pub const DEREGISTERED: u8 = 4;
/// [`PersonSnapshot::flags`]: not registered and `unregistered_contact` was already sent.
pub const UNREG_SENT: u8 = 8;
/// Every bit a person snapshot may carry.
pub const PERSON_FLAGS: u8 = REGISTERED | NOTICED | DEREGISTERED | UNREG_SENT;

/// Why a changelog value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangelogError {
    #[error("truncated ({len} bytes, at least {min} needed)")]
    Truncated { len: usize, min: usize },
    #[error("length {len} != {expected}")]
    Length { len: usize, expected: usize },
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    #[error("inconsistent flags {0:#x}")]
    InconsistentFlags(u8),
    #[error("seq {0} out of range")]
    SeqOutOfRange(u32),
    #[error("virtual last contact after real one")]
    VirtualAfterReal,
    #[error("address is not UTF-8")]
    AddressNotUtf8,
    #[error("address without registration")]
    AddressWithoutRegistration,
    #[error("bad started flag {0}")]
    BadStartedFlag(u8),
    #[error("negative excluded outage")]
    NegativeExcludedOutage,
}

/// One person's persisted state (the value under its person id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonSnapshot<'a> {
    /// A combination of [`REGISTERED`], [`NOTICED`], [`DEREGISTERED`], [`UNREG_SENT`].
    pub flags: u8,
    /// Transitions so far (the next event's sequence number), below [`PersonSnapshot::SEQ_LIMIT`].
    pub seq: u32,
    /// Server time of the last contact.
    pub last_contact_at: Millis,
    /// Virtual time of the last contact (`last_contact_at` minus the outage excluded before it).
    pub last_contact_virtual: Millis,
    /// The declared address; empty unless registered.
    pub address: &'a str,
}

impl<'a> PersonSnapshot<'a> {
    /// Bytes before the address.
    pub const HEADER: usize = 1 + 1 + 4 + 8 + 8;
    /// `seq` is a 24-bit counter in the detector.
    pub const SEQ_LIMIT: u32 = 1 << 24;

    /// Appends the encoded snapshot to `out` (no allocation beyond `out`'s growth).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(Self::HEADER + self.address.len());
        out.push(PERSON_VERSION);
        out.push(self.flags);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.last_contact_at.to_le_bytes());
        out.extend_from_slice(&self.last_contact_virtual.to_le_bytes());
        out.extend_from_slice(self.address.as_bytes());
    }

    /// Decodes and checks a snapshot written by [`PersonSnapshot::encode`]; the address
    /// borrows from `b`.
    pub fn decode(b: &'a [u8]) -> Result<PersonSnapshot<'a>, ChangelogError> {
        if b.len() < Self::HEADER {
            return Err(ChangelogError::Truncated {
                len: b.len(),
                min: Self::HEADER,
            });
        }
        if b[0] != PERSON_VERSION {
            return Err(ChangelogError::UnknownVersion(b[0]));
        }
        let flags = b[1];
        let registered = flags & REGISTERED != 0;
        if flags & !PERSON_FLAGS != 0
            || (flags & NOTICED != 0 && !registered)
            || (registered && flags & (DEREGISTERED | UNREG_SENT) != 0)
        {
            return Err(ChangelogError::InconsistentFlags(flags));
        }
        let seq = u32::from_le_bytes(word(&b[2..6]));
        if seq >= Self::SEQ_LIMIT {
            return Err(ChangelogError::SeqOutOfRange(seq));
        }
        let last_contact_at = i64::from_le_bytes(word(&b[6..14]));
        let last_contact_virtual = i64::from_le_bytes(word(&b[14..22]));
        if last_contact_virtual > last_contact_at {
            return Err(ChangelogError::VirtualAfterReal);
        }
        let address =
            std::str::from_utf8(&b[Self::HEADER..]).map_err(|_| ChangelogError::AddressNotUtf8)?;
        if !registered && !address.is_empty() {
            return Err(ChangelogError::AddressWithoutRegistration);
        }
        Ok(PersonSnapshot {
            flags,
            seq,
            last_contact_at,
            last_contact_virtual,
            address,
        })
    }
}

/// A partition's clock (the value under [`CLOCK_KEY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSnapshot {
    /// A record has set stream time.
    pub started: bool,
    /// The largest `received_at` seen.
    pub stream_time: Millis,
    /// Outage time excluded from silences so far, never negative.
    pub excluded_outage_ms: i64,
}

impl ClockSnapshot {
    /// Every clock snapshot has exactly this length.
    pub const LEN: usize = 1 + 1 + 8 + 8;

    /// The encoded snapshot (fixed size, no allocation).
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = CLOCK_VERSION;
        b[1] = u8::from(self.started);
        b[2..10].copy_from_slice(&self.stream_time.to_le_bytes());
        b[10..18].copy_from_slice(&self.excluded_outage_ms.to_le_bytes());
        b
    }

    /// Decodes and checks a snapshot written by [`ClockSnapshot::encode`].
    pub fn decode(b: &[u8]) -> Result<ClockSnapshot, ChangelogError> {
        if b.len() != Self::LEN {
            return Err(ChangelogError::Length {
                len: b.len(),
                expected: Self::LEN,
            });
        }
        if b[0] != CLOCK_VERSION {
            return Err(ChangelogError::UnknownVersion(b[0]));
        }
        if b[1] > 1 {
            return Err(ChangelogError::BadStartedFlag(b[1]));
        }
        let excluded_outage_ms = i64::from_le_bytes(word(&b[10..18]));
        if excluded_outage_ms < 0 {
            return Err(ChangelogError::NegativeExcludedOutage);
        }
        Ok(ClockSnapshot {
            started: b[1] == 1,
            stream_time: i64::from_le_bytes(word(&b[2..10])),
            excluded_outage_ms,
        })
    }
}

/// A fixed-size little-endian word from a slice whose length the caller checked.
fn word<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().unwrap_or([0; N])
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_756_684_800_000;

    /// Bytes as the running system (detector snapshot format version 1) writes them. Changing
    /// them would make every stored changelog unrestorable.
    #[test]
    fn golden_bytes_of_version_1() {
        let p = PersonSnapshot {
            flags: REGISTERED | NOTICED,
            seq: 0x0001_0203,
            last_contact_at: T0,
            last_contact_virtual: T0 - 5,
            address: "Arbat 1",
        };
        let mut b = Vec::new();
        p.encode(&mut b);
        let golden: &[u8] = &[
            0x01, 0x03, 0x03, 0x02, 0x01, 0x00, // version, flags, seq
            0x00, 0xd0, 0x92, 0x02, 0x99, 0x01, 0x00, 0x00, // last_contact_at
            0xfb, 0xcf, 0x92, 0x02, 0x99, 0x01, 0x00, 0x00, // last_contact_virtual
            b'A', b'r', b'b', b'a', b't', b' ', b'1',
        ];
        assert_eq!(b, golden);
        assert_eq!(PersonSnapshot::decode(golden), Ok(p));

        let c = ClockSnapshot {
            started: true,
            stream_time: T0,
            excluded_outage_ms: 7_200_000,
        };
        let golden: [u8; 18] = [
            0x01, 0x01, // version, started
            0x00, 0xd0, 0x92, 0x02, 0x99, 0x01, 0x00, 0x00, // stream_time
            0x00, 0xdd, 0x6d, 0x00, 0x00, 0x00, 0x00, 0x00, // excluded_outage_ms
        ];
        assert_eq!(c.encode(), golden);
        assert_eq!(ClockSnapshot::decode(&golden), Ok(c));
    }

    #[test]
    fn round_trips_and_borrows() {
        for address in ["", "Tverskaya 1", "ул. Арбат, д. 1"] {
            let p = PersonSnapshot {
                flags: if address.is_empty() {
                    UNREG_SENT
                } else {
                    REGISTERED
                },
                seq: PersonSnapshot::SEQ_LIMIT - 1,
                last_contact_at: -3,
                last_contact_virtual: -10,
                address,
            };
            let mut b = vec![0xaa]; // appends, keeps what is there
            p.encode(&mut b);
            assert_eq!(b[0], 0xaa);
            let q = PersonSnapshot::decode(&b[1..]).unwrap();
            assert_eq!(q, p);
            assert!(std::ptr::eq(
                q.address.as_bytes(),
                &b[1 + PersonSnapshot::HEADER..]
            ));
        }
        let c = ClockSnapshot {
            started: false,
            stream_time: 0,
            excluded_outage_ms: 0,
        };
        assert_eq!(ClockSnapshot::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        use ChangelogError::*;
        let mut good = Vec::new();
        PersonSnapshot {
            flags: REGISTERED,
            seq: 0,
            last_contact_at: 1,
            last_contact_virtual: 1,
            address: "a",
        }
        .encode(&mut good);
        let person = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            PersonSnapshot::decode(&v).map(|_| ())
        };
        assert_eq!(
            person(&|v| v.truncate(10)),
            Err(Truncated { len: 10, min: 22 })
        );
        assert_eq!(person(&|v| v[0] = 9), Err(UnknownVersion(9)));
        assert_eq!(person(&|v| v[1] = NOTICED), Err(InconsistentFlags(NOTICED)));
        assert_eq!(
            person(&|v| v[1] = REGISTERED | DEREGISTERED),
            Err(InconsistentFlags(5))
        );
        assert_eq!(
            person(&|v| v[1] = 16 | REGISTERED),
            Err(InconsistentFlags(17))
        );
        assert_eq!(person(&|v| v[5] = 1), Err(SeqOutOfRange(1 << 24)));
        assert_eq!(person(&|v| v[14] = 2), Err(VirtualAfterReal));
        assert_eq!(person(&|v| v.push(0xff)), Err(AddressNotUtf8));
        assert_eq!(
            person(&|v| v[1] = UNREG_SENT),
            Err(AddressWithoutRegistration)
        );

        let good = ClockSnapshot {
            started: true,
            stream_time: 5,
            excluded_outage_ms: 1,
        }
        .encode();
        let clock = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.to_vec();
            f(&mut v);
            ClockSnapshot::decode(&v).map(|_| ())
        };
        assert_eq!(
            clock(&|v| v.truncate(5)),
            Err(Length {
                len: 5,
                expected: 18
            })
        );
        assert_eq!(clock(&|v| v[0] = 7), Err(UnknownVersion(7)));
        assert_eq!(clock(&|v| v[1] = 2), Err(BadStartedFlag(2)));
        assert_eq!(clock(&|v| v[17] = 0x80), Err(NegativeExcludedOutage));
    }
}
