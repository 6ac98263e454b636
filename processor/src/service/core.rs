//! The loop: the state it shares with the rebalance callbacks, the callbacks themselves, and
//! how the records of a poll reach the detectors.
//!
//! # Records in batches
//! Each turn polls one burst (a first message waited for, then what librdkafka has already
//! fetched, up to [`POLL_BATCH`]) and feeds every run of consecutive decodable records of one
//! partition to [`Detector::apply_batch`], the entry point `detector_bench` measures (its
//! prefetching overlaps the cache misses of different persons). The effect is that of one
//! record at a time: runs end at a partition change and at an undecodable record, which is
//! dead-lettered in its place in the same transaction; events are sent in record order;
//! each partition's offset is one past its last processed record; a commit happens only
//! between turns.
//!
//! A burst spans several polls, and rebalance callbacks run inside `poll`: a partition
//! revoked and assigned again while messages of the old assignment are held is restored
//! from the changelog and re-read from its committed offset, so those held messages must not
//! be applied. Each message is tagged with the assignment count after the poll that returned
//! it, each partition with the assignment that gave it; a message older than its
//! partition's assignment is skipped, like one of a partition no longer owned.
//!
//! # Re-published records
//! A record carrying the [`REPLAY_HEADER`](common::record::REPLAY_HEADER) (a repaired dead
//! letter an operator put back) ends a run like an undecodable one and is committed without
//! being applied: its `received_at` is old, and applying it at today's stream time could emit
//! a `resumed` that never happened.
//!
//! # Partition counts
//! The [`Guard`] checks the contacts and changelog partition counts at start-up (before any
//! restore), on every assignment and revoke, and every `processor.partition_check_interval`.
//! On a mismatch the open transaction is aborted, nothing further is consumed or committed,
//! `/readyz` answers 503 and `lastseen_processor_partition_mismatch` is 1 until the process
//! is stopped (see [`super::guard`]).

use super::ServiceError;
use super::guard::{Guard, Mismatch};
use super::metrics::{self, Metrics};
use super::restore::restore;
use super::txn::{self, send};
use crate::detector::Detector;
use common::config::Config;
use common::lifecycle::Shutdown;
use common::record::{ContactRef, DeadLetter, PersonEvent, PersonStatus, now_millis};
use common::telemetry::Readiness;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most messages taken in one turn: the window `detector_bench` feeds `apply_batch`. Larger
/// gains nothing there, and a turn must stay short (commits and shutdown wait for it).
const POLL_BATCH: usize = 1024;

/// How long a turn waits for its first message.
const POLL_WAIT: Duration = Duration::from_millis(20);

/// Longest one partition-count check may block the loop.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the start-up check waits for the topics' metadata (as long as a restore may take).
const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// One assigned partition.
#[derive(Debug)]
pub(super) struct Partition {
    pub(super) detector: Detector,
    /// Offset to commit: one past the last processed record.
    pub(super) next_offset: Option<i64>,
    /// The [`Ctx::assignments`] count of the assignment that gave us this partition.
    assignment: u64,
}

/// Everything the loop and the rebalance callbacks share (both on the loop's thread).
pub(super) struct Core {
    pub(super) cfg: Config,
    pub(super) producer: BaseProducer,
    pub(super) partitions: BTreeMap<i32, Partition>,
    pub(super) in_txn: bool,
    events: Vec<PersonEvent>,
    pub(super) metrics: Metrics,
    /// Per-record counters resolved once (a labelled lookup per record costs a hash and a lock).
    counters: metrics::HotCounters,
    ready: Readiness,
    /// An error raised inside a rebalance callback, surfaced by the loop.
    pub(super) failed: Option<ServiceError>,
    /// Records processed and empty polls since the last commit (for the debug log).
    pub(super) processed: u64,
    pub(super) idle_polls: u64,
    guard: Guard,
    /// Set once the partition counts are found wrong: nothing is applied or committed after.
    refused: Option<Mismatch>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

pub(super) struct Ctx {
    core: Arc<Mutex<Core>>,
    /// Assignments so far; bumped inside `poll` by the callback, read by the loop after it.
    assignments: AtomicU64,
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    // A panic while holding the lock ends the process anyway; keep going with the data.
    core.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut core = lock(&self.core);
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let lost = consumer.assignment_lost();
                tracing::info!(partitions = tpl.count(), lost, "partitions revoked");
                core.ready.set(false);
                // A revoke may be the group reacting to added partitions: what is open is
                // committed only while the counts are still right.
                if lost || !core.counts_hold() {
                    core.abort(if lost {
                        "assignment lost"
                    } else {
                        "partition counts changed"
                    });
                } else if let Err(e) = core.commit(consumer) {
                    tracing::warn!(error = %e, "commit on revoke failed; aborting");
                    core.abort("commit on revoke failed");
                    if let ServiceError::Fatal(_) = e {
                        core.failed = Some(e);
                    }
                }
                for el in tpl.elements() {
                    core.partitions.remove(&el.partition());
                }
                core.update_gauges();
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut core = lock(&self.core);
        if let Rebalance::Assign(tpl) = rebalance {
            let assignment = self.assignments.fetch_add(1, Ordering::AcqRel) + 1;
            tracing::info!(
                partitions = tpl.count(),
                "partitions assigned; restoring state"
            );
            core.ready.set(false);
            // Before any restore: state restored under a changed count would be wrong.
            if !core.counts_hold() {
                return;
            }
            for el in tpl.elements() {
                let p = el.partition();
                match restore(&core.cfg, p, &core.metrics) {
                    Ok(detector) => {
                        core.partitions.insert(
                            p,
                            Partition {
                                detector,
                                next_offset: None,
                                assignment,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::error!(partition = p, error = %e, "restore failed");
                        core.failed = Some(e);
                        return;
                    }
                }
            }
            core.update_gauges();
            core.ready.set(true);
        }
    }
}

/// A polled message and the assignment count after the poll that returned it.
type Polled<'c> = (BorrowedMessage<'c>, u64);

/// Polls one burst into `out`: waits up to [`POLL_WAIT`] for a first message, then takes
/// what is already fetched without waiting, up to [`POLL_BATCH`]. Returns whether the first
/// poll found nothing.
fn poll_burst<'c>(consumer: &'c BaseConsumer<Ctx>, out: &mut Vec<Polled<'c>>) -> bool {
    let mut wait = POLL_WAIT;
    while out.len() < POLL_BATCH {
        let polled = consumer.poll(wait);
        let assignment = consumer.context().assignments.load(Ordering::Acquire);
        match polled {
            Some(Ok(m)) => out.push((m, assignment)),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                return false;
            }
            None => return wait == POLL_WAIT,
        }
        wait = Duration::ZERO;
    }
    false
}

impl Core {
    /// Whether a message polled at assignment count `polled` is ours to process.
    fn owns(&self, partition: i32, polled: u64) -> bool {
        // Not owned: fetched before a revoke took it away; its new owner will process it.
        // Older than the assignment: it will be fetched again from the committed offset.
        self.partitions
            .get(&partition)
            .is_some_and(|part| part.assignment <= polled)
    }

    /// Processes one burst in order (see the module docs).
    fn process_burst(&mut self, burst: &[Polled<'_>]) -> Result<(), ServiceError> {
        let mut run: Vec<ContactRef<'_>> = Vec::with_capacity(burst.len());
        let mut i = 0;
        while i < burst.len() {
            let (first, polled) = &burst[i];
            let p = first.partition();
            if !self.owns(p, *polled) {
                i += 1;
                continue;
            }
            self.ensure_txn()?;
            // The run: this record and the following ones of the same partition, up to the
            // first that does not decode. Later messages of a partition were polled no
            // earlier, so they are owned too. Borrowed decode: a ping's strings are not
            // copied out of the message.
            run.clear();
            let mut undecodable = None;
            let mut replayed = None;
            let mut j = i;
            while let Some((m, _)) = burst.get(j).filter(|(m, _)| m.partition() == p) {
                if is_replay(m) {
                    replayed = Some(m);
                    break;
                }
                match ContactRef::decode(m.payload().unwrap_or_default()) {
                    Ok(contact) => run.push(contact),
                    Err(e) => {
                        undecodable = Some((m, format!("undecodable contact: {e}")));
                        break;
                    }
                }
                j += 1;
            }
            if !run.is_empty() {
                self.apply_run(p, &run)?;
                self.processed_up_to(p, burst[j - 1].0.offset(), run.len());
            }
            if let Some((m, reason)) = undecodable {
                self.dead_letter(m, "undecodable", &reason)?;
                self.processed_up_to(p, m.offset(), 1);
                j += 1;
            }
            if let Some(m) = replayed {
                // Committed, not applied (see the module docs).
                self.metrics.replays_skipped.inc();
                tracing::info!(
                    partition = p,
                    offset = m.offset(),
                    "re-published record skipped"
                );
                self.processed_up_to(p, m.offset(), 1);
                j += 1;
            }
            i = j;
        }
        Ok(())
    }

    /// Checks the partition counts now; on a mismatch refuses (see [`Core::refuse`]) and
    /// returns false. Counts that cannot be fetched are no verdict: true, and the next check
    /// decides (a broker that does not answer metadata fails the transaction anyway).
    fn counts_hold(&mut self) -> bool {
        if self.refused.is_some() {
            return false;
        }
        match self.guard.verify(CHECK_TIMEOUT) {
            Ok(Ok(_)) => true,
            Ok(Err(m)) => {
                self.refuse(m);
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "partition counts not checked; checking again later");
                true
            }
        }
    }

    /// Stops processing for good: aborts the open transaction, reports the mismatch (ERROR
    /// log, gauge, readiness).
    fn refuse(&mut self, m: Mismatch) {
        if self.refused.is_some() {
            return;
        }
        tracing::error!(
            error = %m,
            "REFUSING TO PROCESS: partition counts of the contacts and changelog topics are wrong"
        );
        self.metrics.partition_mismatch.set(1);
        self.ready.set(false);
        self.abort("partition counts changed");
        self.refused = Some(m);
    }

    /// Applies decoded records of partition `p` and sends the events they cause, in order.
    fn apply_run(&mut self, p: i32, run: &[ContactRef<'_>]) -> Result<(), ServiceError> {
        let mut by_type = [0u64; 3];
        for c in run {
            by_type[match c {
                ContactRef::Ping { .. } => 0,
                ContactRef::Registration { .. } => 1,
                ContactRef::Tick { .. } => 2,
            }] += 1;
        }
        for (counter, n) in self.counters.records.iter().zip(by_type) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        let part = self
            .partitions
            .get_mut(&p)
            .expect("owned, checked by the caller");
        part.detector.apply_batch(run, &mut self.events);
        if !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            let mut json = Vec::with_capacity(256);
            for e in &events {
                self.counters.event(e.kind).inc();
                json.clear();
                common::codec::event::encode(e, &mut json);
                send(
                    &self.producer,
                    BaseRecord::to(&self.cfg.kafka.events_topic)
                        .key(&e.person_id)
                        .payload(&json),
                )?;
            }
            // Keep the buffer's capacity for the next run.
            self.events = events;
            self.events.clear();
        }
        Ok(())
    }

    /// Records that partition `p` is processed up to and including `offset` (`n` records).
    fn processed_up_to(&mut self, p: i32, offset: i64, n: usize) {
        if let Some(part) = self.partitions.get_mut(&p) {
            part.next_offset = Some(offset + 1);
        }
        self.processed += n as u64;
    }

    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        label: &str,
        reason: &str,
    ) -> Result<(), ServiceError> {
        self.metrics.dead_letters.with_label_values(&[label]).inc();
        tracing::warn!(
            partition = msg.partition(),
            offset = msg.offset(),
            reason,
            "dead letter"
        );
        let dl = DeadLetter {
            stage: "processor".into(),
            reason: reason.into(),
            topic: msg.topic().into(),
            partition: msg.partition(),
            offset: msg.offset(),
            payload: String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned(),
            at: now_millis(),
        };
        let json = common::codec::dead_letter::to_vec(&dl);
        let key = format!("{}-{}", msg.partition(), msg.offset());
        send(
            &self.producer,
            BaseRecord::to(&self.cfg.kafka.dead_letter_topic)
                .key(&key)
                .payload(&json),
        )
    }

    /// After an abort: rebuild every owned partition from the changelog and seek the
    /// consumer back to the committed offsets, so the aborted work is redone identically.
    fn rewind(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        let contacts = self.cfg.kafka.contacts_topic.clone();
        let mut tpl = TopicPartitionList::new();
        for &p in self.partitions.keys() {
            tpl.add_partition(&contacts, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(30))?;
        let owned: Vec<i32> = self.partitions.keys().copied().collect();
        for p in owned {
            let detector = restore(&self.cfg, p, &self.metrics)?;
            if let Some(part) = self.partitions.get_mut(&p) {
                part.detector = detector;
                part.next_offset = None;
            }
            let offset = committed
                .find_partition(&contacts, p)
                .map(|e| e.offset())
                .filter(|o| matches!(o, Offset::Offset(_)))
                .unwrap_or(Offset::Beginning);
            consumer.seek(&contacts, p, offset, Duration::from_secs(30))?;
        }
        Ok(())
    }

    pub(super) fn update_gauges(&self) {
        let m = &self.metrics;
        m.partitions_owned.set(self.partitions.len() as i64);
        let mut totals = [0u64; 4];
        let now = now_millis();
        m.stream_time_lag.reset();
        m.excluded_outage.reset();
        for (p, part) in &self.partitions {
            for (t, (_, n)) in totals.iter_mut().zip(part.detector.counts().by_status()) {
                *t += n;
            }
            let label = p.to_string();
            if let Some(st) = part.detector.stream_time() {
                m.stream_time_lag
                    .with_label_values(&[&label])
                    .set((now - st) as f64 / 1000.0);
            }
            m.excluded_outage
                .with_label_values(&[&label])
                .set(part.detector.excluded_outage_ms() as f64 / 1000.0);
        }
        for (status, n) in PersonStatus::ALL.iter().zip(totals) {
            m.persons
                .with_label_values(&[status.as_str()])
                .set(n as i64);
        }
    }
}

pub(super) fn run_loop(
    cfg: Config,
    metrics: Metrics,
    ready: Readiness,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    // The counts first: before the producer fences anyone and before any restore.
    let mut guard = Guard::new(&cfg)?;
    let started = Instant::now();
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        match guard.verify(CHECK_TIMEOUT) {
            Ok(Ok(n)) => {
                tracing::info!(
                    partitions = n,
                    "partition counts of contacts and changelog agree"
                );
                break;
            }
            Ok(Err(m)) => {
                tracing::error!(
                    error = %m,
                    "REFUSING TO PROCESS: partition counts of the contacts and changelog topics are wrong"
                );
                metrics.partition_mismatch.set(1);
                ready.set(false);
                return wait_refusing(&shutdown);
            }
            Err(e) if started.elapsed() < STARTUP_CHECK_TIMEOUT => {
                tracing::warn!(error = %e, "partition counts not available yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(ServiceError::Fatal(e.to_string())),
        }
    }
    let producer = txn::transactional_producer(&cfg)?;
    let core = Arc::new(Mutex::new(Core {
        cfg: cfg.clone(),
        producer,
        partitions: BTreeMap::new(),
        in_txn: false,
        events: Vec::new(),
        counters: metrics::HotCounters::new(&metrics),
        metrics,
        ready: ready.clone(),
        failed: None,
        processed: 0,
        idle_polls: 0,
        guard,
        refused: None,
    }));
    let consumer: BaseConsumer<Ctx> = consumer_config(&cfg).create_with_context(Ctx {
        core: core.clone(),
        assignments: AtomicU64::new(0),
    })?;
    consumer.subscribe(&[&cfg.kafka.contacts_topic])?;

    let interval = cfg.processor.commit_interval;
    let check_interval = cfg.processor.partition_check_interval;
    let mut last_commit = Instant::now();
    let mut last_check = Instant::now();
    let mut burst = Vec::with_capacity(POLL_BATCH);
    let result = loop {
        if shutdown.is_triggered() {
            break Ok(());
        }
        // Polled without the lock: the rebalance callbacks inside `poll` take it.
        let idle = poll_burst(&consumer, &mut burst);
        let mut c = lock(&core);
        if let Some(e) = c.failed.take() {
            break Err(e);
        }
        if idle {
            c.idle_polls += 1;
        }
        // Checked before the burst is applied: nothing polled after a change is applied.
        if last_check.elapsed() >= check_interval {
            last_check = Instant::now();
            c.counts_hold();
        }
        if c.refused.is_some() {
            break Ok(());
        }
        let step = c.process_burst(&burst);
        // Release the messages (and librdkafka's buffers) before the next poll.
        burst.clear();
        let step = step.and_then(|()| {
            if last_commit.elapsed() >= interval {
                last_commit = Instant::now();
                let r = c.commit(&consumer);
                c.update_gauges();
                r
            } else {
                Ok(())
            }
        });
        match step {
            Ok(()) => {}
            Err(ServiceError::Abortable(why)) => {
                c.abort(&why);
                c.rewind(&consumer)?;
            }
            Err(e) => break Err(e),
        }
    };
    drop(burst);
    ready.set(false);
    let refused = lock(&core).refused.is_some();
    if result.is_ok() && !refused {
        let mut c = lock(&core);
        c.commit(&consumer)?;
        tracing::info!("final transaction committed; leaving the group");
    }
    drop(consumer);
    if refused {
        return wait_refusing(&shutdown);
    }
    result
}

/// Refusing: nothing is consumed or committed; the admin endpoint keeps serving `/metrics`
/// (the mismatch gauge) and a 503 `/readyz` until the process is stopped.
fn wait_refusing(shutdown: &Shutdown) -> Result<(), ServiceError> {
    while !shutdown.is_triggered() {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Whether `m` carries the [`REPLAY_HEADER`](common::record::REPLAY_HEADER) (any value).
fn is_replay(m: &BorrowedMessage<'_>) -> bool {
    m.headers().is_some_and(|h| {
        (0..h.count()).any(|i| {
            h.try_get(i)
                .is_some_and(|x| x.key == common::record::REPLAY_HEADER)
        })
    })
}

fn consumer_config(cfg: &Config) -> ClientConfig {
    let mut c = cfg.kafka_client_config("processor");
    c.set("group.id", &cfg.processor.group_id)
        // Static membership: a restarted instance takes its partitions back without a
        // rebalance round; a vanished one is replaced after the session timeout.
        .set("group.instance.id", &cfg.processor.instance_id)
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "range")
        // Large fetches, as the raw-consume floor in processor_bench uses: fewer fetch
        // round trips per record at high rates.
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760");
    c
}
