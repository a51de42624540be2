//! Resident memory of a process, from `/proc/<pid>/status`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Rss {
    /// Everything resident (VmRSS).
    pub total_bytes: u64,
    /// Anonymous memory: heap and the like (RssAnon).
    pub anon_bytes: u64,
    /// File-backed pages mapped into the process (RssFile), e.g. mapped segments.
    pub file_bytes: u64,
}

fn read(path: &str) -> Rss {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Rss {
        total_bytes: field("VmRSS:"),
        anon_bytes: field("RssAnon:"),
        file_bytes: field("RssFile:"),
    }
}

/// This process.
pub fn now() -> Rss {
    read("/proc/self/status")
}

/// Another process (zeros when it is gone).
pub fn of_pid(pid: u32) -> Rss {
    read(&format!("/proc/{pid}/status"))
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
