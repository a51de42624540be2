//! Real network partitions on loopback: nftables rules dropping packets between pairs of node
//! addresses (every node listens and dials from its own 127.x.y.z address). Only rules whose
//! source and destination are both node addresses of this run are ever installed, in a table
//! of this process's own, removed when the run ends (and swept at the next start if the
//! process died).

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "partition faults need nftables and CAP_NET_ADMIN (`apt-get install -y nftables`, run as root): {0}"
    )]
    Unavailable(String),
    #[error("nft refused the rules: {0}")]
    Rules(String),
    #[error("refusing to touch {0}: only 127.0.0.0/8 node addresses of this run")]
    NotLoopback(Ipv4Addr),
}

/// The partition controller of one run.
pub struct Net {
    table: String,
    hosts: Vec<Ipv4Addr>,
    /// Directed links currently cut: (from, to) as node indexes.
    cut: BTreeSet<(usize, usize)>,
}

fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft has no stdin")?
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill(pid, 0) only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Deletes `engram_chaos_<pid>` tables left by runs that died.
fn sweep_stale() {
    let Ok(out) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.strip_prefix("table inet engram_chaos_") else {
            continue;
        };
        if let Ok(pid) = name.trim().parse::<i32>() {
            if !pid_alive(pid) {
                let _ = nft(&format!("delete table inet engram_chaos_{pid}\n"));
            }
        }
    }
}

impl Net {
    /// Sets up an empty table for the node addresses `hosts` (node i at `hosts[i]`).
    pub fn new(hosts: Vec<Ipv4Addr>) -> Result<Self, NetError> {
        if let Some(bad) = hosts.iter().find(|h| !h.is_loopback()) {
            return Err(NetError::NotLoopback(*bad));
        }
        sweep_stale();
        let table = format!("engram_chaos_{}", std::process::id());
        nft(&format!(
            "add table inet {table}\n\
             add chain inet {table} out {{ type filter hook output priority 0; policy accept; }}\n"
        ))
        .map_err(NetError::Unavailable)?;
        Ok(Net {
            table,
            hosts,
            cut: BTreeSet::new(),
        })
    }

    /// Checks that nftables is usable here (for a clear error before a run starts).
    pub fn probe() -> Result<(), NetError> {
        let n = Net::new(vec![Ipv4Addr::new(127, 0, 0, 1)])?;
        drop(n);
        Ok(())
    }

    /// Cuts the directed links `from → to` (packets dropped: connections hang, as with a
    /// real partition, rather than being refused).
    pub fn cut(&mut self, links: &[(usize, usize)]) -> Result<(), NetError> {
        let mut script = String::new();
        for &(a, b) in links {
            if a == b || !self.cut.insert((a, b)) {
                continue;
            }
            script += &format!(
                "add rule inet {} out ip saddr {} ip daddr {} drop\n",
                self.table, self.hosts[a], self.hosts[b]
            );
        }
        if script.is_empty() {
            return Ok(());
        }
        nft(&script).map_err(NetError::Rules)
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn split(&mut self, a: &[usize], b: &[usize]) -> Result<(), NetError> {
        let mut links = Vec::new();
        for &x in a {
            for &y in b {
                links.push((x, y));
                links.push((y, x));
            }
        }
        self.cut(&links)
    }

    /// Restores every link.
    pub fn heal(&mut self) -> Result<(), NetError> {
        if self.cut.is_empty() {
            return Ok(());
        }
        self.cut.clear();
        nft(&format!("flush chain inet {} out\n", self.table)).map_err(NetError::Rules)
    }

    pub fn is_cut(&self) -> bool {
        !self.cut.is_empty()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}\n", self.table));
    }
}
