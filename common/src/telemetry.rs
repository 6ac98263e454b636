//! Logging and the small admin HTTP server (`/metrics`, `/healthz`, `/readyz`), shared by the
//! services. Shutdown signals are [`crate::lifecycle::Shutdown::on_signal`].

use crate::config::{LogConfig, LogFormat};
use crate::lifecycle::Shutdown;
use axum::{Router, http::StatusCode, response::IntoResponse, routing::get};
use prometheus::{Encoder, Registry, TextEncoder};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global tracing subscriber. `RUST_LOG` overrides `log.level`.
/// Never log tokens or secrets; log person ids only at debug level.
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // try_init: tests may call this more than once.
    let _ = if cfg.format == LogFormat::Json {
        registry
            .with(fmt::layer().json().with_current_span(false))
            .try_init()
    } else {
        registry.with(fmt::layer().with_target(true)).try_init()
    };
}

/// Readiness shared between a service and its admin endpoint.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render_metrics(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Routes `/metrics`, `/healthz` and `/readyz`, to be merged into a service's router or served
/// alone by [`serve_admin`].
pub fn admin_router(registry: Registry, ready: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let r = registry.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        render_metrics(&r),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.get() {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
                    }
                }
            }),
        )
}

/// Serves the admin router on `listener` until `shutdown` is triggered.
pub async fn serve_admin(
    listener: TcpListener,
    registry: Registry,
    ready: Readiness,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, admin_router(registry, ready))
        .with_graceful_shutdown(shutdown.wait_owned())
        .await
}
