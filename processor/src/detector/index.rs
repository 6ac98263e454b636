//! Person id → slab index: an insert-only open-addressing table (linear probing, one tag
//! byte and one `u32` per slot, the same 5 bytes per slot as a SwissTable of `u32`).
//!
//! Written here rather than using `hashbrown` because the detector's batch path needs the
//! address of a key's home slot *before* looking it up, to prefetch it (see
//! `Detector::apply_batch`); no general-purpose map exposes that. The detector never forgets
//! a person, so there is no deletion and no tombstone.

use super::prefetch;

/// Tag of an empty slot; occupied tags have the high bit set.
const EMPTY: u8 = 0;

#[derive(Debug, Default)]
pub(crate) struct Index {
    tags: Vec<u8>,
    slots: Vec<u32>,
    len: usize,
}

#[inline]
fn tag(h: u64) -> u8 {
    0x80 | (h >> 57) as u8
}

impl Index {
    #[inline]
    fn mask(&self) -> usize {
        self.tags.len().wrapping_sub(1)
    }

    /// The slab index stored under `h` for which `eq` holds.
    #[inline]
    pub fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let (t, mask) = (tag(h), self.mask());
        let mut i = h as usize & mask;
        loop {
            match self.tags[i] {
                EMPTY => return None,
                c if c == t && eq(self.slots[i]) => return Some(self.slots[i]),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The first entry whose tag matches `h` — almost always the person, but unverified:
    /// only for prefetching.
    #[inline]
    pub fn candidate(&self, h: u64) -> Option<u32> {
        self.find(h, |_| true)
    }

    /// Hints the CPU to load `h`'s home slot.
    #[inline]
    pub fn prefetch(&self, h: u64) {
        if self.len > 0 {
            let i = h as usize & self.mask();
            prefetch(self.tags.as_ptr().wrapping_add(i));
            prefetch(self.slots.as_ptr().wrapping_add(i));
        }
    }

    /// Adds `idx` under `h`; the caller guarantees the key is not present. `rehash` gives
    /// the hash of an existing entry when the table grows.
    pub fn insert_unique(&mut self, h: u64, idx: u32, rehash: impl Fn(u32) -> u64) {
        // Grow at 4/5 load: linear probing stays short, and the table is 5 bytes per slot.
        if (self.len + 1) * 5 > self.tags.len() * 4 {
            let cap = (self.tags.len() * 2).max(16);
            let old = std::mem::take(&mut self.slots);
            let old_tags = std::mem::replace(&mut self.tags, vec![EMPTY; cap]);
            self.slots = vec![0; cap];
            for (t, s) in old_tags.into_iter().zip(old) {
                if t != EMPTY {
                    self.place(rehash(s), s);
                }
            }
        }
        self.place(h, idx);
        self.len += 1;
    }

    fn place(&mut self, h: u64, idx: u32) {
        let mask = self.mask();
        let mut i = h as usize & mask;
        while self.tags[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.tags[i] = tag(h);
        self.slots[i] = idx;
    }

    /// Heap bytes held.
    #[cfg(test)]
    pub fn allocation_size(&self) -> usize {
        self.tags.capacity() + self.slots.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_through_growth_and_collisions() {
        let mut ix = Index::default();
        // Hashes that collide on the home slot and on the tag, to exercise probing.
        let h = |k: u32| u64::from(k % 7) << 57 | u64::from(k % 5);
        assert_eq!(ix.find(h(1), |_| true), None);
        for k in 0..2_000u32 {
            ix.insert_unique(h(k), k, h);
        }
        for k in 0..2_000u32 {
            assert_eq!(ix.find(h(k), |i| i == k), Some(k));
        }
        assert_eq!(ix.find(h(3), |i| i == 2_001), None);
        assert!(ix.allocation_size() >= 2_000 * 5);
    }
}
