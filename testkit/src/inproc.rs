//! The services in this process, through their `run(config, listeners, shutdown)`: each on a
//! loopback listener the kernel picks (bound before the service starts, so no port race),
//! stopped by its [`Shutdown`].

use crate::kafka::brokers;
use crate::namespace::Namespace;
use common::Config;
use common::lifecycle::{Listeners, Shutdown};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A service running on this runtime.
#[derive(Debug)]
pub struct Running<E> {
    /// Its HTTP listener (ingest's API, the processor's and the sink's admin endpoints).
    pub addr: SocketAddr,
    /// `http://<addr>`.
    pub url: String,
    shutdown: Shutdown,
    handle: JoinHandle<Result<(), E>>,
}

impl<E: Send + 'static> Running<E> {
    /// Spawns `run(listener, shutdown)` on the current runtime.
    fn spawn<F>(listener: TcpListener, run: impl FnOnce(TcpListener, Shutdown) -> F) -> Running<E>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let addr = listener.local_addr().expect("local address");
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(run(listener, shutdown.clone()));
        Running {
            addr,
            url: format!("http://{addr}"),
            shutdown,
            handle,
        }
    }
}

impl<E> Running<E> {
    /// Waits until `/readyz` answers 200; panics after `within`.
    pub async fn wait_ready(&self, within: Duration) {
        crate::http::wait_ready(&self.url, within, || Ok(()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The service's shutdown handle (to trigger it without waiting).
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Shuts down gracefully and returns what `run` returned.
    pub async fn stop(self) -> Result<(), E> {
        self.shutdown.trigger();
        self.handle.await.expect("service task panicked")
    }
}

async fn loopback() -> TcpListener {
    Listeners::loopback().await.expect("loopback listener")
}

/// Ingest on a fresh loopback port (its API listener serves the admin endpoints too).
pub async fn ingest(config: Config) -> Running<ingest::RunError> {
    Running::spawn(loopback().await, |l, s| {
        ingest::run(config, Listeners::public(l), s)
    })
}

/// The processor, its admin endpoints on a fresh loopback port.
pub async fn processor(config: Config) -> Running<processor::service::ServiceError> {
    Running::spawn(loopback().await, |l, s| {
        processor::service::run(config, Listeners::admin(l), s)
    })
}

/// The sink, its admin endpoints on a fresh loopback port.
pub async fn sink(config: Config) -> Running<sink::SinkError> {
    Running::spawn(loopback().await, |l, s| {
        sink::run(config, Listeners::admin(l), s)
    })
}

/// The configuration of a test ingest writing to `topic`: ticks every 200 ms, instance id
/// `ingest-test`, no rate limit, the kit's [`crate::SECRET`].
pub fn ingest_config(topic: &str) -> Config {
    let mut c = Config::defaults();
    c.kafka.brokers = brokers();
    c.kafka.contacts_topic = topic.to_string();
    c.auth.hs256_secret = crate::SECRET.into();
    c.clock.tick_interval = Duration::from_millis(200);
    c.ingest.instance_id = "ingest-test".into();
    c.ingest.rate_limit_per_device = 0.0;
    c
}

/// A fresh harness topic for `test` with `partitions` partitions, created, and the
/// [`ingest_config`] writing to it.
pub async fn ingest_topic(test: &str, partitions: i32) -> (String, Config) {
    let topic = crate::names::unique_topic(test);
    crate::kafka::create_topic(&topic, partitions).await;
    let config = ingest_config(&topic);
    (topic, config)
}

/// The configuration of a test sink in `ns`: small batches written within 200 ms, retries
/// from 50 ms to 1 s.
pub fn sink_config(ns: &Namespace) -> Config {
    let mut c = ns.config();
    c.sink.max_rows = 5000;
    c.sink.max_delay = Duration::from_millis(200);
    c.sink.min_backoff = Duration::from_millis(50);
    c.sink.max_backoff = Duration::from_millis(1000);
    c
}

/// Installs the services' logging once per process at `filter` (`RUST_LOG` overrides it).
pub fn init_logging(filter: &str) {
    let mut log = Config::defaults().log;
    log.level = filter.into();
    common::telemetry::init_logging(&log);
}
