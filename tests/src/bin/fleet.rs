//! `fleet` — a simulated fleet of phones against ingest, writing the ground truth.
//!
//! ```text
//! fleet run --persons 300 --duration 60s --out .local/demo/truth.json
//! fleet token --person p1 --device d1
//! fleet create-topics
//! ```
//! Policy, clock, secret, ingest address and topics come from the lastseen configuration
//! (`--config FILE`, `LASTSEEN_*`), exactly as the services read it.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use common::config::parse_duration;
use e2e::fleet::{model::Policy, sim};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "fleet", about = "lastseen fleet simulator")]
struct Args {
    /// lastseen configuration file (the environment overrides it, as for the services).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the fleet against ingest and write the ground truth.
    Run(RunArgs),
    /// Print a signed HS256 token (the configured secret) for a person and device.
    Token {
        #[arg(long)]
        person: String,
        #[arg(long)]
        device: String,
    },
    /// Create the configured topics (contacts, events, changelog compacted, dead letters).
    CreateTopics,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Ingest base URL; default http://<ingest.listen>.
    #[arg(long)]
    ingest: Option<String>,
    #[arg(long, default_value_t = 300)]
    persons: usize,
    /// How long the persons act (`60s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Longest time to keep retrying unacknowledged requests afterwards.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    drain: Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Planned silences keep at least this distance from each threshold.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    margin: Duration,
    /// Mean interval between uploads of a steady person.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    interval: Duration,
    /// Pings per upload: 1..=max-batch.
    #[arg(long, default_value_t = 5)]
    max_batch: usize,
    #[arg(long, default_value_t = 0.4)]
    silent_share: f64,
    #[arg(long, default_value_t = 0.05)]
    unregistered_share: f64,
    #[arg(long, default_value_t = 0.02)]
    invalid_share: f64,
    #[arg(long, default_value_t = 0.03)]
    duplicate_share: f64,
    #[arg(long, default_value_t = 0.01)]
    address_change_share: f64,
    /// No new actions after this many requests.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Person ids are `<id-prefix>-<n>`.
    #[arg(long, default_value = "fleet")]
    id_prefix: String,
    /// Ground-truth file.
    #[arg(long, default_value = "fleet-truth.json")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let config = common::Config::load(args.config.as_deref()).context("configuration")?;
    match args.command {
        Cmd::Token { person, device } => {
            if config.auth.hs256_secret.is_empty() {
                bail!("auth.hs256_secret is empty: HS256 is disabled");
            }
            println!(
                "{}",
                testkit::token_with(&config.auth.hs256_secret, &person, &device)
            );
        }
        Cmd::CreateTopics => create_topics(&config).await?,
        Cmd::Run(a) => {
            let url = a
                .ingest
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.ingest.listen));
            if !is_loopback(&url) {
                bail!("the fleet only talks to loopback addresses, not {url}");
            }
            let ms = |d: Duration| d.as_millis() as i64;
            let mut c = sim::SimConfig::new(
                &url,
                &config.auth.hs256_secret,
                Policy::from_config(&config),
            );
            c.persons = a.persons;
            c.duration = a.duration;
            c.drain = a.drain;
            c.seed = a.seed;
            c.margin_ms = ms(a.margin);
            c.ping_interval_ms = ms(a.interval);
            c.max_batch = a.max_batch;
            c.silent_share = a.silent_share;
            c.unregistered_share = a.unregistered_share;
            c.invalid_share = a.invalid_share;
            c.duplicate_share = a.duplicate_share;
            c.address_change_share = a.address_change_share;
            c.max_requests = a.max_requests;
            c.id_prefix = a.id_prefix;
            eprintln!(
                "fleet: {} persons for {:?} against {url}; notice {} ms, deregister {} ms, outage_after {} ms",
                c.persons,
                c.duration,
                c.policy.notice_ms,
                c.policy.deregister_ms,
                c.policy.outage_after_ms
            );
            let truth = sim::run(c).await?;
            truth
                .write(&a.out)
                .with_context(|| format!("writing {}", a.out.display()))?;
            let s = &truth.stats;
            let ambiguous = truth
                .persons
                .values()
                .filter(|p| p.expected.ambiguous.is_some())
                .count();
            eprintln!(
                "fleet: done: {} requests, {} acknowledged, {} pings acknowledged, {} retried attempts, \
                 {} duplicate requests, invalid {} sent / {} rejected / {} accepted, {} ambiguous persons; \
                 statuses {:?}; truth in {}",
                s.requests,
                s.acknowledged_requests,
                s.acknowledged_pings,
                s.retried_attempts,
                s.duplicate_requests,
                s.invalid_sent,
                s.invalid_rejected,
                s.invalid_accepted,
                ambiguous,
                s.by_status,
                a.out.display()
            );
        }
    }
    Ok(())
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    matches!(host, "127.0.0.1" | "localhost" | "[" | "::1") || host.starts_with("127.")
}

async fn create_topics(config: &common::Config) -> Result<()> {
    use testkit::kafka::{Admin, TopicSpec};
    let k = &config.kafka;
    let spec =
        |name: &str, partitions| TopicSpec::new(name, partitions).replication(k.replication_factor);
    Admin::at(&k.brokers)
        .create_topics(&[
            spec(&k.contacts_topic, k.partitions),
            spec(&k.events_topic, k.partitions),
            spec(&k.changelog_topic, k.partitions).compacted(),
            spec(&k.dead_letter_topic, 1),
        ])
        .await?;
    eprintln!("fleet: topics ready");
    Ok(())
}
