//! How a service starts, retries and stops — the same for ingest, the processor and the sink.
//!
//! Every service is `run(config, listeners, shutdown)`:
//! - [`Listeners`] — the sockets it serves on, bound by the caller: `main` binds the addresses
//!   of the configuration, a test binds `127.0.0.1:0` and reads the port back, so nothing
//!   races for a port between picking and binding it.
//! - [`Shutdown`] — one cloneable handle that says "stop now", triggered by a signal in
//!   `main` ([`Shutdown::on_signal`]) or by hand in a test ([`Shutdown::trigger`]). Async code
//!   awaits [`Shutdown::cancelled`]; a blocking loop polls [`Shutdown::is_triggered`].
//! - [`retry`] / [`retry_with`] with a [`Backoff`] — run an operation until it succeeds, fails
//!   for good ([`Retryable::is_retryable`] is false) or shutdown comes.

use std::fmt;
use std::future::Future;
use std::time::Duration;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::sync::CancellationToken;

/// The "stop now" of a service: cheap to clone, every clone sees the same trigger.
///
/// A [`Shutdown::child`] is triggered with its parent but can also be triggered alone (a
/// service that stops one of its tasks early without stopping the rest).
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A handle nothing has triggered yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A handle that triggers on SIGINT or SIGTERM (what `main` passes to `run`). Must be
    /// called inside a Tokio runtime: it spawns the task that waits for the signal.
    pub fn on_signal() -> Shutdown {
        let s = Shutdown::new();
        let t = s.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = signal() => t.trigger(),
                // Triggered by hand first: stop listening for the signal.
                () = t.cancelled() => {}
            }
        });
        s
    }

    /// Asks everything holding a clone (and every child) to stop. Idempotent.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether shutdown was triggered; for loops that cannot await (the processor's).
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once shutdown is triggered (at once if it already was).
    pub async fn cancelled(&self) {
        self.0.cancelled().await
    }

    /// [`Shutdown::cancelled`] as an owned `'static` future, for APIs that keep it (axum's
    /// `with_graceful_shutdown`, `tokio::spawn`).
    pub fn wait_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        self.0.clone().cancelled_owned()
    }

    /// A handle triggered with this one, or alone.
    pub fn child(&self) -> Shutdown {
        Shutdown(self.0.child_token())
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// The bound sockets a service serves on.
///
/// - ingest: `public` (required) serves the API and the admin endpoints (`ingest.listen`);
///   `admin`, if given, serves the admin endpoints alone as well.
/// - processor, sink: `admin` serves `/metrics`, `/healthz`, `/readyz` (`processor.listen`,
///   `sink.listen`); without it they run with no HTTP endpoint. `public` is not used.
#[derive(Debug, Default)]
pub struct Listeners {
    pub public: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Only a public (API) listener.
    pub fn public(listener: TcpListener) -> Listeners {
        Listeners {
            public: Some(listener),
            admin: None,
        }
    }

    /// Only an admin listener.
    pub fn admin(listener: TcpListener) -> Listeners {
        Listeners {
            public: None,
            admin: Some(listener),
        }
    }

    /// Binds `addr` (what `main` does with a configured address), naming it on failure.
    pub async fn bind<A>(addr: A) -> Result<TcpListener, BindError>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        TcpListener::bind(&addr).await.map_err(|source| BindError {
            addr: addr.to_string(),
            source,
        })
    }

    /// A listener on a free loopback port the kernel picks (what tests use; read the port
    /// back with `local_addr`).
    pub async fn loopback() -> Result<TcpListener, BindError> {
        Listeners::bind("127.0.0.1:0").await
    }
}

/// A listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

impl From<BindError> for std::io::Error {
    fn from(e: BindError) -> std::io::Error {
        std::io::Error::new(e.source.kind(), e.to_string())
    }
}

/// Exponential backoff: `min`, then doubling up to `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    retries: u32,
    max_retries: Option<u32>,
}

impl Backoff {
    /// Delays from `min` (at least 1 ms) doubling to `max` (at least `min`), retrying for ever.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
            retries: 0,
            max_retries: None,
        }
    }

    /// Gives up (see [`Backoff::exhausted`]) after `n` retries since the last reset.
    pub fn with_max_retries(mut self, n: u32) -> Backoff {
        self.max_retries = Some(n);
        self
    }

    /// The delay to wait now; doubles the next one up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        self.retries = self.retries.saturating_add(1);
        d
    }

    /// Back to `min` and no retries counted (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
        self.retries = 0;
    }

    /// Delays handed out since the last reset.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Whether the retry limit (if any) is used up.
    pub fn exhausted(&self) -> bool {
        self.max_retries.is_some_and(|n| self.retries >= n)
    }
}

/// An error that knows whether trying the same thing again may succeed.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

/// Why [`retry`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    /// A final error: not retryable, or the backoff's retry limit was used up.
    #[error(transparent)]
    Failed(E),
    /// Shutdown came while waiting to retry; the last error the operation returned.
    #[error("shutdown while retrying (last error: {0})")]
    Shutdown(E),
}

impl<E> RetryError<E> {
    /// The last error of the operation, either way.
    pub fn into_inner(self) -> E {
        match self {
            RetryError::Failed(e) | RetryError::Shutdown(e) => e,
        }
    }

    pub fn is_shutdown(&self) -> bool {
        matches!(self, RetryError::Shutdown(_))
    }
}

/// Runs `op` until it succeeds, fails for good, or `shutdown` comes while waiting to retry,
/// logging each retry at warn level with `what`.
///
/// `op` is always tried at least once and never interrupted: shutdown only cuts the waits.
/// The backoff is reset after a success, so one `Backoff` can serve a loop of calls.
///
/// ```
/// # use common::lifecycle::{retry, Backoff, Retryable, Shutdown};
/// # use std::time::Duration;
/// # #[derive(Debug)] struct Busy;
/// # impl std::fmt::Display for Busy { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("busy") } }
/// # impl Retryable for Busy { fn is_retryable(&self) -> bool { true } }
/// # async fn example(shutdown: Shutdown) {
/// let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
/// let mut calls = 0;
/// let r = retry(&shutdown, &mut backoff, "example", || {
///     calls += 1;
///     let n = calls;
///     async move { if n < 3 { Err(Busy) } else { Ok(n) } }
/// })
/// .await;
/// assert_eq!(r.unwrap(), 3);
/// # }
/// ```
pub async fn retry<T, E, F, Fut>(
    shutdown: &Shutdown,
    backoff: &mut Backoff,
    what: &str,
    op: F,
) -> Result<T, RetryError<E>>
where
    E: Retryable + fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_with(shutdown, backoff, op, |e, attempt, delay| {
        tracing::warn!(what, attempt, error = %e, ?delay, "failed; retrying");
    })
    .await
}

/// [`retry`] calling `on_retry(error, attempt, delay)` before each wait instead of logging
/// (for call sites that count failures in metrics or log their own words). `attempt` counts
/// from 1 (the attempt that just failed).
pub async fn retry_with<T, E, F, Fut>(
    shutdown: &Shutdown,
    backoff: &mut Backoff,
    mut op: F,
    mut on_retry: impl FnMut(&E, u32, Duration),
) -> Result<T, RetryError<E>>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let e = match op().await {
            Ok(v) => {
                backoff.reset();
                return Ok(v);
            }
            Err(e) => e,
        };
        if !e.is_retryable() || backoff.exhausted() {
            backoff.reset();
            return Err(RetryError::Failed(e));
        }
        let delay = backoff.next_delay();
        if shutdown.is_triggered() {
            return Err(RetryError::Shutdown(e));
        }
        on_retry(&e, attempt, delay);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return Err(RetryError::Shutdown(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::time::Instant;

    #[derive(Debug, PartialEq)]
    enum E {
        Transient(u32),
        Permanent,
    }

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            matches!(self, E::Transient(_))
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_to_max_and_resets() {
        let mut b = Backoff::new(ms(100), ms(350));
        let d: Vec<_> = (0..4).map(|_| b.next_delay()).collect();
        assert_eq!(d, [ms(100), ms(200), ms(350), ms(350)]);
        assert_eq!(b.retries(), 4);
        assert!(!b.exhausted());
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(b.retries(), 1);
        // Degenerate bounds: never zero, max never below min.
        let mut z = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(z.next_delay(), ms(1));
        let mut inv = Backoff::new(ms(500), ms(10));
        assert_eq!([inv.next_delay(), inv.next_delay()], [ms(500), ms(500)]);
        let mut lim = Backoff::new(ms(1), ms(1)).with_max_retries(2);
        lim.next_delay();
        assert!(!lim.exhausted());
        lim.next_delay();
        assert!(lim.exhausted());
    }

    /// An operation failing transiently `fails` times, then returning the attempt number.
    fn flaky(
        fails: u32,
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> std::future::Ready<Result<u32, E>>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let op = move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            std::future::ready(if n <= fails {
                Err(E::Transient(n))
            } else {
                Ok(n)
            })
        };
        (calls, op)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_backoff_until_success() {
        let shutdown = Shutdown::new();
        let mut b = Backoff::new(ms(100), ms(1000));
        let (calls, op) = flaky(3);
        let mut seen = Vec::new();
        let t0 = Instant::now();
        let r = retry_with(&shutdown, &mut b, op, |e, attempt, delay| {
            seen.push((format!("{e}"), attempt, delay));
        })
        .await;
        assert_eq!(r.unwrap(), 4);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Slept exactly 100 + 200 + 400 ms of (paused) time.
        assert_eq!(t0.elapsed(), ms(700));
        assert_eq!(
            seen,
            [
                ("Transient(1)".to_string(), 1, ms(100)),
                ("Transient(2)".to_string(), 2, ms(200)),
                ("Transient(3)".to_string(), 3, ms(400)),
            ]
        );
        // Reset after the success: the next failure waits `min` again.
        assert_eq!(b.next_delay(), ms(100));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_on_a_final_error_at_once() {
        let shutdown = Shutdown::new();
        let mut b = Backoff::new(ms(100), ms(1000));
        let t0 = Instant::now();
        let r: Result<(), _> =
            retry(&shutdown, &mut b, "test", || async { Err(E::Permanent) }).await;
        assert!(matches!(r, Err(RetryError::Failed(E::Permanent))));
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_retry_limit_is_used_up() {
        let shutdown = Shutdown::new();
        let mut b = Backoff::new(ms(10), ms(10)).with_max_retries(2);
        let (calls, op) = flaky(10);
        let r = retry(&shutdown, &mut b, "test", op).await;
        assert!(matches!(r, Err(RetryError::Failed(E::Transient(3)))));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cuts_the_wait_not_the_operation() {
        let shutdown = Shutdown::new();
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let (calls, op) = flaky(u32::MAX);
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(90)).await;
            s.trigger();
        });
        let t0 = Instant::now();
        let r = retry(&shutdown, &mut b, "test", op).await;
        // Tried at 0 s and 60 s; the wait after the second try was cut at 90 s.
        assert!(matches!(r, Err(RetryError::Shutdown(E::Transient(2)))));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(t0.elapsed(), Duration::from_secs(90));
        // Already triggered: one attempt, no wait.
        let (calls, op) = flaky(u32::MAX);
        let t0 = Instant::now();
        let r = retry(&shutdown, &mut b, "test", op).await;
        assert!(r.unwrap_err().is_shutdown());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_reaches_every_clone_and_child() {
        let s = Shutdown::new();
        let clone = s.clone();
        let child = s.child();
        let waiter = tokio::spawn(s.wait_owned());
        assert!(!clone.is_triggered() && !child.is_triggered());
        // A child alone does not stop its parent.
        let lone = s.child();
        lone.trigger();
        assert!(lone.is_triggered() && !s.is_triggered());
        clone.trigger();
        assert!(s.is_triggered() && child.is_triggered());
        child.cancelled().await;
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn listeners_bind_and_name_the_address_on_failure() {
        let l = Listeners::loopback().await.unwrap();
        let addr = l.local_addr().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        let e = Listeners::bind(addr.to_string()).await.unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        let ls = Listeners::admin(l);
        assert!(ls.public.is_none() && ls.admin.is_some());
    }
}
