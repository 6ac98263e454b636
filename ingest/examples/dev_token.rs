//! Prints an HS256 bearer token for local testing (schemathesis, curl), signed with the
//! configured `auth.hs256_secret`; optionally creates a scratch contacts topic first.
//!
//! `cargo run -q -p ingest --example dev_token -- --person p1 --device d1 [--create-topic T]`

use clap::Parser;
use common::cli::ConfigArgs;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::time::Duration;

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[arg(long, default_value = "dev-person")]
    person: String,
    #[arg(long, default_value = "dev-device")]
    device: String,
    /// Token lifetime.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Create this topic (kafka.partitions partitions) if missing, then print the token.
    #[arg(long)]
    create_topic: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let cfg = args.config.load().unwrap_or_else(|e| panic!("{e}"));
    if let Some(t) = &args.create_topic {
        let admin: AdminClient<DefaultClientContext> = cfg
            .kafka_client_config("dev-token")
            .create()
            .expect("admin client");
        let res = admin
            .create_topics(
                &[NewTopic::new(
                    t,
                    cfg.kafka.partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topic");
        for r in res {
            match r {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, e)) => panic!("create topic {t}: {e:?}"),
            }
        }
    }
    let exp = common::record::now_millis() / 1000 + args.ttl.as_secs() as i64;
    let token = ingest::auth::testing::hs256(
        &cfg.auth.hs256_secret,
        &serde_json::json!({"sub": args.person, "device_id": args.device, "exp": exp}),
    );
    println!("{token}");
}
