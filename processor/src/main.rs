//! `processor` — runs the silence detector against Kafka. See `processor::service`.

use anyhow::Context;
use clap::Parser;
use common::cli::ConfigArgs;

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
    let listener = tokio::net::TcpListener::bind(&cfg.processor.listen)
        .await
        .with_context(|| format!("binding processor.listen {}", cfg.processor.listen))?;
    tracing::info!(listen = %cfg.processor.listen, topic = %cfg.kafka.contacts_topic, "processor starting");
    processor::service::run(cfg, listener, common::telemetry::shutdown_signal()).await?;
    Ok(())
}
