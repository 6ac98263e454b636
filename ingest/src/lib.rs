//! ingest: the HTTP API the phones talk to.
//!
//! `POST /v1/pings` and `POST /v1/registrations` authenticate the device by its bearer token
//! (the person and the device come only from the token), validate the body naming every
//! problem, stamp the server receive time, and answer `202` only after Kafka acknowledged
//! every record of the request. A background task writes a tick into every partition of the
//! contacts topic each `clock.tick_interval` while the producer is healthy.
//!
//! The service is [`run`]: give it the configuration, its [`Listeners`] and a [`Shutdown`].
//!
//! # Layout
//! - this file — the routes, the request handler, [`RequestError`] and [`run`];
//! - [`auth`] — bearer tokens (RS256/ES256/HS256) to an [`auth::Identity`], with a bounded
//!   cache of verified tokens;
//! - [`decode`] — request bodies: `capture` (JSON into values), `validation` (every bad field
//!   named), `fast` (the common pings body on the shared JSON cursor, exactly the full
//!   decoder's answer or none);
//! - [`kafka`] — the producer: batches of records, delivery reports on the runtime, ticks,
//!   the partition of a request (`kafka::partition`);
//! - [`ratelimit`] — per-device limits (`governor`); [`metrics`] — what `/metrics` exports.
//!
//! The records themselves are encoded by the one codec, `common::codec`.

pub mod auth;
pub mod decode;
pub mod kafka;
pub mod metrics;
pub mod ratelimit;

use crate::auth::{AuthError, Identity, Verifier};
use crate::decode::{DecodeError, Detail, Limits, PingIn};
use crate::kafka::{Kafka, ProduceError, Records};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::Config;
use common::lifecycle::{Listeners, Shutdown};
use common::record::{Millis, now_millis};
use common::telemetry::Readiness;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use decode::{decode_pings, decode_registration};

/// The OpenAPI 3 document of this API, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Most rate-limit buckets kept in memory.
const MAX_BUCKETS: usize = 1_000_000;

/// Why a request was refused. Each error knows its status and whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("unauthorized: {0}")]
    Unauthorized(#[from] AuthError),
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("cannot read body: {0}")]
    BodyRead(String),
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    #[error("unavailable: {0}")]
    Unavailable(#[from] ProduceError),
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            RequestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            RequestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::BodyRead(_) | RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
            RequestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the same request may succeed later (429, 503); the others need a change.
    pub fn is_retryable(&self) -> bool {
        match self {
            RequestError::RateLimited { .. } => true,
            RequestError::Unavailable(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// Metric label of `lastseen_ingest_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::Unauthorized(_) => "unauthorized",
            RequestError::RateLimited { .. } => "rate_limited",
            RequestError::TooLarge { .. } => "too_large",
            RequestError::UnsupportedMediaType => "unsupported_media_type",
            RequestError::BodyRead(_) => "body_read",
            RequestError::Invalid(DecodeError::Malformed { .. }) => "malformed",
            RequestError::Invalid(DecodeError::Invalid { .. }) => "invalid",
            RequestError::Unavailable(_) => "unavailable",
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            RequestError::RateLimited { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            RequestError::Unavailable(ProduceError::QueueFull) => Some(1),
            RequestError::Unavailable(_) => Some(2),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a [Detail]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_bytes: Option<usize>,
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let retry_after_s = self.retry_after_secs();
        let mut body = ErrorBody {
            error: "",
            reason: None,
            details: None,
            truncated: false,
            line: None,
            column: None,
            retry_after_s,
            limit_bytes: None,
        };
        match &self {
            RequestError::Unauthorized(e) => {
                body.error = "unauthorized";
                body.reason = Some(e.0.clone());
            }
            RequestError::RateLimited { .. } => {
                body.error = "rate_limited";
                body.reason = Some("too many requests from this device".into());
            }
            RequestError::TooLarge { limit } => {
                body.error = "payload_too_large";
                body.reason = Some(format!("request body larger than {limit} bytes"));
                body.limit_bytes = Some(*limit);
            }
            RequestError::UnsupportedMediaType => {
                body.error = "unsupported_media_type";
                body.reason = Some("Content-Type must be application/json".into());
            }
            RequestError::BodyRead(e) => {
                body.error = "invalid_request";
                body.reason = Some(format!("cannot read body: {e}"));
            }
            RequestError::Invalid(DecodeError::Malformed {
                line,
                column,
                message,
            }) => {
                body.error = "invalid_request";
                body.reason = Some(format!(
                    "malformed JSON at line {line} column {column}: {message}"
                ));
                body.line = Some(*line);
                body.column = Some(*column);
            }
            RequestError::Invalid(DecodeError::Invalid { details, truncated }) => {
                body.error = "invalid_request";
                body.details = Some(details);
                body.truncated = *truncated;
            }
            RequestError::Unavailable(e) => {
                body.error = "unavailable";
                body.reason = Some(e.to_string());
            }
        }
        let mut resp = json_response(self.status(), &body);
        if let Some(s) = retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if matches!(self, RequestError::Unauthorized(_)) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// `202 {"accepted": n}`.
fn accepted_response(n: usize) -> Response {
    (
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        format!(r#"{{"accepted":{n}}}"#),
    )
        .into_response()
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("auth keys: {0}")]
    Keys(#[from] auth::KeyError),
    #[error("kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

impl RunError {
    /// Whether restarting with the same configuration may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RunError::Io(_))
    }
}

/// Appends the contacts-topic records of `pings` (keyed by person) to `out`, with the one
/// codec's ping encoder (the person and device ids are escaped once per request).
pub fn encode_pings(id: &Identity, pings: &[PingIn], received_at: Millis, out: &mut Records) {
    let enc = common::codec::contact::PingEncoder::new(&id.person_id, &id.device_id, received_at);
    for p in pings {
        out.push_raw(id.person_id.as_bytes(), |buf| {
            enc.encode(p.device_ts, p.lat, p.lon, p.accuracy_m, buf)
        });
    }
}

struct App {
    verifier: Verifier,
    limiter: RateLimiter,
    limits: Limits,
    max_body: usize,
    kafka: Arc<Kafka>,
    metrics: Arc<Metrics>,
    /// The metric children of the happy path, looked up once.
    pings: RouteMetrics,
    registrations: RouteMetrics,
}

/// Children of the per-route metrics for the common case (a 202), resolved at start-up so a
/// request does not hash label values.
struct RouteMetrics {
    accepted: prometheus::IntCounter,
    records: prometheus::IntCounter,
    duration: prometheus::Histogram,
}

impl RouteMetrics {
    fn new(m: &Metrics, route: Route) -> RouteMetrics {
        RouteMetrics {
            accepted: m
                .requests
                .with_label_values(&[route.label(), StatusCode::ACCEPTED.as_str()]),
            records: m.records.with_label_values(&[route.record_type()]),
            duration: m.duration.with_label_values(&[route.label()]),
        }
    }
}

impl App {
    fn route_metrics(&self, route: Route) -> &RouteMetrics {
        match route {
            Route::Pings => &self.pings,
            Route::Registrations => &self.registrations,
        }
    }
}

#[derive(Clone, Copy)]
enum Route {
    Pings,
    Registrations,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Pings => "/v1/pings",
            Route::Registrations => "/v1/registrations",
        }
    }

    /// Label of `lastseen_ingest_records_total`.
    fn record_type(self) -> &'static str {
        match self {
            Route::Pings => "ping",
            Route::Registrations => "registration",
        }
    }
}

/// The body, at most `limit` bytes (`http_body_util::Limited`). A declared length (hyper
/// reports `Content-Length` as the body's exact size hint) above the limit is refused before
/// anything is read.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, RequestError> {
    if HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(RequestError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(RequestError::TooLarge { limit }),
        Err(e) => Err(RequestError::BodyRead(e.to_string())),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || (mime.len() > 5
            && mime[..mime.len() - 5]
                .to_ascii_lowercase()
                .starts_with("application/")
            && mime.to_ascii_lowercase().ends_with("+json"))
}

async fn handle(
    app: &App,
    route: Route,
    headers: HeaderMap,
    body: Body,
) -> Result<usize, RequestError> {
    let id = app
        .verifier
        .verify_header(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))?;
    app.limiter
        .check(&id.person_id, &id.device_id)
        .map_err(|retry_after| RequestError::RateLimited { retry_after })?;
    if !is_json(&headers) {
        return Err(RequestError::UnsupportedMediaType);
    }
    let bytes = read_body(body, app.max_body).await?;
    let received_at = now_millis();
    let records = match route {
        Route::Pings => {
            let pings = decode_pings(&bytes, &app.limits, received_at)?;
            let mut r = Records::with_capacity(pings.len());
            encode_pings(&id, &pings, received_at, &mut r);
            r
        }
        Route::Registrations => {
            let reg = decode::decode_registration(&bytes)?;
            let mut r = Records::with_capacity(1);
            let rec = common::Contact::Registration(common::Registration {
                person_id: id.person_id.clone(),
                device_id: id.device_id.clone(),
                address: reg.address,
                lat: reg.lat,
                lon: reg.lon,
                received_at,
            });
            r.push(&id.person_id, &rec);
            r
        }
    };
    drop(bytes);
    let n = records.len();
    app.kafka.send_all(records).await.inspect_err(|e| {
        app.metrics
            .produce_errors
            .with_label_values(&[e.reason()])
            .inc();
    })?;
    app.route_metrics(route).records.inc_by(n as u64);
    Ok(n)
}

async fn endpoint(app: Arc<App>, route: Route, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let result = handle(&app, route, headers, body).await;
    let resp = match result {
        Ok(n) => {
            app.route_metrics(route).accepted.inc();
            accepted_response(n)
        }
        Err(e) => {
            app.metrics.rejected.with_label_values(&[e.reason()]).inc();
            if let RequestError::Unavailable(p) = &e {
                tracing::warn!(error = %p, route = route.label(), "request refused: kafka");
            } else {
                tracing::debug!(
                    reason = e.reason(),
                    route = route.label(),
                    "request refused"
                );
            }
            let resp = e.into_response();
            app.metrics
                .requests
                .with_label_values(&[route.label(), resp.status().as_str()])
                .inc();
            resp
        }
    };
    app.route_metrics(route)
        .duration
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// Builds the HTTP router (API, `/openapi.json`, `/metrics`, `/healthz`, `/readyz`).
fn router(app: Arc<App>, ready: Readiness) -> Router {
    let registry = app.metrics.registry.clone();
    Router::new()
        .route(
            "/v1/pings",
            post(|State(app): State<Arc<App>>, req: Request| {
                // Split the request instead of extracting `HeaderMap`, which clones it.
                let (parts, body) = req.into_parts();
                endpoint(app, Route::Pings, parts.headers, body)
            }),
        )
        .route(
            "/v1/registrations",
            post(|State(app): State<Arc<App>>, req: Request| {
                // Split the request instead of extracting `HeaderMap`, which clones it.
                let (parts, body) = req.into_parts();
                endpoint(app, Route::Registrations, parts.headers, body)
            }),
        )
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    OPENAPI_JSON,
                )
            }),
        )
        .with_state(app)
        .merge(common::telemetry::admin_router(registry, ready))
}

/// Runs ingest until `shutdown` is triggered, then stops accepting, finishes the requests in
/// flight, stops the ticks and flushes the producer.
///
/// `listeners.public` (required) serves the API and the admin endpoints; `listeners.admin`,
/// if given, serves the admin endpoints alone as well.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), RunError> {
    let producer = kafka::producer_config(&config);
    run_with_producer(config, listeners, shutdown, producer).await
}

/// [`run`] with these librdkafka producer settings instead of [`kafka::producer_config`]'s
/// (the benchmark uses it to try other settings on ingest and its floor alike).
pub async fn run_with_producer(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
    producer: rdkafka::ClientConfig,
) -> Result<(), RunError> {
    let Some(listener) = listeners.public else {
        return Err(RunError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "ingest needs a public listener",
        )));
    };
    let verifier = Verifier::from_config(&config.auth)?;
    let kafka = Arc::new(Kafka::with_client_config(&config, producer)?);
    let metrics = Arc::new(Metrics::new());
    let ready = Readiness::default();
    let app = Arc::new(App {
        pings: RouteMetrics::new(&metrics, Route::Pings),
        registrations: RouteMetrics::new(&metrics, Route::Registrations),
        verifier,
        limiter: RateLimiter::new(
            config.ingest.rate_limit_per_device,
            config.ingest.rate_limit_burst,
            MAX_BUCKETS,
        ),
        limits: Limits::from_config(&config.ingest),
        max_body: config.ingest.max_body_bytes,
        kafka: kafka.clone(),
        metrics: metrics.clone(),
    });
    // The ticks and the sweeper stop after the server has drained, not with it.
    let stop = tokio_util::sync::CancellationToken::new();
    let ticks = tokio::spawn(kafka::tick_loop(
        kafka.clone(),
        config.clock.tick_interval,
        config.ingest.instance_id.clone(),
        ready.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    let sweeper = {
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = t.tick() => app.limiter.sweep(Instant::now()),
                }
            }
        })
    };
    tracing::info!(
        addr = %listener.local_addr()?,
        topic = %config.kafka.contacts_topic,
        "ingest listening"
    );
    let admin = listeners.admin.map(|l| {
        tokio::spawn(common::telemetry::serve_admin(
            l,
            metrics.registry.clone(),
            ready.clone(),
            shutdown.clone(),
        ))
    });
    let served = axum::serve(listener, router(app, ready.clone()))
        .with_graceful_shutdown(shutdown.wait_owned())
        .await;
    ready.set(false);
    stop.cancel();
    if let Some(a) = admin {
        let _ = a.await;
    }
    let _ = ticks.await;
    let _ = sweeper.await;
    let timeout = config.ingest.produce_timeout;
    let k = kafka.clone();
    match tokio::task::spawn_blocking(move || k.flush(timeout)).await {
        Ok(Ok(())) => tracing::info!("producer flushed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "producer flush incomplete"),
        Err(e) => tracing::warn!(error = %e, "producer flush panicked"),
    }
    served?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_pings_are_contacts() {
        let id = Identity {
            person_id: "p\"1".into(),
            device_id: "d1".into(),
        };
        let pings = [
            PingIn {
                device_ts: 5,
                lat: 55.751_234_567_8,
                lon: -37.6,
                accuracy_m: Some(12.3),
            },
            PingIn {
                device_ts: -5,
                lat: 0.0,
                lon: 180.0,
                accuracy_m: None,
            },
        ];
        let mut r = Records::default();
        encode_pings(&id, &pings, 99, &mut r);
        assert_eq!(r.len(), 2);
        for (i, p) in pings.iter().enumerate() {
            let (k, v) = r.get(i);
            assert_eq!(k, b"p\"1");
            let c: common::Contact = serde_json::from_slice(v).unwrap();
            assert_eq!(
                c,
                common::Contact::Ping(common::Ping {
                    person_id: id.person_id.clone(),
                    device_id: id.device_id.clone(),
                    device_ts: p.device_ts,
                    lat: p.lat,
                    lon: p.lon,
                    accuracy_m: p.accuracy_m,
                    received_at: 99,
                })
            );
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_too_large_whether_declared_or_streamed() {
        let chunks = |n: usize| {
            Body::from_stream(futures::stream::iter(
                (0..n).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"0123456789"))),
            ))
        };
        assert_eq!(
            &read_body(chunks(3), 30).await.unwrap()[..],
            &b"0123456789".repeat(3)[..]
        );
        assert!(matches!(
            read_body(chunks(4), 30).await,
            Err(RequestError::TooLarge { limit: 30 })
        ));
        assert_eq!(
            read_body(Body::from("x".repeat(30)), 30)
                .await
                .unwrap()
                .len(),
            30
        );
        // A known length (as from `Content-Length`) is refused before reading.
        assert!(matches!(
            read_body(Body::from("x".repeat(31)), 30).await,
            Err(RequestError::TooLarge { limit: 30 })
        ));
        let failing = Body::from_stream(futures::stream::iter([Err::<Bytes, _>(
            std::io::Error::other("reset"),
        )]));
        match read_body(failing, 30).await {
            Err(RequestError::BodyRead(e)) => assert!(e.contains("reset"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_types() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            is_json(&m)
        };
        assert!(h("application/json"));
        assert!(h("Application/JSON; charset=utf-8"));
        assert!(h("application/vnd.lastseen+json"));
        assert!(!h("text/plain"));
        assert!(!h("+json"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn openapi_document_is_json_and_documents_every_status() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3."));
        for path in ["/v1/pings", "/v1/registrations"] {
            let responses = &v["paths"][path]["post"]["responses"];
            for s in ["202", "400", "401", "413", "415", "429", "503"] {
                assert!(responses.get(s).is_some(), "{path} {s}");
            }
        }
    }

    #[test]
    fn errors_know_their_status_and_retryability() {
        let e = RequestError::Unavailable(ProduceError::Timeout);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.is_retryable());
        let r = e.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let e = RequestError::RateLimited {
            retry_after: Duration::from_millis(1200),
        };
        assert!(e.is_retryable());
        assert_eq!(e.into_response().headers()[header::RETRY_AFTER], "2");
        assert!(!RequestError::UnsupportedMediaType.is_retryable());
        assert!(!RequestError::Unauthorized(AuthError("x".into())).is_retryable());
    }
}
