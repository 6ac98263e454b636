//! The services as child processes, so that tests can `kill -9` them; and the control scripts
//! of the shared servers.
//!
//! The binaries are taken from `target/debug` (or `LASTSEEN_BIN_DIR`): build them first
//! (`cargo build --workspace --bins`; `./tests/run` does).

use crate::db::Db;
use crate::namespace::Namespace;
use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    Ingest,
    Processor,
    Sink,
}

impl Service {
    pub fn binary(self) -> &'static str {
        match self {
            Service::Ingest => "ingest",
            Service::Processor => "processor",
            Service::Sink => "sink",
        }
    }
}

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the service binaries are.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("LASTSEEN_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    target.join("debug")
}

/// A free loopback port for a child service to listen on, picked *below* the kernel's
/// ephemeral range. A port from `bind(0)` lies inside that range, so between being picked here
/// and being bound by the service it can be taken as the local port of an outgoing connection
/// (any Kafka client's on this machine), and the service then fails to start with "address
/// in use" (seen in CI: a processor exiting at start-up). Services run in-process need none of
/// this: they are handed bound listeners ([`crate::inproc`]).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Where this process tries next: a random start, so concurrent test processes rarely
    // meet, then sequential, so one process never hands out the same port twice.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FLOOR: u32 = 10_000;
    let top = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&lo| lo > FLOOR + 1_000 && lo <= 65_536)
        .unwrap_or(32_768);
    let span = top - FLOOR;
    let _ = NEXT.compare_exchange(
        0,
        rand::random_range(1..=span),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = FLOOR + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port in {FLOOR}..{top}")
}

/// Sends SIGTERM to `child`, waits up to `timeout` for it to exit, and kills it (SIGKILL)
/// if it did not; Ok(false) in that case.
pub fn terminate(child: &mut Child, timeout: Duration) -> Result<bool> {
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    // It may have exited already: then there is nothing to signal.
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(false)
}

/// The `LASTSEEN_*` pairs of a test's policy and clock, in the configuration's duration syntax
/// (`"4s"`, `"250ms"`), for [`Stack::new`]'s `extra`.
pub fn policy_env<'a>(
    notice_after: &'a str,
    deregister_after: &'a str,
    outage_after: &'a str,
    tick_interval: &'a str,
) -> [(&'static str, &'a str); 4] {
    [
        ("LASTSEEN_POLICY__NOTICE_AFTER", notice_after),
        ("LASTSEEN_POLICY__DEREGISTER_AFTER", deregister_after),
        ("LASTSEEN_CLOCK__OUTAGE_AFTER", outage_after),
        ("LASTSEEN_CLOCK__TICK_INTERVAL", tick_interval),
    ]
}

/// One isolated pipeline: a [`Namespace`], ports and the service processes.
#[derive(Debug)]
pub struct Stack {
    pub name: String,
    pub env: BTreeMap<String, String>,
    pub ingest_url: String,
    pub processor_url: String,
    pub sink_url: String,
    pub database: String,
    pub contacts_topic: String,
    pub events_topic: String,
    pub changelog_topic: String,
    pub dead_letter_topic: String,
    pub log_dir: PathBuf,
    ns: Namespace,
    children: BTreeMap<(Service, usize), Child>,
}

impl Stack {
    /// Creates the topics (with `partitions` partitions) and picks ports; starts nothing.
    /// `extra` env pairs (`LASTSEEN_*`) override the harness defaults.
    pub async fn new(test: &str, partitions: i32, extra: &[(&str, &str)]) -> Result<Stack> {
        let ns = Namespace::new(test, partitions);
        ns.create_topics().await?;
        Stack::with_namespace(ns, extra)
    }

    /// A stack in `ns`, whose topics exist already; picks ports, starts nothing.
    pub fn with_namespace(ns: Namespace, extra: &[(&str, &str)]) -> Result<Stack> {
        let (ingest_port, processor_port, sink_port) = (free_port(), free_port(), free_port());
        let mut env = ns.env();
        for (k, port) in [
            ("LASTSEEN_INGEST__LISTEN", ingest_port),
            ("LASTSEEN_PROCESSOR__LISTEN", processor_port),
            ("LASTSEEN_SINK__LISTEN", sink_port),
        ] {
            env.insert(k.to_string(), format!("127.0.0.1:{port}"));
        }
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let log_dir = root().join("target/e2e-logs").join(&ns.name);
        std::fs::create_dir_all(&log_dir)?;
        Ok(Stack {
            name: ns.name.clone(),
            env,
            ingest_url: format!("http://127.0.0.1:{ingest_port}"),
            processor_url: format!("http://127.0.0.1:{processor_port}"),
            sink_url: format!("http://127.0.0.1:{sink_port}"),
            database: ns.database.clone(),
            contacts_topic: ns.contacts_topic.clone(),
            events_topic: ns.events_topic.clone(),
            changelog_topic: ns.changelog_topic.clone(),
            dead_letter_topic: ns.dead_letter_topic.clone(),
            log_dir,
            ns,
            children: BTreeMap::new(),
        })
    }

    /// The stack's namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// Starts instance `n` of `svc` (instances > 0 get their own instance id and port).
    pub fn start_instance(&mut self, svc: Service, n: usize) -> Result<()> {
        let bin = bin_dir().join(svc.binary());
        if !bin.exists() {
            bail!(
                "{} not found: build the services first (`cargo build --workspace --bins`)",
                bin.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{}-{n}.log", svc.binary())))?;
        let mut cmd = Command::new(&bin);
        // Harness-only variables (LASTSEEN_BIN_DIR, LASTSEEN_TEST_*) are not configuration: the
        // services reject any LASTSEEN_ variable without a `__`.
        for (k, _) in std::env::vars() {
            if k.starts_with("LASTSEEN_") && !k.contains("__") {
                cmd.env_remove(&k);
            }
        }
        // An error that ends a service is printed without anyhow's backtrace, which would
        // push the error itself out of the log tail that `check_alive` reports.
        cmd.env("RUST_LIB_BACKTRACE", "0")
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if n > 0 {
            let section = svc.binary().to_uppercase();
            cmd.env(
                format!("LASTSEEN_{section}__LISTEN"),
                format!("127.0.0.1:{}", free_port()),
            );
            cmd.env(
                format!("LASTSEEN_{section}__INSTANCE_ID"),
                format!("{}-{n}", svc.binary()),
            );
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        self.children.insert((svc, n), child);
        Ok(())
    }

    /// Starts instance 0 of `svc`.
    pub fn start(&mut self, svc: Service) -> Result<()> {
        self.start_instance(svc, 0)
    }

    /// `kill -9` instance `n` of `svc` and reaps it.
    pub fn kill(&mut self, svc: Service, n: usize) {
        if let Some(mut c) = self.children.remove(&(svc, n)) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM instance `n` of `svc` and waits up to `timeout` for it to exit.
    pub fn terminate(&mut self, svc: Service, n: usize, timeout: Duration) -> Result<()> {
        let Some(mut c) = self.children.remove(&(svc, n)) else {
            return Ok(());
        };
        if !terminate(&mut c, timeout)? {
            bail!(
                "{} did not exit within {timeout:?} of SIGTERM",
                svc.binary()
            );
        }
        Ok(())
    }

    /// Fails if a started service exited by itself (with its log tail).
    pub fn check_alive(&mut self) -> Result<()> {
        for ((svc, n), c) in self.children.iter_mut() {
            if let Some(status) = c.try_wait()? {
                let log =
                    std::fs::read_to_string(self.log_dir.join(format!("{}-{n}.log", svc.binary())))
                        .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                // The error a service ended with (`main`'s `Error: ...`), in case a panic's
                // backtrace pushed it out of the tail.
                let error = log
                    .lines()
                    .rfind(|l| l.starts_with("Error: ") || l.contains("panicked at"))
                    .unwrap_or("(no error line)");
                bail!(
                    "{}-{n} exited with {status}: {error}\nlog tail:\n{}",
                    svc.binary(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// Waits until `base` + `/readyz` answers 200, failing early if a service exited.
    pub async fn wait_ready(&mut self, base: &str, timeout: Duration) -> Result<()> {
        crate::http::wait_ready(base, timeout, || self.check_alive()).await
    }

    /// Starts ingest, processor and sink and waits until all three are ready.
    pub async fn start_all(&mut self) -> Result<()> {
        for s in [Service::Ingest, Service::Processor, Service::Sink] {
            self.start(s)?;
        }
        let timeout = Duration::from_secs(60);
        let urls = [
            self.ingest_url.clone(),
            self.processor_url.clone(),
            self.sink_url.clone(),
        ];
        for u in urls {
            self.wait_ready(&u, timeout).await?;
        }
        Ok(())
    }

    /// The stack's ClickHouse database.
    pub fn clickhouse(&self) -> Db {
        self.ns.db()
    }

    /// A token for `person` on `device`, signed with the stack's secret.
    pub fn token(&self, person: &str, device: &str) -> String {
        crate::token(person, device)
    }

    /// Every topic [`Stack::new`] created.
    pub fn topics(&self) -> [&str; 4] {
        self.ns.topics()
    }

    /// The end of a test that passed: kills the services, drops the database and deletes the
    /// topics. Call it last, after the assertions: a test that fails never gets here and keeps
    /// everything for debugging (the logs in `log_dir` are always kept).
    pub async fn cleanup(mut self) -> Result<()> {
        self.kill_all();
        self.ns.cleanup().await
    }

    fn kill_all(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The shared servers' control scripts (`deploy/local/<service> start|stop|kill|status`), for the
/// fault tests that stop them. Only tests that say so in their name and `#[ignore]` use these.
pub mod local {
    use super::root;
    use anyhow::{Result, ensure};
    use std::process::Command;

    /// Runs `deploy/local/<script> <action>`; fails with its output if it fails.
    pub fn ctl(script: &str, action: &str) -> Result<()> {
        ctl_env(script, action, &[])
    }

    /// `kill -9` of `script`'s server (`deploy/local/<script> kill`: SIGKILL of the pid in
    /// `.local/run/<script>.pid`, waits until it is gone), then the project's own idempotent
    /// start (`deploy/local/<script> start`: waits until the server answers; for Kafka until
    /// every lastseen topic has a leader). A crashed server recovers before it answers (Kafka
    /// replays its unflushed log segments, ClickHouse 18.16 checks its parts and detaches broken
    /// ones), which can take longer than a clean start: the start may take up to
    /// `start_timeout`, and is tried again twice if it fails (a port still held by the dying
    /// process makes `start` refuse).
    pub fn crash(script: &str, start_timeout: std::time::Duration) -> Result<()> {
        ctl(script, "kill")?;
        let secs = start_timeout.as_secs().max(1).to_string();
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
            match ctl_env(script, "start", &[("LASTSEEN_START_TIMEOUT", &secs)]) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("{script} start failed")))
    }

    /// [`ctl`] with extra environment variables for the script.
    pub fn ctl_env(script: &str, action: &str, env: &[(&str, &str)]) -> Result<()> {
        let path = root().join("deploy/local").join(script);
        let out = Command::new(&path)
            .arg(action)
            .envs(env.iter().copied())
            .output()?;
        ensure!(
            out.status.success(),
            "{} {action}: {}\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Whether `deploy/local/<script> <action>` succeeded.
    pub fn ok(script: &str, action: &str) -> bool {
        ctl(script, action).is_ok()
    }

    /// Starts `script`'s server again when dropped if it is not running, whatever happened:
    /// a failing fault test never leaves a shared server stopped.
    #[derive(Debug)]
    pub struct RestartOnDrop(pub &'static str);

    impl Drop for RestartOnDrop {
        fn drop(&mut self) {
            if !ok(self.0, "status") {
                eprintln!("restarting {}", self.0);
                let _ = ctl(self.0, "start");
            }
        }
    }
}
