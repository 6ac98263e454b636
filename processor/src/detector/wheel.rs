//! Deadline queue in virtual time: a ring of buckets plus a small heap for the buckets
//! already reached.
//!
//! Each person has at most one live entry, placed at or before their actual deadline. A
//! contact only moves a deadline later, so it does not touch the wheel; when the entry comes
//! due the real deadline is recomputed and the entry either fires or moves (lazy
//! rescheduling). That makes a record O(1) amortised: one reschedule per silence threshold,
//! not one per contact. The only move to an *earlier* deadline is `resumed` (from the
//! deregistration deadline back to the notice deadline); it leaves a stale entry behind that
//! is recognised by `sched` / the `IN_RING` flag and skipped.

use super::person::{IN_HEAP, IN_RING, NOTICED, Person, REGISTERED, Slab};
use common::record::Millis;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Ring size target; the bucket width is chosen so the ring spans the longest deadline.
const TARGET_SLOTS: i64 = 1 << 16;

/// The next deadline of a person in virtual time, if any: the notice at silence ≥
/// `notice`, the deregistration at silence > `dereg`.
#[inline]
pub(crate) fn deadline(p: &Person, notice: i64, dereg: i64) -> Option<Millis> {
    match p.flags() & (REGISTERED | NOTICED) {
        REGISTERED => Some(p.lc_virt + notice),
        f if f == REGISTERED | NOTICED => Some(p.lc_virt + dereg + 1),
        _ => None,
    }
}

#[derive(Debug)]
pub(crate) struct Wheel {
    width: i64,
    slots: Vec<Vec<u32>>,
    /// Buckets before `cursor` have been moved into `due`.
    cursor: i64,
    started: bool,
    /// Entries of reached buckets, by (virtual deadline, slab index).
    due: BinaryHeap<Reverse<(Millis, u32)>>,
}

impl Wheel {
    /// `notice` and `dereg` in ms. The width never exceeds `notice`, so a `resumed` person's
    /// new notice deadline always lands in a bucket not yet reached (see `schedule_earlier`).
    pub fn new(notice: i64, dereg: i64) -> Self {
        let width = ((dereg + 1) / TARGET_SLOTS).clamp(1, notice.max(1));
        let n = ((dereg + 1) / width + 3) as usize;
        Wheel {
            width,
            slots: (0..n).map(|_| Vec::new()).collect(),
            cursor: 0,
            started: false,
            due: BinaryHeap::new(),
        }
    }

    #[inline]
    fn bucket(&self, t: Millis) -> i64 {
        t.div_euclid(self.width)
    }

    /// Fixes the origin; buckets before `v`'s are considered reached.
    pub fn start(&mut self, v: Millis) {
        if !self.started {
            self.started = true;
            self.cursor = self.bucket(v);
        }
    }

    /// Places the person's (single) entry at virtual deadline `d`.
    pub fn insert(&mut self, slab: &mut Slab, idx: u32, d: Millis) {
        let b = self.bucket(d);
        let p = slab.get_mut(idx);
        if b < self.cursor {
            p.set_flags((p.flags() & !IN_RING) | IN_HEAP);
            self.due.push(Reverse((d, idx)));
        } else {
            // Beyond the ring's reach (only after odd restores): park it in the farthest
            // slot; lazy rescheduling moves it on. Early is always safe, late never is.
            let n = self.slots.len() as i64;
            let b = b.min(self.cursor + n - 1);
            p.sched = b as u32;
            p.set_flags(p.flags() | IN_RING);
            self.slots[b.rem_euclid(n) as usize].push(idx);
        }
    }

    /// Moves the entry earlier if `d` is before it (used by `resumed`); otherwise the
    /// existing entry already comes due in time.
    pub fn schedule_earlier(&mut self, slab: &mut Slab, idx: u32, d: Millis) {
        let p = slab.get(idx);
        if p.has(IN_HEAP) {
            // Heap entries are in reached buckets, i.e. before V + width <= V + notice <= d.
            return;
        }
        if p.has(IN_RING) && (self.bucket(d) as u32).wrapping_sub(p.sched) as i32 >= 0 {
            return;
        }
        self.insert(slab, idx, d);
    }

    /// Moves every bucket up to and including `v`'s into the due heap, rescheduling entries
    /// whose deadline has moved on.
    pub fn reach(&mut self, slab: &mut Slab, v: Millis, notice: i64, dereg: i64) {
        let last = self.bucket(v);
        let n = self.slots.len() as i64;
        while self.cursor <= last {
            let b = self.cursor;
            // Taken, not swapped: entries re-inserted into this very slot (one revolution
            // later) must land in the slot, and the allocation is freed so bursty buckets
            // do not pin memory.
            let entries = std::mem::take(&mut self.slots[b.rem_euclid(n) as usize]);
            self.cursor += 1;
            for &idx in &entries {
                let p = slab.get_mut(idx);
                // Stale (left behind by `schedule_earlier`) or a duplicate of one already
                // taken from this slot.
                if !p.has(IN_RING) || p.sched != b as u32 {
                    continue;
                }
                p.set_flags(p.flags() & !IN_RING);
                let Some(d) = deadline(p, notice, dereg) else {
                    continue;
                };
                if self.bucket(d) > b {
                    self.insert(slab, idx, d);
                } else {
                    p.set_flags(p.flags() | IN_HEAP);
                    self.due.push(Reverse((d, idx)));
                }
            }
        }
    }

    /// Collects into `batch` every person whose deadline is the earliest one `<= v`, and
    /// returns that deadline. Entries whose deadline moved on are rescheduled.
    pub fn pop_due(
        &mut self,
        slab: &mut Slab,
        v: Millis,
        notice: i64,
        dereg: i64,
        batch: &mut Vec<u32>,
    ) -> Option<Millis> {
        batch.clear();
        loop {
            let &Reverse((vd, _)) = self.due.peek()?;
            if vd > v {
                return None;
            }
            while let Some(&Reverse((vd2, idx))) = self.due.peek() {
                if vd2 != vd {
                    break;
                }
                self.due.pop();
                let p = slab.get_mut(idx);
                p.set_flags(p.flags() & !IN_HEAP);
                match deadline(p, notice, dereg) {
                    None => {}
                    Some(d) if d > vd => self.insert(slab, idx, d),
                    Some(_) => batch.push(idx),
                }
            }
            if !batch.is_empty() {
                return Some(vd);
            }
        }
    }
}
