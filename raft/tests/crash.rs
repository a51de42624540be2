//! Crash test: a writer process (`engram-crash-writer`) is SIGKILLed at random moments, many
//! times over. After each kill the data dir is opened here and checked: every acknowledged
//! write is present, written by exactly the log entry its acknowledgement named (so nothing
//! was applied twice), and retried writes are answered from the idempotency window.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command as Proc, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use engram_raft::{HostConfig, RaftHost};
use rand::{Rng, SeedableRng};

const KILLS: usize = 12;
const RETRY: u64 = 3;

#[derive(Debug)]
struct Line {
    kind: String,
    i: u64,
    index: u64,
    dedup: bool,
}

fn parse(l: &str) -> Option<Line> {
    let mut p = l.split_whitespace();
    let kind = p.next()?.to_string();
    if kind != "ACK" && kind != "DUP" {
        return None;
    }
    Some(Line {
        kind,
        i: p.next()?.parse().ok()?,
        index: p.next()?.parse().ok()?,
        dedup: p.next()?.parse().ok()?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_writer_loses_nothing_and_applies_nothing_twice() {
    common::init_tracing();
    let seed: u64 = std::env::var("ENGRAM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (set ENGRAM_CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_engram-crash-writer");
    // i -> log index of its acknowledged write.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next = 0u64;
    for round in 0..KILLS {
        let mut child = Proc::new(exe)
            .args(["--dir", dir.path().to_str().unwrap()])
            .args(["--start", &next.to_string(), "--retry", &RETRY.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until it is up, then let it write for a random while and kill it.
        let ready_deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l == "READY" => break,
                Ok(l) => lines.push(l),
                Err(_) => assert!(Instant::now() < ready_deadline, "writer never became ready"),
            }
        }
        let run_for = Duration::from_millis(rng.random_range(20..600));
        std::thread::sleep(run_for);
        child.kill().expect("SIGKILL the writer");
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let mut fresh = 0;
        for l in lines.iter().filter_map(|l| parse(l)) {
            match l.kind.as_str() {
                "ACK" => {
                    if let Some(&first) = acked.get(&l.i) {
                        // Retried after a kill that hid the first ack: must be deduplicated.
                        assert!(
                            l.dedup,
                            "write {} applied twice (first at {first}, again at {})",
                            l.i, l.index
                        );
                        assert_eq!(l.index, first);
                    }
                    acked.entry(l.i).or_insert(l.index);
                    next = next.max(l.i + 1);
                    fresh += 1;
                }
                _ => {
                    assert!(
                        l.dedup,
                        "retried write {} was applied again at {}",
                        l.i, l.index
                    );
                    if let Some(&first) = acked.get(&l.i) {
                        assert_eq!(
                            l.index, first,
                            "retried write {} answered a different entry",
                            l.i
                        );
                    }
                }
            }
        }
        // Open the data dir here and check every acknowledged write.
        let host = RaftHost::open(HostConfig::new(1, dir.path(), "crash-test"))
            .await
            .expect("reopen after SIGKILL");
        host.wait_leader(1, Duration::from_secs(30)).await.unwrap();
        let state = host.linearizable(1).await.unwrap();
        for (&i, &index) in &acked {
            let rec = state
                .get_record("mem", &format!("m{i}"))
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged write {i} is missing"));
            assert_eq!(rec.seq, index, "write {i} was re-applied by a later entry");
            assert!(
                state.get("mem", &format!("m{i}")).unwrap().is_some(),
                "write {i} is stored but missing from the index"
            );
        }
        host.shutdown().await;
        eprintln!(
            "round {round}: ran {run_for:?}, {fresh} new acks, {} total",
            acked.len()
        );
    }
    assert!(
        acked.len() as u64 > KILLS as u64,
        "the writer made too little progress to test anything"
    );
}
