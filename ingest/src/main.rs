//! The `ingest` binary: configuration, logging, signals; the service itself is `ingest::run`.

use anyhow::Context;
use clap::Parser;
use common::cli::ConfigArgs;
use common::lifecycle::{Listeners, Shutdown};

/// lastseen ingest: the HTTP API the phones send location pings to.
#[derive(Debug, Parser)]
#[command(name = "ingest", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Listen address; overrides `ingest.listen`.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = args.config.load()?;
    if let Some(l) = args.listen {
        config.ingest.listen = l;
    }
    common::telemetry::init_logging(&config.log);
    let listeners = Listeners::public(Listeners::bind(&config.ingest.listen).await?);
    ingest::run(config, listeners, Shutdown::on_signal())
        .await
        .context("ingest stopped")?;
    Ok(())
}
