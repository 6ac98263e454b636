//! Compact per-person state (40 bytes inline, plus one heap block holding id and address) and
//! the chunked slab that stores it.

use common::codec::changelog::{self, PersonSnapshot};
use common::record::Millis;

// The persisted bits are the changelog format's: one definition, so a snapshot's flags are
// the state's flags without a translation table.
/// Registered (has an address, has deadlines).
pub(crate) const REGISTERED: u8 = changelog::REGISTERED;
/// Registered and a silence notice was sent for the current silence.
pub(crate) const NOTICED: u8 = changelog::NOTICED;
/// Not registered because of a deregistration (cleared by the next registration).
pub(crate) const DEREGISTERED: u8 = changelog::DEREGISTERED;
/// Not registered and the `unregistered_contact` event was already sent.
pub(crate) const UNREG_SENT: u8 = changelog::UNREG_SENT;
/// The bits that are part of the persisted state; the rest are in-memory bookkeeping.
pub(crate) const PERSISTED: u8 = changelog::PERSON_FLAGS;
/// The person's live deadline entry is in a wheel slot (bucket in `sched`).
pub(crate) const IN_RING: u8 = 16;
/// The person's live deadline entry is in the wheel's due heap.
pub(crate) const IN_HEAP: u8 = 32;
/// Changed since the last `take_dirty`.
pub(crate) const DIRTY: u8 = 64;

/// `seq` shares a word with the flags: 24 bits are far more transitions than a person can
/// make, and keeping the struct at 40 bytes matters at 10M persons.
pub(crate) const SEQ_MASK: u32 = PersonSnapshot::SEQ_LIMIT - 1;
const _: () = assert!(PERSISTED & (IN_RING | IN_HEAP | DIRTY) == 0);

#[derive(Debug)]
pub(crate) struct Person {
    // Layout: 16 + 8 + 8 + 4 + 4 = 40 bytes (asserted in tests).
    /// LEB128 id length, id bytes, address bytes (empty unless registered). One allocation
    /// for both strings saves 16 bytes per person over two boxes.
    key: Box<[u8]>,
    /// Server time of the last contact.
    pub lc_real: Millis,
    /// Virtual time of the last contact; `lc_real - lc_virt` is the outage excluded before it.
    pub lc_virt: Millis,
    /// Wrapping bucket number of the live ring entry (valid while `IN_RING`).
    pub sched: u32,
    /// `seq << 8 | flags`.
    meta: u32,
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

impl Person {
    pub fn new(id: &str, address: &str, lc_real: Millis, lc_virt: Millis, flags: u8) -> Self {
        let mut p = Person {
            key: Box::new([]),
            lc_real,
            lc_virt,
            sched: 0,
            meta: flags as u32,
        };
        p.rebuild_key(id.as_bytes(), address);
        p
    }

    fn rebuild_key(&mut self, id: &[u8], address: &str) {
        let mut k = Vec::with_capacity(id.len() + address.len() + 2);
        varint(id.len(), &mut k);
        k.extend_from_slice(id);
        k.extend_from_slice(address.as_bytes());
        self.key = k.into_boxed_slice();
    }

    #[inline]
    fn id_span(&self) -> (usize, usize) {
        let (mut len, mut shift, mut i) = (0usize, 0u32, 0usize);
        loop {
            let b = self.key[i];
            len |= ((b & 0x7f) as usize) << shift;
            i += 1;
            if b < 0x80 {
                return (i, len);
            }
            shift += 7;
        }
    }

    /// First byte of the id/address block (to bring it into cache).
    #[inline]
    pub fn key_first_byte(&self) -> u8 {
        self.key.first().copied().unwrap_or(0)
    }

    /// Address of the id/address block (for prefetching).
    #[inline]
    pub fn key_ptr(&self) -> *const u8 {
        self.key.as_ptr()
    }

    #[inline]
    pub fn id_bytes(&self) -> &[u8] {
        let (start, len) = self.id_span();
        &self.key[start..start + len]
    }

    pub fn id(&self) -> &str {
        // Built from &str in `rebuild_key`, so this cannot fail.
        std::str::from_utf8(self.id_bytes()).unwrap_or_default()
    }

    pub fn address(&self) -> &str {
        let (start, len) = self.id_span();
        std::str::from_utf8(&self.key[start + len..]).unwrap_or_default()
    }

    pub fn set_address(&mut self, address: &str) {
        if self.address() != address {
            let id = self.id_bytes().to_vec();
            self.rebuild_key(&id, address);
        }
    }

    #[inline]
    pub fn flags(&self) -> u8 {
        self.meta as u8
    }
    #[inline]
    pub fn has(&self, f: u8) -> bool {
        self.flags() & f != 0
    }
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.meta = (self.meta & !0xff) | flags as u32;
    }
    #[inline]
    pub fn seq(&self) -> u32 {
        self.meta >> 8
    }
    /// Returns the current sequence number and advances it (24-bit, wrapping).
    pub fn next_seq(&mut self) -> u32 {
        let s = self.seq();
        self.meta = (((s + 1) & SEQ_MASK) << 8) | (self.meta & 0xff);
        s
    }

    /// The persisted state, borrowing the address (nothing is copied).
    pub fn snapshot(&self) -> PersonSnapshot<'_> {
        PersonSnapshot {
            flags: self.flags() & PERSISTED,
            seq: self.seq(),
            last_contact_at: self.lc_real,
            last_contact_virtual: self.lc_virt,
            address: self.address(),
        }
    }

    /// A person as its changelog snapshot (already checked by the codec) describes it.
    pub fn from_snapshot(id: &str, s: &PersonSnapshot<'_>) -> Person {
        let mut p = Person::new(
            id,
            s.address,
            s.last_contact_at,
            s.last_contact_virtual,
            s.flags,
        );
        p.meta |= (s.seq & SEQ_MASK) << 8;
        p
    }
}

const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Append-only storage indexed by `u32`. Fixed-size chunks bound the growth slack to one
/// chunk (a single `Vec` would double and waste up to half its capacity at 10M persons).
#[derive(Debug, Default)]
pub(crate) struct Slab {
    chunks: Vec<Vec<Person>>,
    len: u32,
}

impl Slab {
    #[inline]
    pub fn len(&self) -> u32 {
        self.len
    }
    #[inline]
    pub fn get(&self, i: u32) -> &Person {
        &self.chunks[(i >> CHUNK_BITS) as usize][i as usize & (CHUNK - 1)]
    }
    #[inline]
    pub fn get_mut(&mut self, i: u32) -> &mut Person {
        &mut self.chunks[(i >> CHUNK_BITS) as usize][i as usize & (CHUNK - 1)]
    }
    pub fn push(&mut self, p: Person) -> u32 {
        assert!(
            self.len < u32::MAX,
            "more than 4 billion persons in one partition"
        );
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::new());
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push(p);
        }
        self.len += 1;
        self.len - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Person>(), 40);
    }

    #[test]
    fn key_block_and_snapshot_round_trip() {
        let long_id = "x".repeat(300); // two-byte length prefix
        for id in ["p1", long_id.as_str(), ""] {
            let mut p = Person::new(id, "Tverskaya 1", 10, 7, REGISTERED | NOTICED);
            assert_eq!(p.id(), id);
            assert_eq!(p.address(), "Tverskaya 1");
            assert_eq!(p.next_seq(), 0);
            assert_eq!(p.next_seq(), 1);
            let mut b = Vec::new();
            p.snapshot().encode(&mut b);
            assert_eq!(b[0], changelog::PERSON_VERSION);
            let q = Person::from_snapshot(id, &PersonSnapshot::decode(&b).unwrap());
            assert_eq!(
                (q.id(), q.address(), q.seq(), q.lc_real, q.lc_virt),
                (id, "Tverskaya 1", 2, 10, 7)
            );
            assert_eq!(q.flags(), REGISTERED | NOTICED);
            p.set_address("Arbat 2");
            assert_eq!((p.id(), p.address()), (id, "Arbat 2"));
        }
    }

    #[test]
    fn snapshot_keeps_only_persisted_flags() {
        let p = Person::new("p", "a", 1, 1, REGISTERED | IN_RING | DIRTY);
        assert_eq!(p.snapshot().flags, REGISTERED);
    }

    #[test]
    fn seq_wraps_at_24_bits_without_touching_flags() {
        let mut p = Person::new("p", "", 0, 0, UNREG_SENT | DIRTY);
        p.meta |= SEQ_MASK << 8;
        assert_eq!(p.next_seq(), SEQ_MASK);
        assert_eq!(p.seq(), 0);
        assert_eq!(p.flags(), UNREG_SENT | DIRTY);
    }
}
