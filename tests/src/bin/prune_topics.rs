//! `prune_topics` — deletes the harness topics (`e2e.<test>_<pid>_<nanos>.*`, the one scheme of
//! every harness: the end-to-end stacks, the sink's and ingest's integration tests, the
//! benchmarks' test namespaces) that test processes which no longer run left behind (a failed
//! or crashed test keeps its topics for debugging; a passing one deletes them itself). `tests/run` calls it
//! before the tests. Topics of a live pid, `lastseen.*` and other suites' topics are never
//! touched. Kafka from `LASTSEEN_TEST_KAFKA` (default `127.0.0.1:9092`).
//!
//! ```text
//! prune_topics [--dry-run]
//! ```

use anyhow::Result;
use clap::Parser;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "delete e2e.* topics whose test process is gone")]
struct Args {
    /// Only list what would be deleted.
    #[arg(long)]
    dry_run: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let t0 = Instant::now();
    let stale = testkit::kafka::stale_test_topics().await?;
    for t in &stale {
        println!("{t}");
    }
    if !args.dry_run {
        let names: Vec<&str> = stale.iter().map(String::as_str).collect();
        testkit::kafka::delete_topics(&names).await?;
    }
    eprintln!(
        "prune_topics: {} {} stale e2e.* topics in {:.2}s",
        if args.dry_run {
            "would delete"
        } else {
            "deleted"
        },
        stale.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
