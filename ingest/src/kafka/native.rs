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
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};
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
pub struct BatchProducer<C: ProducerContext + 'static> {
    topic: NonNull<rd::rd_kafka_topic_t>,
    producer: ThreadedProducer<C>,
}

// SAFETY: librdkafka topic handles are thread-safe (all their state is behind librdkafka's own
// locks), and the handle is only used through `rd_kafka_produce_batch` and destroyed once.
unsafe impl<C: ProducerContext + 'static> Send for BatchProducer<C> {}
// SAFETY: as above; `&self` methods only pass the handle to thread-safe librdkafka calls.
unsafe impl<C: ProducerContext + 'static> Sync for BatchProducer<C> {}

impl<C: ProducerContext + 'static> std::fmt::Debug for BatchProducer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchProducer").finish_non_exhaustive()
    }
}

impl<C: ProducerContext + 'static> BatchProducer<C> {
    /// Takes a topic handle for `topic` on `producer` (the same topic object and topic
    /// configuration that a `send` to that topic name uses).
    pub fn new(producer: ThreadedProducer<C>, topic: &str) -> Result<Self, TopicError> {
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
            Some(topic) => Ok(BatchProducer { topic, producer }),
            None => {
                // SAFETY: reads this thread's last librdkafka error; no pointers involved.
                let err = unsafe { rd::rd_kafka_last_error() };
                Err(TopicError::Refused(err.into()))
            }
        }
    }

    pub fn producer(&self) -> &ThreadedProducer<C> {
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

impl<C: ProducerContext + 'static> Drop for BatchProducer<C> {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and is destroyed exactly once,
        // before the producer (fields drop after this).
        unsafe { rd::rd_kafka_topic_destroy(self.topic.as_ptr()) }
    }
}
