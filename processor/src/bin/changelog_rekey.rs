//! `changelog_rekey` — step 5 of "Repartitioning the contacts topic safely"
//! (docs/OPERATIONS.md): copies the processor's changelog into a new, empty changelog topic
//! with as many partitions as the (already enlarged) contacts topic, each person's state in
//! the partition its id now maps to, every partition with a clock. See `processor::rekey`.
//! Run it only while every processor is stopped.
//!
//! ```text
//! changelog_rekey [--config FILE] --to NEW_TOPIC [--from OLD_TOPIC]
//! ```
//! Brokers and the contacts topic come from the configuration (`kafka.*`); `--from` defaults
//! to `kafka.changelog_topic`.

use anyhow::Context;
use clap::Parser;
use common::cli::ConfigArgs;

#[derive(Debug, Parser)]
#[command(about = "rebuild the processor changelog for a new contacts partition count")]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// The new changelog topic (must exist, be empty, compacted, with the contacts topic's
    /// partition count).
    #[arg(long)]
    to: String,
    /// The old changelog topic (default: `kafka.changelog_topic`).
    #[arg(long)]
    from: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = args.config.load()?;
    let from = args
        .from
        .unwrap_or_else(|| cfg.kafka.changelog_topic.clone());
    let client = cfg.kafka_client_config("changelog-rekey");
    let plan = processor::rekey::run(&client, &from, &args.to, &cfg.kafka.contacts_topic)
        .with_context(|| format!("rebuilding {from} into {}", args.to))?;
    println!(
        "{} persons written to {} ({} moved to another partition), {} records; now set \
         kafka.changelog_topic = \"{}\" for every processor",
        plan.persons,
        args.to,
        plan.moved,
        plan.records.len(),
        args.to
    );
    Ok(())
}
