//! `processor` — runs the silence detector against Kafka. See `processor::service`.

use anyhow::Context;
use clap::Parser;
use common::cli::ConfigArgs;
use common::lifecycle::{Listeners, Shutdown};

/// Per-person silence and deregistration detection over the contacts topic, exactly once.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = args.config.load()?;
    common::telemetry::init_logging(&cfg.log);
    let admin = Listeners::bind(&cfg.processor.listen)
        .await
        .context("processor.listen")?;
    tracing::info!(listen = %cfg.processor.listen, topic = %cfg.kafka.contacts_topic, "processor starting");
    processor::service::run(cfg, Listeners::admin(admin), Shutdown::on_signal()).await?;
    Ok(())
}
