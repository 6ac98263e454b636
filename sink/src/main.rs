//! `sink [run]` — deliver Kafka records into ClickHouse; `sink migrate` — apply migrations.

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::cli::ConfigArgs;
use common::lifecycle::{Listeners, Shutdown};

#[derive(Debug, Parser)]
#[command(name = "sink", version, about = "lastseen sink: Kafka to ClickHouse")]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume the contacts and events topics into ClickHouse (the default).
    Run,
    /// Apply the ClickHouse migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = args.config.load().context("configuration")?;
    common::telemetry::init_logging(&config.log);
    match args.command.unwrap_or(Command::Run) {
        Command::Run => {
            let admin = Listeners::bind(&config.sink.listen)
                .await
                .context("sink.listen")?;
            sink::run(config, Listeners::admin(admin), Shutdown::on_signal())
                .await
                .context("sink failed")
        }
        Command::Migrate => {
            let (v, report) = sink::migrate_once(&config)
                .await
                .context("migrate failed")?;
            println!(
                "clickhouse {v}: applied {:?}, already applied {:?}, optional applied {:?}, \
                 optional skipped {:?}",
                report.applied, report.already, report.optional_applied, report.optional_skipped
            );
            Ok(())
        }
    }
}
