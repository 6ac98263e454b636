//! `verify` — compares ClickHouse with the fleet's ground truth; exits 1 on any difference.
//!
//! ```text
//! verify --truth .local/demo/truth.json [--database lastseen] [--lag 5s] [--wait 120s]
//! ```
//! ClickHouse URL and database default to the lastseen configuration (`LASTSEEN_CLICKHOUSE__*`).

use anyhow::{Context, Result};
use clap::Parser;
use common::config::parse_duration;
use e2e::fleet::{truth::Truth, verify};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "verify",
    about = "verify ClickHouse against the fleet's ground truth"
)]
struct Args {
    #[arg(long)]
    config: Option<PathBuf>,
    /// The ground-truth file written by `fleet run`.
    #[arg(long, default_value = "fleet-truth.json")]
    truth: PathBuf,
    /// ClickHouse HTTP URL; default clickhouse.url.
    #[arg(long)]
    clickhouse: Option<String>,
    /// Database; default clickhouse.database.
    #[arg(long)]
    database: Option<String>,
    /// Events whose deadline is older than this must be visible.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    lag: Duration,
    /// Keep re-checking while the pipeline drains, up to this long.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    wait: Duration,
    /// Differences printed at most.
    #[arg(long, default_value_t = 40)]
    max_lines: usize,
    /// Also print the report as one JSON line.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let config = common::Config::load(a.config.as_deref()).context("configuration")?;
    let truth = Truth::read(&a.truth).with_context(|| format!("reading {}", a.truth.display()))?;
    let mut cfg = config.clickhouse;
    cfg.url = a.clickhouse.unwrap_or(cfg.url);
    cfg.database = a.database.unwrap_or(cfg.database);
    let ch = testkit::Db::with_config(&cfg);
    let opts = verify::Options {
        lag_ms: a.lag.as_millis() as i64,
        wait: a.wait,
        max_lines: a.max_lines,
        progress: true,
    };
    let r = verify::verify(&truth, &ch, &opts).await?;
    verify::print(&r, a.max_lines);
    if a.json {
        let mut j = serde_json::to_value(&r)?;
        j["differences"] = serde_json::json!(r.differences.len());
        println!("{j}");
    }
    std::process::exit(if r.pass { 0 } else { 1 });
}
