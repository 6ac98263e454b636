//! HTTP for tests, through `reqwest`.

use anyhow::{Result, bail};
use std::time::{Duration, Instant};

/// `GET url`: (status, body), or None if the request failed (nothing listening).
pub async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// `GET url`: the body's bytes; panics unless the answer is 2xx.
pub async fn get_bytes(url: &str) -> Vec<u8> {
    let r = reqwest::get(url).await.expect("request");
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.bytes().await.expect("body").to_vec()
}

/// `POST base + path` with a JSON content type, the body and, if given, a bearer token.
pub async fn post(
    base: &str,
    path: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

/// The text of `base/metrics`; panics if nothing answers.
pub async fn metrics(base: &str) -> String {
    get(&format!("{base}/metrics")).await.expect("metrics").1
}

/// The value of the sample `series` (name and labels, as Prometheus prints them) in the
/// metrics at `base/metrics`; 0 if absent.
pub async fn metric(base: &str, series: &str) -> f64 {
    metrics(base)
        .await
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `base/readyz` answers 200, calling `alive` between attempts (which may fail,
/// e.g. because the service exited).
pub async fn wait_ready(
    base: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        alive()?;
        if Instant::now() > deadline {
            bail!("{base}/readyz not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
