//! One librdkafka call per request: `rd_kafka_produce_batch` instead of one `producev` per
//! record.
//!
//! Why: in a profile of the benchmark, `rd_kafka_producev` was a third of ingest's request
//! CPU. Per record it looked the topic up by name (a C string built per call, a hash lookup
//! and a read lock), read the clock twice, and copied the payload. `rd_kafka_produce_batch`
//! takes a topic handle held for the producer's life, reads the clock and the topic lock once
//! per call, and (without `RD_KAFKA_MSG_F_COPY`) points at the payload instead of copying it.
//! The same key, payload, timestamp and per-record delivery report as `producev`.
//!
//! Partition: [`BatchProducer::enqueue`] leaves it to librdkafka's partitioner, which then runs
//! once per record (and looks the partition up once per record);
//! [`BatchProducer::enqueue_to`] gives one explicit partition for the whole call, which
//! librdkafka looks up once and appends every record to. Ingest passes the partition its own
//! partitioner would pick for the request's one key (see [`super::partition`]).
//!
//! The payload is not copied, so it must outlive librdkafka's use of it. That is structural
//! here: the bytes belong to a [`RecordsOwner`] behind an `Arc`, and every enqueued record's
//! delivery opaque is a clone of that `Arc`, released only by its delivery report (success,
//! failure or timeout). Records librdkafka did not take get their clone back at once.

use super::Records;
use rdkafka::bindings as rd;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::IntoOpaque;
use std::ffi::{CString, c_int, c_void};
use std::ptr::NonNull;
use std::sync::Arc;

use super::partition::UNASSIGNED as PARTITION_UA;

/// Something that owns serialized records and lives as long as any of them is in flight.
pub trait RecordsOwner: Send + Sync + 'static {
    fn records(&self) -> &Records;
}

impl RecordsOwner for Records {
    fn records(&self) -> &Records {
        self
    }
}

/// Records librdkafka refused; it took every other record of the call and will report each.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{failed} records not enqueued (first at {first}): {code}")]
pub struct NotEnqueued {
    /// How many records were refused.
    pub failed: usize,
    /// Index of the first refused record. After a full queue, every later record is refused
    /// too, so `first..` is exactly the refused range.
    pub first: usize,
    /// Why the first one was refused.
    pub code: RDKafkaErrorCode,
}

/// Why a [`BatchProducer`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic name contains a NUL byte")]
    Name,
    #[error("librdkafka refused the topic handle: {0}")]
    Refused(RDKafkaErrorCode),
}

/// A producer with a topic handle held for its whole life, enqueueing a request's records in
/// one call.
///
/// `P` is the rust-rdkafka producer: a [`ThreadedProducer`] (delivery reports served by its own
/// polling thread) or a [`BaseProducer`] whose reports an [`EventPump`] serves.
pub struct BatchProducer<C: ProducerContext + 'static, P: Producer<C> = ThreadedProducer<C>> {
    topic: NonNull<rd::rd_kafka_topic_t>,
    producer: P,
    _context: std::marker::PhantomData<fn() -> C>,
}

// SAFETY: librdkafka topic handles are thread-safe (all their state is behind librdkafka's own
// locks), and the handle is only used through `rd_kafka_produce_batch` and destroyed once.
unsafe impl<C: ProducerContext + 'static, P: Producer<C> + Send> Send for BatchProducer<C, P> {}
// SAFETY: as above; `&self` methods only pass the handle to thread-safe librdkafka calls.
unsafe impl<C: ProducerContext + 'static, P: Producer<C> + Sync> Sync for BatchProducer<C, P> {}

impl<C: ProducerContext + 'static, P: Producer<C>> std::fmt::Debug for BatchProducer<C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchProducer").finish_non_exhaustive()
    }
}

impl<C: ProducerContext + 'static, P: Producer<C>> BatchProducer<C, P> {
    /// Takes a topic handle for `topic` on `producer` (the same topic object and topic
    /// configuration that a `send` to that topic name uses).
    pub fn new(producer: P, topic: &str) -> Result<Self, TopicError> {
        let name = CString::new(topic).map_err(|_| TopicError::Name)?;
        // SAFETY: the client pointer is valid while `producer` lives; a null configuration
        // means the producer's default topic configuration; the name is copied.
        let rkt = unsafe {
            rd::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        match NonNull::new(rkt) {
            Some(topic) => Ok(BatchProducer {
                topic,
                producer,
                _context: std::marker::PhantomData,
            }),
            None => {
                // SAFETY: reads this thread's last librdkafka error; no pointers involved.
                let err = unsafe { rd::rd_kafka_last_error() };
                Err(TopicError::Refused(err.into()))
            }
        }
    }

    pub fn producer(&self) -> &P {
        &self.producer
    }

    /// Enqueues records `from..` of `owner` in one call, each on the partition librdkafka's
    /// partitioner picks for it. Each enqueued record gets its own delivery report carrying a
    /// clone of `owner`.
    pub fn enqueue<T>(&self, owner: &Arc<T>, from: usize) -> Result<(), NotEnqueued>
    where
        T: RecordsOwner,
        C: ProducerContext<DeliveryOpaque = Arc<T>>,
    {
        self.enqueue_to(owner, from, PARTITION_UA)
    }

    /// Like [`BatchProducer::enqueue`], every record on `partition` (or, for
    /// [`PARTITION_UA`](super::partition::UNASSIGNED), on the partition librdkafka's
    /// partitioner picks for it).
    ///
    /// A partition librdkafka does not know (at or above the partition count of its latest
    /// metadata) refuses the whole call with `UnknownPartition` (`first` = `from`): librdkafka
    /// looks an explicit partition up once per call. While librdkafka has no metadata for the
    /// topic yet, it holds the records and assigns them once it has.
    pub fn enqueue_to<T>(
        &self,
        owner: &Arc<T>,
        from: usize,
        partition: i32,
    ) -> Result<(), NotEnqueued>
    where
        T: RecordsOwner,
        C: ProducerContext<DeliveryOpaque = Arc<T>>,
    {
        let records = owner.records();
        let n = records.len().saturating_sub(from);
        if n == 0 {
            return Ok(());
        }
        let mut msgs: Vec<rd::rd_kafka_message_t> = (from..records.len())
            .map(|i| {
                let (key, payload) = records.get(i);
                rd::rd_kafka_message_t {
                    err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                    rkt: std::ptr::null_mut(),
                    partition,
                    payload: payload.as_ptr() as *mut c_void,
                    len: payload.len(),
                    key: key.as_ptr() as *mut c_void,
                    key_len: key.len(),
                    offset: 0,
                    _private: Arc::clone(owner).into_ptr(),
                }
            })
            .collect();
        let count = c_int::try_from(n).expect("a request's records fit in a C int");
        // SAFETY: `msgs` is a valid array of `count` messages; payload and key point into
        // `owner`'s buffer, which every enqueued message's opaque keeps alive until its
        // delivery report (flags 0: the payload is referenced, the key is copied); the topic
        // handle is valid until `drop`. librdkafka checks the partition itself (an unknown one
        // is an error on every message, nothing enqueued).
        let good = unsafe {
            rd::rd_kafka_produce_batch(self.topic.as_ptr(), partition, 0, msgs.as_mut_ptr(), count)
        };
        if good == count {
            return Ok(());
        }
        let mut failed = 0;
        let mut first = None;
        for (i, m) in msgs.iter().enumerate() {
            if m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                // SAFETY: librdkafka did not take this message, so its opaque is still the
                // `Arc` clone made above and nothing else will release it.
                drop(unsafe { Arc::<T>::from_ptr(m._private) });
                failed += 1;
                first.get_or_insert((from + i, m.err));
            }
        }
        let (first, code) = first.expect("fewer enqueued than given means some failed");
        Err(NotEnqueued {
            failed,
            first,
            code: code.into(),
        })
    }
}

impl<C: ProducerContext + 'static, P: Producer<C>> Drop for BatchProducer<C, P> {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and is destroyed exactly once,
        // before the producer (fields drop after this).
        unsafe { rd::rd_kafka_topic_destroy(self.topic.as_ptr()) }
    }
}

/// Serves a [`BaseProducer`]'s events (delivery reports, errors, statistics) on the async
/// runtime instead of a dedicated polling thread.
///
/// Why: with a `ThreadedProducer`, every produce response wakes rust-rdkafka's polling thread,
/// which then wakes each completed request's task on a runtime worker from outside the runtime:
/// a thread hop and a cross-thread wake-up per request, on a machine whose cores the broker,
/// the broker threads and the HTTP workers already share. Here librdkafka calls a callback
/// (`rd_kafka_queue_cb_event_enable`) when the producer's main queue goes from empty to
/// non-empty, which notifies a runtime task that polls the queue until it is empty; the
/// requests it completes are then woken on the same worker.
///
/// The callback is removed (under the queue's lock, so it is not running afterwards) before
/// the notifier it points at is released, and the queue handle is released before the
/// producer.
pub struct EventPump<C: ProducerContext + 'static> {
    queue: NonNull<rd::rd_kafka_queue_t>,
    notify: *const tokio::sync::Notify,
    producer: Arc<BatchProducer<C, BaseProducer<C>>>,
}

// SAFETY: the queue handle is only used through thread-safe librdkafka calls
// (`rd_kafka_queue_length`, `rd_kafka_queue_cb_event_enable`, `rd_kafka_queue_destroy` once),
// and `notify` points at a `Notify` (itself `Send + Sync`) kept alive by this value.
unsafe impl<C: ProducerContext + 'static> Send for EventPump<C> {}
// SAFETY: as above.
unsafe impl<C: ProducerContext + 'static> Sync for EventPump<C> {}

impl<C: ProducerContext + 'static> std::fmt::Debug for EventPump<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPump").finish_non_exhaustive()
    }
}

/// librdkafka's queue event callback: runs on whichever librdkafka thread enqueued the event,
/// with the queue locked; it only notifies the pump.
unsafe extern "C" fn queue_event(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Notify` of a live `EventPump`: the callback is removed before
    // the pump releases it.
    let notify = unsafe { &*(opaque as *const tokio::sync::Notify) };
    notify.notify_one();
}

impl<C: ProducerContext + 'static> EventPump<C> {
    /// Hooks the pump to `producer`'s main queue (where rust-rdkafka's `poll` reads events).
    pub fn new(producer: Arc<BatchProducer<C, BaseProducer<C>>>) -> EventPump<C> {
        let rk = producer.producer().client().native_ptr();
        // SAFETY: `rk` is valid while `producer` lives (we hold it); the returned handle is a
        // new reference to the same queue rust-rdkafka polls, destroyed once in `drop`.
        let queue = unsafe { rd::rd_kafka_queue_get_main(rk) };
        let queue = NonNull::new(queue).expect("a producer has a main queue");
        let notify = Arc::into_raw(Arc::new(tokio::sync::Notify::new()));
        // SAFETY: the callback only dereferences `notify`, which stays alive until `drop`
        // removes the callback.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(queue_event),
                notify as *mut c_void,
            )
        };
        EventPump {
            queue,
            notify,
            producer,
        }
    }

    /// Events waiting in the main queue.
    fn pending(&self) -> usize {
        // SAFETY: the handle is valid until `drop`.
        unsafe { rd::rd_kafka_queue_length(self.queue.as_ptr()) }
    }

    /// Serves events as they arrive until `stop` is cancelled. A 100 ms timer polls as well,
    /// as rust-rdkafka's own polling thread does, should a notification ever be missed.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        // SAFETY: `notify` is alive while `self` is (released only in `drop`).
        let notify = unsafe { &*self.notify };
        let p = self.producer.producer();
        loop {
            // Empty the queue: every call serves one event (a delivery report covers a whole
            // produce response). Bounded, then yield, so a flood cannot hog the worker.
            let mut served = 0;
            while self.pending() > 0 && served < 256 {
                p.poll(std::time::Duration::ZERO);
                served += 1;
            }
            if served == 256 {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = notify.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
        }
    }
}

impl<C: ProducerContext + 'static> Drop for EventPump<C> {
    fn drop(&mut self) {
        // SAFETY: removing the callback takes the queue's lock, so no callback is running or
        // will run after it returns; then the notifier and the queue handle are released, the
        // handle before the producer (a field, dropped after this).
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, std::ptr::null_mut());
            drop(Arc::from_raw(self.notify));
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
    }
}
