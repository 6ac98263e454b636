//! CPU time and peak memory of processes (the services of a [`crate::Stack`], this process,
//! the shared Kafka and ClickHouse), from `/proc`.

/// A process's CPU seconds (user + system) and peak RSS in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub pid: u32,
    pub cpu_s: f64,
    pub max_rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` if the process is gone.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`; utime and stime are fields 14 and 15 (1-based).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Usage {
        pid,
        cpu_s: ticks / clock_ticks(),
        max_rss_kib: hwm,
    })
}

/// `getconf CLK_TCK` (100 on Linux), once.
fn clock_ticks() -> f64 {
    static T: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds of `pid` so far (see [`usage`]).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    usage(pid).map(|u| u.cpu_s)
}

/// The pid `deploy/local` recorded for the shared server `name` (`kafka`, `clickhouse`), from
/// `$LASTSEEN_LOCAL_DIR/run/<name>.pid` (default `.local` at the workspace root).
pub fn shared_pid(name: &str) -> Option<u32> {
    let local = std::env::var("LASTSEEN_LOCAL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local"));
    std::fs::read_to_string(local.join(format!("run/{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Children of this process whose command name is `comm` (the service binaries of a `Stack`).
pub fn children_named(comm: &str) -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(a), Some(b)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[a + 1..b];
        let ppid = stat[b + 2..].split_whitespace().nth(1).unwrap_or("");
        if name == comm && ppid == me {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_usage() {
        let u = super::usage(std::process::id()).expect("own /proc entry");
        assert!(u.max_rss_kib > 0 && u.cpu_s >= 0.0);
    }
}
