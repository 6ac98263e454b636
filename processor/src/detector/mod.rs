//! The per-person silence detector: a pure, synchronous state machine for one partition of
//! the contacts topic. Records in, [`PersonEvent`]s out; no I/O, no wall clock, no randomness,
//! so replaying the same records yields the same events byte for byte.
//!
//! # Time
//! - Liveness uses `received_at` (the server clock) only; `device_ts` never matters.
//! - *Stream time* `S` is the largest `received_at` seen. A record's *effective time* is
//!   `max(received_at, S)`: a record stamped earlier by another ingest instance (clock skew)
//!   counts as a contact at the current stream time. It never moves time back, errs by at most
//!   the skew and always in the person's favour, and keeps `last_contact_at` monotonic.
//! - *Outages*: when stream time jumps forward by a gap `G > clock.outage_after`, the platform
//!   was not receiving. Only the **last** `tick_interval` of the gap counts (the normal distance
//!   to the record that ended it); the first `G - tick_interval` is excluded from everyone's
//!   silence. The *virtual clock* `V = S - excluded` therefore advances by one tick over an
//!   outage, and deadlines live in virtual time, so an outage costs O(1), not O(persons).
//!
//! # States and events
//! Silence = `V_now - V_last_contact`. Deadlines: `silence_notice` when silence ≥
//! `notice_after`, `deregistered` when silence > `deregister_after` (i.e. at `+1 ms`). Their
//! `at` is the server time the threshold was crossed: `last_contact_at + threshold (+1 ms for
//! deregistration) + excluded_outage_ms`. Deadlines that stream time reaches are emitted before
//! the record that advanced it is applied, ordered by deadline, then person id (bytes), so the
//! order does not depend on memory layout or restore history. A contact at exactly the notice
//! threshold therefore yields `silence_notice` then `resumed`.
//!
//! A ping or a registration is a contact. Contact-triggered events (`registered`,
//! `address_changed`, `resumed`, `unregistered_contact`) have `at` = the contact's effective
//! time and describe the silence they end: `last_contact_at` is the person's previous contact
//! (or `at` if there was none) and `excluded_outage_ms` the outage excluded since it. A
//! registration after a notice is a contact that confirms the address, so it yields `resumed`
//! (before `address_changed` if the address differs).
//!
//! `event_id` = [`event_id`]`(person, kind, at, seq)` with `seq` a per-person transition counter,
//! which every event also carries (`PersonEvent::seq`): along one person's events `seq` counts
//! up by one and `at` never decreases, so `(at, seq)` orders them, within one millisecond too
//! (`person_status` in ClickHouse keeps the greatest; `tests/tests/person_status.rs`).
//!
//! Each person has one [`PersonStatus`], the status of their latest event
//! ([`EventKind::status`]); [`Detector::counts`] counts persons by it.
//!
//! # Persistence
//! [`Detector::drain_dirty`] gives each changed person's compact snapshot for a changelog
//! keyed by person id; [`Detector::clock_snapshot`] the partition clock. Both are the records
//! of [`common::codec::changelog`] (`PersonSnapshot`, `ClockSnapshot`); the detector converts
//! its state to and from them, borrowing the address either way. A fresh detector fed
//! the latest snapshot of every person plus the clock continues exactly as if never stopped.

mod error;
mod index;
mod person;
mod wheel;

pub use error::DetectorError;

use common::codec::changelog::{ClockSnapshot, PersonSnapshot};
use common::config::{ClockConfig, PolicyConfig};
use common::record::{Contact, ContactRef, EventKind, Millis, PersonEvent, PersonStatus, event_id};
use index::Index;
use person::{
    DEREGISTERED, DIRTY, IN_HEAP, IN_RING, NOTICED, PERSISTED, Person, REGISTERED, Slab, UNREG_SENT,
};
use wheel::{Wheel, deadline};

/// Records per prefetch group in [`Detector::apply_batch`]: enough independent misses in
/// flight to hide most of the memory latency, few enough that the prefetched lines are still
/// in L1/L2 when used. (A software pipeline with a fixed distance between the stages was
/// measured too and was slower.)
const GROUP: usize = 16;

/// Hints the CPU to bring the cache line holding `p` closer. Never dereferences `p`.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint; it does not fault or read memory in the Rust sense for
    // any address, valid or not, and SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Number of persons in each (disjoint) status: [`PersonStatus`], the meanings that
/// `person_status` in ClickHouse uses too (each is the status of the person's latest event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// [`PersonStatus::Registered`]: registered, no notice outstanding.
    pub registered: u64,
    /// [`PersonStatus::Silent`]: registered, silence notice sent for the current silence.
    pub silent_noticed: u64,
    /// [`PersonStatus::Deregistered`]: deregistered and not heard from since.
    pub deregistered: u64,
    /// [`PersonStatus::Unregistered`]: pinging without a registration (never registered, or
    /// pinged after a deregistration: `unregistered_contact` sent).
    pub unregistered_contact: u64,
}

impl StateCounts {
    /// The counts by status, in [`PersonStatus::ALL`] order.
    pub fn by_status(&self) -> [(PersonStatus, u64); 4] {
        [
            (PersonStatus::Registered, self.registered),
            (PersonStatus::Silent, self.silent_noticed),
            (PersonStatus::Deregistered, self.deregistered),
            (PersonStatus::Unregistered, self.unregistered_contact),
        ]
    }
}

/// The status index (into `counts`) of a person with `flags`. Mirrors
/// [`EventKind::status`] of the person's latest event: `unregistered_contact` is the latest
/// event exactly when `UNREG_SENT` is set (registering clears it), also after a
/// deregistration.
fn category(flags: u8) -> usize {
    if flags & REGISTERED != 0 {
        if flags & NOTICED != 0 { 1 } else { 0 }
    } else if flags & UNREG_SENT != 0 {
        3
    } else if flags & DEREGISTERED != 0 {
        2
    } else {
        3
    }
}

/// The [`PersonStatus`] of a person with `flags` (see [`category`]).
pub fn status_of(flags: u8) -> PersonStatus {
    PersonStatus::ALL[category(flags)]
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One person as the detector holds them ([`Detector::person`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonState<'a> {
    pub status: PersonStatus,
    /// The declared address; empty unless registered.
    pub address: &'a str,
    /// Server time of the last contact.
    pub last_contact_at: Millis,
    /// The sequence number the person's next event will carry.
    pub seq: u32,
}

/// The per-partition detector. See the module docs for the model.
#[derive(Debug)]
pub struct Detector {
    notice: i64,
    dereg: i64,
    tick: i64,
    outage_after: i64,
    /// A record (or a restored clock) has set stream time.
    started: bool,
    /// `apply` has been called; restoring is no longer allowed.
    applied: bool,
    stream: Millis,
    excluded: i64,
    slab: Slab,
    index: Index,
    wheel: Wheel,
    dirty: Vec<u32>,
    /// Restored persons not yet placed in the wheel (needs the restored clock first).
    pending: Vec<u32>,
    counts: [u64; 4],
    batch: Vec<u32>,
    /// Reused buffers of `apply_batch`.
    scratch_hashes: Vec<u64>,
    scratch_found: Vec<u32>,
}

#[inline]
fn hash(id: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id)
}

impl Detector {
    /// Builds a detector; every problem with the policy or clock is listed in the error.
    pub fn new(policy: PolicyConfig, clock: ClockConfig) -> Result<Detector, DetectorError> {
        let mut problems = policy.validate();
        let (notice, dereg) = (millis(policy.notice_after), millis(policy.deregister_after));
        let (tick, outage_after) = (millis(clock.tick_interval), millis(clock.outage_after));
        if problems.is_empty() && (notice < 1 || notice >= dereg) {
            problems.push(format!(
                "policy in whole milliseconds: notice_after ({notice} ms) must be at least 1 ms \
                 and shorter than deregister_after ({dereg} ms)"
            ));
        }
        if tick < 1 {
            problems.push("clock.tick_interval: must be at least 1 ms".into());
        }
        if outage_after <= tick {
            problems.push(format!(
                "clock.outage_after ({outage_after} ms) must be longer than clock.tick_interval \
                 ({tick} ms)"
            ));
        }
        if !problems.is_empty() {
            return Err(DetectorError::InvalidConfig { problems });
        }
        Ok(Detector {
            notice,
            dereg,
            tick,
            outage_after,
            started: false,
            applied: false,
            stream: 0,
            excluded: 0,
            slab: Slab::default(),
            index: Index::default(),
            wheel: Wheel::new(notice, dereg),
            dirty: Vec::new(),
            pending: Vec::new(),
            counts: [0; 4],
            batch: Vec::new(),
            scratch_hashes: Vec::new(),
            scratch_found: Vec::new(),
        })
    }

    /// Applies one record of the partition, appending the events it causes to `out`: first the
    /// deadlines that the advanced clock reached, then the record's own transitions.
    ///
    /// A convenience for tests and models holding owned [`Contact`]s: a one-record
    /// [`Detector::apply_batch`], the entry point the service and `detector_bench` use.
    pub fn apply(&mut self, c: &Contact, out: &mut Vec<PersonEvent>) {
        self.apply_batch(std::slice::from_ref(&c.as_ref()), out);
    }

    /// A tick at `received_at`, exactly as [`Detector::apply_batch`] applies one (a tick only
    /// advances the clock). For the fleet model in `tests/`, which drives the clock alone.
    pub fn apply_tick(&mut self, received_at: Millis, out: &mut Vec<PersonEvent>) {
        self.advance(received_at, out);
    }

    /// Applies the records of one partition in order, appending the events they cause to `out`
    /// in order: for each record, first the deadlines that the advanced clock reached, then
    /// the record's own transitions. The only way records enter the detector: the service
    /// feeds it each run of decoded messages of a poll, `detector_bench` measures it.
    ///
    /// The result does not depend on how records are split into calls (same events, same
    /// state as one call per record), but it is faster at millions of persons: each group of
    /// records has its index slots, then its person states, then its id blocks prefetched,
    /// stage by stage, before any of them is applied, so the dependent cache misses of
    /// different records overlap instead of queueing one after another. Prefetches are only
    /// hints: a person inserted earlier in the group or a table that grew makes one useless,
    /// never wrong.
    // The stages index three parallel arrays by record position; indices read clearest.
    #[allow(clippy::needless_range_loop)]
    pub fn apply_batch(&mut self, records: &[ContactRef<'_>], out: &mut Vec<PersonEvent>) {
        let n = records.len();
        let mut hashes = std::mem::take(&mut self.scratch_hashes);
        let mut found = std::mem::take(&mut self.scratch_found);
        hashes.clear();
        hashes.extend(
            records
                .iter()
                .map(|r| r.person_id().map_or(0, |id| hash(id.as_bytes()))),
        );
        found.clear();
        found.resize(n, u32::MAX);
        let is_person = |j: usize| records[j].person_id().is_some();
        for g in (0..n).step_by(GROUP) {
            let e = (g + GROUP).min(n);
            for j in g..e {
                if is_person(j) {
                    self.index.prefetch(hashes[j]);
                }
            }
            for k in g..e {
                if is_person(k)
                    && let Some(idx) = self.index.candidate(hashes[k])
                {
                    found[k] = idx;
                    let p: *const Person = self.slab.get(idx);
                    prefetch(p);
                    // A 40-byte state may straddle two cache lines.
                    prefetch(p.cast::<u8>().wrapping_add(39));
                }
            }
            for l in g..e {
                if found[l] != u32::MAX {
                    prefetch(self.slab.get(found[l]).key_ptr());
                }
            }
            for a in g..e {
                self.apply_one(&records[a], hashes[a], out);
            }
        }
        self.scratch_hashes = hashes;
        self.scratch_found = found;
    }

    /// One record; `h` is the hash of its person id (unused for a tick).
    #[inline]
    fn apply_one(&mut self, r: &ContactRef<'_>, h: u64, out: &mut Vec<PersonEvent>) {
        match r {
            ContactRef::Ping {
                person_id,
                received_at,
                ..
            } => {
                self.advance(*received_at, out);
                self.contact(person_id, h, None, out);
            }
            ContactRef::Registration {
                person_id,
                address,
                received_at,
                ..
            } => {
                self.advance(*received_at, out);
                self.contact(person_id, h, Some(address.as_ref()), out);
            }
            ContactRef::Tick { received_at, .. } => self.advance(*received_at, out),
        }
    }

    /// Stream time (largest `received_at` seen), `None` before the first record.
    pub fn stream_time(&self) -> Option<Millis> {
        self.started.then_some(self.stream)
    }

    /// Virtual time (stream time minus excluded outage), `None` before the first record.
    pub fn virtual_time(&self) -> Option<Millis> {
        self.started.then_some(self.stream - self.excluded)
    }

    /// Total outage time excluded from silences in this partition, ms.
    pub fn excluded_outage_ms(&self) -> i64 {
        self.excluded
    }

    /// Number of persons known to this partition.
    pub fn persons(&self) -> u64 {
        self.slab.len() as u64
    }

    /// One person's current state, `None` if this partition never saw them.
    pub fn person(&self, id: &str) -> Option<PersonState<'_>> {
        let slab = &self.slab;
        let idx = self.index.find(hash(id.as_bytes()), |i| {
            slab.get(i).id_bytes() == id.as_bytes()
        })?;
        let p = self.slab.get(idx);
        Some(PersonState {
            status: status_of(p.flags()),
            address: p.address(),
            last_contact_at: p.lc_real,
            seq: p.seq(),
        })
    }

    /// Persons by state.
    pub fn counts(&self) -> StateCounts {
        let c = self.counts;
        StateCounts {
            registered: c[0],
            silent_noticed: c[1],
            deregistered: c[2],
            unregistered_contact: c[3],
        }
    }

    // ---- clock ------------------------------------------------------------------------

    fn advance(&mut self, received_at: Millis, out: &mut Vec<PersonEvent>) {
        self.applied = true;
        if !self.started {
            self.started = true;
            self.stream = received_at;
        }
        self.wheel.start(self.stream - self.excluded);
        if !self.pending.is_empty() {
            self.schedule_pending();
        }
        if received_at > self.stream {
            let gap = received_at - self.stream;
            if gap > self.outage_after {
                self.excluded += gap - self.tick;
            }
            self.stream = received_at;
        }
        let v = self.stream - self.excluded;
        self.wheel.reach(&mut self.slab, v, self.notice, self.dereg);
        let mut batch = std::mem::take(&mut self.batch);
        while let Some(vd) =
            self.wheel
                .pop_due(&mut self.slab, v, self.notice, self.dereg, &mut batch)
        {
            if batch.len() > 1 {
                let slab = &self.slab;
                batch.sort_unstable_by(|&a, &b| slab.get(a).id_bytes().cmp(slab.get(b).id_bytes()));
            }
            for &idx in &batch {
                self.fire(idx, vd, out);
            }
        }
        self.batch = batch;
    }

    fn schedule_pending(&mut self) {
        for idx in std::mem::take(&mut self.pending) {
            let p = self.slab.get(idx);
            if p.has(IN_RING | IN_HEAP) {
                continue; // restored twice
            }
            if let Some(d) = deadline(p, self.notice, self.dereg) {
                self.wheel.insert(&mut self.slab, idx, d);
            }
        }
    }

    // ---- transitions ------------------------------------------------------------------

    /// A deadline came due at virtual time `vd`.
    fn fire(&mut self, idx: u32, vd: Millis, out: &mut Vec<PersonEvent>) {
        let excluded = self.excluded;
        let p = self.slab.get(idx);
        let (lc_real, lc_virt, flags) = (p.lc_real, p.lc_virt, p.flags());
        let silence_excluded = excluded - (lc_real - lc_virt);
        let at = vd + excluded;
        if flags & NOTICED == 0 {
            self.set_flags(idx, flags | NOTICED);
            self.emit(
                idx,
                EventKind::SilenceNotice,
                at,
                lc_real,
                silence_excluded,
                true,
                out,
            );
            self.wheel
                .insert(&mut self.slab, idx, lc_virt + self.dereg + 1);
        } else {
            self.emit(
                idx,
                EventKind::Deregistered,
                at,
                lc_real,
                silence_excluded,
                true,
                out,
            );
            self.set_flags(idx, (flags & !(REGISTERED | NOTICED)) | DEREGISTERED);
            // The event carries the last address; the state keeps none once deregistered.
            self.slab.get_mut(idx).set_address("");
        }
    }

    fn contact(
        &mut self,
        id: &str,
        h: u64,
        registration: Option<&str>,
        out: &mut Vec<PersonEvent>,
    ) {
        let t = self.stream;
        let v = self.stream - self.excluded;
        let slab = &self.slab;
        let found = self
            .index
            .find(h, |i| slab.get(i).id_bytes() == id.as_bytes());
        let Some(idx) = found else {
            let (flags, address, kind) = match registration {
                Some(a) => (REGISTERED, a, EventKind::Registered),
                None => (UNREG_SENT, "", EventKind::UnregisteredContact),
            };
            let idx = self.slab.push(Person::new(id, address, t, v, flags));
            let slab = &self.slab;
            self.index
                .insert_unique(h, idx, |i| hash(slab.get(i).id_bytes()));
            self.counts[category(flags)] += 1;
            self.emit(idx, kind, t, t, 0, registration.is_some(), out);
            if registration.is_some() {
                self.wheel.insert(&mut self.slab, idx, v + self.notice);
            }
            return;
        };

        let p = self.slab.get_mut(idx);
        let (prev_lc, prev_excl) = (p.lc_real, self.excluded - (p.lc_real - p.lc_virt));
        // Effective time never goes back, so both stay monotonic.
        p.lc_real = t;
        p.lc_virt = v;
        let flags = p.flags();
        self.mark_dirty(idx);
        let registered = flags & REGISTERED != 0;
        if registered && flags & NOTICED != 0 {
            self.set_flags(idx, flags & !NOTICED);
            self.emit(idx, EventKind::Resumed, t, prev_lc, prev_excl, true, out);
            // Back from the deregistration deadline to the (possibly earlier) notice one.
            self.wheel
                .schedule_earlier(&mut self.slab, idx, v + self.notice);
        }
        match registration {
            None if !registered && flags & UNREG_SENT == 0 => {
                self.set_flags(idx, flags | UNREG_SENT);
                self.emit(
                    idx,
                    EventKind::UnregisteredContact,
                    t,
                    prev_lc,
                    prev_excl,
                    false,
                    out,
                );
            }
            None => {}
            Some(address) if !registered => {
                self.set_flags(idx, (flags & !(DEREGISTERED | UNREG_SENT)) | REGISTERED);
                self.slab.get_mut(idx).set_address(address);
                self.emit(idx, EventKind::Registered, t, prev_lc, prev_excl, true, out);
                self.wheel
                    .schedule_earlier(&mut self.slab, idx, v + self.notice);
            }
            Some(address) if self.slab.get(idx).address() != address => {
                self.slab.get_mut(idx).set_address(address);
                self.emit(
                    idx,
                    EventKind::AddressChanged,
                    t,
                    prev_lc,
                    prev_excl,
                    true,
                    out,
                );
            }
            // Same address while registered: a contact, no event.
            Some(_) => {}
        }
    }

    /// Changes persisted flags, keeping the per-state counts right.
    fn set_flags(&mut self, idx: u32, flags: u8) {
        let p = self.slab.get_mut(idx);
        let before = category(p.flags());
        p.set_flags(flags);
        let after = category(flags);
        self.counts[before] -= 1;
        self.counts[after] += 1;
        self.mark_dirty(idx);
    }

    #[inline]
    fn mark_dirty(&mut self, idx: u32) {
        let p = self.slab.get_mut(idx);
        if !p.has(DIRTY) {
            p.set_flags(p.flags() | DIRTY);
            self.dirty.push(idx);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        idx: u32,
        kind: EventKind,
        at: Millis,
        last_contact_at: Millis,
        excluded_outage_ms: i64,
        with_address: bool,
        out: &mut Vec<PersonEvent>,
    ) {
        self.mark_dirty(idx);
        let p = self.slab.get_mut(idx);
        let seq = p.next_seq();
        let person_id = p.id().to_owned();
        out.push(PersonEvent {
            event_id: event_id(&person_id, kind, at, u64::from(seq)),
            person_id,
            kind,
            at,
            last_contact_at,
            notice_after_ms: self.notice,
            deregister_after_ms: self.dereg,
            excluded_outage_ms,
            address: with_address.then(|| p.address().to_owned()),
            seq: Some(seq),
        });
    }

    // ---- persistence ------------------------------------------------------------------

    /// Persons changed since the last call, with their snapshot (`None` would mean removed;
    /// the detector currently never forgets a person). Each person once, in no particular
    /// (but deterministic) order.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut v = Vec::with_capacity(self.dirty.len());
        self.drain_dirty(|id, bytes| {
            let id = String::from_utf8_lossy(id).into_owned();
            v.push((id, bytes.map(<[u8]>::to_vec)));
        });
        v
    }

    /// Allocation-free form of [`Detector::take_dirty`]: calls `f(person_id, snapshot)` for
    /// every person changed since the last call and clears the set. The id is given as the
    /// UTF-8 bytes it was applied with (a changelog key needs nothing else).
    pub fn drain_dirty(&mut self, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
        let mut buf = Vec::with_capacity(64);
        let mut dirty = std::mem::take(&mut self.dirty);
        // Slab order: neighbouring persons share cache lines and pages (2-3x faster drains
        // at millions of persons than change order).
        dirty.sort_unstable();
        for group in dirty.chunks(GROUP) {
            // Touch the group's states, then their id/address blocks, in tight loops of
            // independent loads so the misses overlap (measured: prefetch hints alone left
            // the drain at about one full miss per person).
            let mut touch = 0u8;
            for &idx in group {
                touch ^= self.slab.get(idx).flags();
            }
            for &idx in group {
                touch ^= self.slab.get(idx).key_first_byte();
            }
            std::hint::black_box(touch);
            for &idx in group {
                let p = self.slab.get_mut(idx);
                p.set_flags(p.flags() & !DIRTY);
                buf.clear();
                p.snapshot().encode(&mut buf);
                f(p.id_bytes(), Some(&buf));
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Number of persons changed since the last `take_dirty`.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// Restores one person from its changelog snapshot (later calls for the same id win).
    /// Only on a fresh detector, before the first `apply`.
    pub fn restore_person(&mut self, person_id: &str, bytes: &[u8]) -> Result<(), DetectorError> {
        if self.applied {
            return Err(DetectorError::RestoreAfterStart);
        }
        let snapshot = PersonSnapshot::decode(bytes).map_err(|error| DetectorError::BadPerson {
            person_id: person_id.to_owned(),
            error,
        })?;
        let p = Person::from_snapshot(person_id, &snapshot);
        let flags = p.flags();
        let h = hash(person_id.as_bytes());
        let slab = &self.slab;
        let found = self
            .index
            .find(h, |i| slab.get(i).id_bytes() == person_id.as_bytes());
        match found {
            Some(idx) => {
                self.counts[category(self.slab.get(idx).flags())] -= 1;
                *self.slab.get_mut(idx) = p;
            }
            None => {
                let idx = self.slab.push(p);
                let slab = &self.slab;
                self.index
                    .insert_unique(h, idx, |i| hash(slab.get(i).id_bytes()));
                self.pending.push(idx);
            }
        }
        self.counts[category(flags & PERSISTED)] += 1;
        Ok(())
    }

    /// The partition clock, encoded as the changelog stores it under its clock key.
    pub fn clock_snapshot(&self) -> [u8; ClockSnapshot::LEN] {
        ClockSnapshot {
            started: self.started,
            stream_time: self.stream,
            excluded_outage_ms: self.excluded,
        }
        .encode()
    }

    /// Restores the partition clock. Only on a fresh detector, before the first `apply`.
    pub fn restore_clock(&mut self, bytes: &[u8]) -> Result<(), DetectorError> {
        if self.applied {
            return Err(DetectorError::RestoreAfterStart);
        }
        let c = ClockSnapshot::decode(bytes).map_err(DetectorError::BadClock)?;
        self.started = c.started;
        self.stream = c.stream_time;
        self.excluded = c.excluded_outage_ms;
        Ok(())
    }

    /// Total bytes of person ids and of current addresses held (O(persons); for benchmarks).
    pub fn text_bytes(&self) -> (u64, u64) {
        let (mut ids, mut addresses) = (0u64, 0u64);
        for i in 0..self.slab.len() {
            let p = self.slab.get(i);
            ids += p.id_bytes().len() as u64;
            addresses += p.address().len() as u64;
        }
        (ids, addresses)
    }
}
