//! One checker per invariant. Each reads the recorded history (and the fault log) only.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Call, FaultRecord, Key, Op, Outcome, Seen, FINAL};
use crate::lin::{self, Entry, RegOp, Verdict};

/// Everything the checkers found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    pub acked_writes: usize,
    pub lost_writes: Vec<String>,
    pub unfindable: Vec<String>,
    pub unverified: Vec<String>,
    pub phantoms: Vec<String>,
    pub linearizable: bool,
    pub nonlinearizable_keys: Vec<String>,
    pub resurrected: Vec<String>,
    pub isolation_violations: Vec<String>,
    /// The longest stretch, in the whole run, with no acknowledged write at all.
    pub max_global_gap_s: f64,
}

impl Findings {
    pub fn clean(&self) -> bool {
        self.lost_writes.is_empty()
            && self.unfindable.is_empty()
            && self.unverified.is_empty()
            && self.phantoms.is_empty()
            && self.linearizable
            && self.resurrected.is_empty()
            && self.isolation_violations.is_empty()
    }
}

/// What the verification phase found for an acknowledged write by exact-vector search.
#[derive(Debug, Clone)]
pub struct SearchProbe {
    pub key: Key,
    /// `None`: the search itself failed (the write is then unverified).
    pub found: Option<bool>,
}

/// Runs every checker.
pub fn check_all(history: &[Op], probes: &[SearchProbe], max_steps: u64) -> Findings {
    let lin = linearizability(history, max_steps);
    Findings {
        acked_writes: history
            .iter()
            .filter(|o| o.ok() && matches!(o.call, Call::Write { .. }))
            .count(),
        lost_writes: lost_writes(history),
        unfindable: probes
            .iter()
            .filter(|p| p.found == Some(false))
            .map(|p| p.key.to_string())
            .collect(),
        unverified: unverified(history, probes),
        phantoms: phantoms(history),
        linearizable: lin.is_empty(),
        nonlinearizable_keys: lin,
        resurrected: resurrected(history),
        isolation_violations: isolation(history),
        max_global_gap_s: max_global_gap(history),
    }
}

fn writes_by_value(history: &[Op]) -> HashMap<u64, &Op> {
    history
        .iter()
        .filter_map(|o| match &o.call {
            Call::Write { value, .. } => Some((*value, o)),
            _ => None,
        })
        .collect()
}

fn final_reads(history: &[Op]) -> HashMap<&Key, &Op> {
    let mut m = HashMap::new();
    for o in history {
        if let (FINAL, Call::Read { key }, true) = (o.process, &o.call, o.ok()) {
            m.insert(key, o);
        }
    }
    m
}

/// **No acknowledged write is lost.** After the heal, every key holding an acknowledged write
/// (and never the target of a delete, even an unacknowledged one) still holds a value: the
/// last acknowledged write's or one written after it was invoked. A final read finding the key
/// absent, or holding a value written before the acknowledged write was even invoked, is a
/// lost write.
pub fn lost_writes(history: &[Op]) -> Vec<String> {
    let finals = final_reads(history);
    let by_value = writes_by_value(history);
    let deleted: HashSet<&Key> = history
        .iter()
        .filter_map(|o| match &o.call {
            Call::Delete { key } if o.outcome != Outcome::Fail => Some(key),
            _ => None,
        })
        .collect();
    // The last acknowledged write per key (by completion time).
    let mut last_ack: HashMap<&Key, &Op> = HashMap::new();
    for o in history.iter().filter(|o| o.ok()) {
        if let Call::Write { key, .. } = &o.call {
            let e = last_ack.entry(key).or_insert(o);
            if o.complete > e.complete {
                *e = o;
            }
        }
    }
    let mut lost = Vec::new();
    for (key, w) in last_ack {
        if deleted.contains(key) {
            continue;
        }
        let Some(f) = finals.get(key) else { continue };
        let value = match &w.call {
            Call::Write { value, .. } => *value,
            _ => continue,
        };
        match f.read.as_ref().and_then(|r| r.as_ref()) {
            None => lost.push(format!("{key}: acknowledged write of {value} is gone")),
            Some(seen) => {
                // Acceptable: this write, or any write not finished before it was invoked.
                let ok = seen.value.is_some_and(|v| {
                    v == value
                        || by_value
                            .get(&v)
                            .is_some_and(|o| o.call.key() == Some(key) && o.complete > w.invoke)
                });
                if !ok {
                    lost.push(format!(
                        "{key}: acknowledged write of {value} replaced by older {:?}",
                        seen.value
                    ));
                }
            }
        }
    }
    lost.sort();
    lost
}

/// Acknowledged writes the verification phase could not read or search (a checker that could
/// not look is not a pass).
fn unverified(history: &[Op], probes: &[SearchProbe]) -> Vec<String> {
    let finals = final_reads(history);
    let mut out: Vec<String> = history
        .iter()
        .filter(|o| o.ok() && matches!(o.call, Call::Write { .. }))
        .filter_map(|o| o.call.key())
        .filter(|k| !finals.contains_key(k))
        .map(|k| format!("{k}: no final read"))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    out.extend(
        probes
            .iter()
            .filter(|p| p.found.is_none())
            .map(|p| format!("{}: final search failed", p.key)),
    );
    out.sort();
    out
}

fn seen_ops(op: &Op) -> Vec<&Seen> {
    let mut v: Vec<&Seen> = op.hits.iter().collect();
    if let Some(Some(s)) = &op.read {
        v.push(s);
    }
    v
}

/// **No phantoms.** Everything a read or search returned was written by some invoked write
/// of that very key (values are unique per run, so the value names the write), and carries the
/// tenant and user that write put in its payload.
pub fn phantoms(history: &[Op]) -> Vec<String> {
    let by_value = writes_by_value(history);
    let mut out = Vec::new();
    for op in history.iter().filter(|o| o.ok()) {
        for s in seen_ops(op) {
            let origin = s.value.and_then(|v| by_value.get(&v));
            let fine = origin.is_some_and(|w| {
                w.call.key() == Some(&s.key)
                    && s.payload_tenant == s.key.tenant
                    && s.payload_user == s.key.user
            });
            if !fine {
                out.push(format!(
                    "{} read {:?} at {:.3}s, never written there",
                    s.key, s.value, op.complete
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// **Per-key linearizability** of writes, deletes and strong reads (the hot registers and
/// every unique memory alike): returns the keys whose history no sequential register explains.
pub fn linearizability(history: &[Op], max_steps: u64) -> Vec<String> {
    let mut per_key: BTreeMap<&Key, Vec<Entry>> = BTreeMap::new();
    for o in history {
        let ret = match o.outcome {
            Outcome::Ok => o.complete,
            Outcome::Unknown if o.call.is_mutation() => f64::INFINITY,
            _ => continue,
        };
        let (key, op) = match &o.call {
            Call::Write { key, value } => (key, RegOp::Write(*value)),
            Call::Delete { key } => (key, RegOp::Delete),
            Call::Read { key } => match &o.read {
                Some(r) => (key, RegOp::Read(r.as_ref().and_then(|s| s.value))),
                None => continue,
            },
            Call::Search { .. } => continue,
        };
        per_key.entry(key).or_default().push(Entry {
            op,
            invoke: o.invoke,
            ret,
        });
    }
    let mut bad = Vec::new();
    for (key, entries) in per_key {
        match lin::check(&entries, max_steps) {
            Verdict::Linearizable => {}
            Verdict::Violation { stuck_at } => bad.push(format!(
                "{key}: {} ops, no linearization past {stuck_at:.3}s",
                entries.len()
            )),
            Verdict::Undecided { steps } => bad.push(format!(
                "{key}: {} ops, search gave up after {steps} steps",
                entries.len()
            )),
        }
    }
    bad
}

/// **Deleted memories stay deleted.** Once a delete of a key is acknowledged, no read or
/// search invoked afterwards returns a value written before that delete was invoked.
pub fn resurrected(history: &[Op]) -> Vec<String> {
    let by_value = writes_by_value(history);
    let mut deletes: HashMap<&Key, Vec<&Op>> = HashMap::new();
    for o in history.iter().filter(|o| o.ok()) {
        if let Call::Delete { key } = &o.call {
            deletes.entry(key).or_default().push(o);
        }
    }
    let mut out = Vec::new();
    for op in history.iter().filter(|o| o.ok()) {
        for s in seen_ops(op) {
            let (Some(dels), Some(w)) = (
                deletes.get(&s.key),
                s.value.and_then(|v| by_value.get(&v)),
            ) else {
                continue;
            };
            if dels
                .iter()
                .any(|d| d.complete < op.invoke && w.invoke < d.invoke && w.complete < d.invoke)
            {
                out.push(format!(
                    "{} value {:?} seen at {:.3}s after its delete",
                    s.key, s.value, op.complete
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// **Tenant isolation.** A search of tenant T (user scope: user U of T) returns only
/// memories of T (of U), and a read of a key returns only that key.
pub fn isolation(history: &[Op]) -> Vec<String> {
    let mut out = Vec::new();
    for op in history.iter().filter(|o| o.ok()) {
        match &op.call {
            Call::Search { tenant, user } => {
                for h in &op.hits {
                    let wrong_tenant = &h.key.tenant != tenant || &h.payload_tenant != tenant;
                    let wrong_user = user
                        .as_ref()
                        .is_some_and(|u| &h.key.user != u || &h.payload_user != u);
                    if wrong_tenant || wrong_user {
                        out.push(format!(
                            "search of {tenant}/{} at {:.3}s returned {} (payload {}/{})",
                            user.as_deref().unwrap_or("*"),
                            op.complete,
                            h.key,
                            h.payload_tenant,
                            h.payload_user
                        ));
                    }
                }
            }
            Call::Read { key } => {
                if let Some(Some(s)) = &op.read {
                    if &s.key != key {
                        out.push(format!("read of {key} returned {}", s.key));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn max_global_gap(history: &[Op]) -> f64 {
    let mut done: Vec<f64> = history
        .iter()
        .filter(|o| o.process != FINAL && o.ok() && matches!(o.call, Call::Write { .. }))
        .map(|o| o.complete)
        .collect();
    done.sort_by(|a, b| a.total_cmp(b));
    done.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// **Availability**, per fault. Writes are grouped in streams (one tenant's user: one shard).
/// A write invoked while the fault was active (or in flight when it began) waited until its
/// own acknowledgement, or, if it failed, until the next acknowledged write of its stream:
/// the longest such wait, counted from the later of its invocation and the fault's start, is
/// the fault's `unavailable_s`. `recover_s` is how long after the heal the last write pending at
/// the heal took to be acknowledged (0 when nothing was stuck).
pub fn availability(history: &[Op], faults: &mut [FaultRecord]) {
    let mut streams: HashMap<(&str, &str), Vec<&Op>> = HashMap::new();
    for o in history.iter().filter(|o| o.process != FINAL) {
        if let Call::Write { key, .. } = &o.call {
            streams
                .entry((key.tenant.as_str(), key.user.as_str()))
                .or_default()
                .push(o);
        }
    }
    for ops in streams.values_mut() {
        ops.sort_by(|a, b| a.invoke.total_cmp(&b.invoke));
    }
    // For each write: when its stream was next served (its own ack, or a later ack).
    let mut served: Vec<(f64, f64)> = Vec::new(); // (invoke, served_at)
    for ops in streams.values() {
        for (i, o) in ops.iter().enumerate() {
            let at = if o.ok() {
                Some(o.complete)
            } else {
                ops[i + 1..]
                    .iter()
                    .filter(|n| n.ok())
                    .map(|n| n.complete)
                    .min_by(|a, b| a.total_cmp(b))
            };
            served.push((o.invoke, at.unwrap_or(f64::INFINITY)));
        }
    }
    for f in faults.iter_mut() {
        // Writes invoked while the fault was on, and those already in flight when it began
        // (counted from the fault's start).
        let during = served
            .iter()
            .filter(|(inv, at)| *inv < f.heal_s && *at > f.start_s);
        f.unavailable_s = during
            .map(|(inv, at)| at - inv.max(f.start_s))
            .fold(0.0, f64::max);
        f.recover_s = served
            .iter()
            .filter(|(inv, at)| *inv < f.heal_s && *at > f.heal_s)
            .map(|(_, at)| at - f.heal_s)
            .fold(0.0, f64::max);
    }
}

/// A fault shorter than this may legitimately end before a new leader is elected and
/// serving (election timeout, CheckQuorum and the clients' retries take a few seconds).
pub const STALL_MIN_HOLD_S: f64 = 6.0;

/// **Writes come back during a fault that leaves a majority**: when a fault took out one node
/// or one zone (every shard keeping a connected majority of its voters) for at least
/// [`STALL_MIN_HOLD_S`], no write stream may have waited through the whole fault. One that
/// did means the connected majority failed to elect or serve until the heal (a liveness
/// bug: duelling candidates, a leader nobody replaces). Run after [`availability`]; returns
/// the stalled faults, described.
pub fn stalled(faults: &[FaultRecord]) -> Vec<String> {
    faults
        .iter()
        .filter(|f| {
            let held = f.heal_s - f.start_s;
            f.majority_kept && held >= STALL_MIN_HOLD_S && f.unavailable_s >= held
        })
        .map(|f| {
            format!(
                "{} {} at {:.1}s held {:.1}s: writes unavailable {:.2}s, until {:.2}s after the heal",
                f.kind,
                f.target,
                f.start_s,
                f.heal_s - f.start_s,
                f.unavailable_s,
                f.recover_s
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Seen;

    fn key(id: &str) -> Key {
        Key::new("t1", "u1", id)
    }

    fn seen(k: &Key, v: u64) -> Seen {
        Seen {
            key: k.clone(),
            value: Some(v),
            payload_tenant: k.tenant.clone(),
            payload_user: k.user.clone(),
        }
    }

    fn op(process: usize, call: Call, invoke: f64, complete: f64) -> Op {
        Op {
            process,
            call,
            invoke,
            complete,
            outcome: Outcome::Ok,
            read: None,
            hits: vec![],
            error: None,
        }
    }

    fn write(k: &Key, v: u64, t: f64) -> Op {
        op(1, Call::Write { key: k.clone(), value: v }, t, t + 0.1)
    }

    fn read(process: usize, k: &Key, v: Option<u64>, t: f64) -> Op {
        let mut o = op(process, Call::Read { key: k.clone() }, t, t + 0.1);
        o.read = Some(v.map(|v| seen(k, v)));
        o
    }

    fn good_history() -> Vec<Op> {
        let a = key("a");
        let b = key("b");
        vec![
            write(&a, 1, 0.0),
            write(&b, 2, 0.0),
            read(2, &a, Some(1), 1.0),
            write(&a, 3, 2.0),
            op(1, Call::Delete { key: b.clone() }, 3.0, 3.1),
            read(2, &b, None, 4.0),
            read(FINAL, &a, Some(3), 10.0),
            read(FINAL, &b, None, 10.0),
        ]
    }

    #[test]
    fn a_good_history_passes_every_checker() {
        let f = check_all(&good_history(), &[], 1_000_000);
        assert!(f.clean(), "{f:?}");
        assert_eq!(f.acked_writes, 3);
    }

    #[test]
    fn a_lost_write_fails() {
        let mut h = good_history();
        // The final read finds `a` gone although its write was acknowledged.
        h[6] = read(FINAL, &key("a"), None, 10.0);
        let f = check_all(&h, &[], 1_000_000);
        assert_eq!(f.lost_writes.len(), 1, "{f:?}");
        assert!(!f.linearizable);
        assert!(!f.clean());
    }

    #[test]
    fn a_rolled_back_write_fails() {
        let mut h = good_history();
        // The final read finds the older value 1 although 3 was acknowledged after it.
        h[6] = read(FINAL, &key("a"), Some(1), 10.0);
        let f = check_all(&h, &[], 1_000_000);
        assert_eq!(f.lost_writes.len(), 1, "{f:?}");
        assert!(!f.clean());
    }

    #[test]
    fn a_stale_read_fails() {
        let mut h = good_history();
        h.push(read(2, &key("a"), Some(1), 5.0));
        let f = check_all(&h, &[], 1_000_000);
        assert!(!f.linearizable, "{f:?}");
        assert!(f.lost_writes.is_empty());
    }

    #[test]
    fn a_resurrected_delete_fails() {
        let mut h = good_history();
        let b = key("b");
        let mut s = op(
            3,
            Call::Search {
                tenant: "t1".into(),
                user: Some("u1".into()),
            },
            5.0,
            5.1,
        );
        s.hits = vec![seen(&b, 2)];
        h.push(s);
        let f = check_all(&h, &[], 1_000_000);
        assert_eq!(f.resurrected.len(), 1, "{f:?}");
        assert!(!f.clean());
    }

    #[test]
    fn a_phantom_fails() {
        let mut h = good_history();
        h.push(read(2, &key("c"), Some(99), 5.0));
        let f = check_all(&h, &[], 1_000_000);
        assert_eq!(f.phantoms.len(), 1, "{f:?}");
        // A value written to another key is a phantom here too.
        let mut h = good_history();
        h.push(read(2, &key("c"), Some(3), 5.0));
        assert_eq!(check_all(&h, &[], 1_000_000).phantoms.len(), 1);
    }

    #[test]
    fn another_tenants_memory_in_a_search_fails() {
        let mut h = good_history();
        let other = Key::new("t2", "u1", "x");
        h.push(write(&other, 50, 0.0));
        let mut s = op(
            3,
            Call::Search {
                tenant: "t1".into(),
                user: None,
            },
            5.0,
            5.1,
        );
        s.hits = vec![seen(&other, 50)];
        h.push(s);
        let f = check_all(&h, &[], 1_000_000);
        assert_eq!(f.isolation_violations.len(), 1, "{f:?}");
        assert!(!f.clean());
    }

    #[test]
    fn an_unfindable_or_unverified_write_fails() {
        let probes = [SearchProbe {
            key: key("a"),
            found: Some(false),
        }];
        assert!(!check_all(&good_history(), &probes, 1_000_000).clean());
        let mut h = good_history();
        h.remove(6); // no final read of `a`
        let f = check_all(&h, &[], 1_000_000);
        assert_eq!(f.unverified.len(), 1, "{f:?}");
        assert!(!f.clean());
    }

    #[test]
    fn unknown_writes_may_or_may_not_land() {
        let mut h = good_history();
        let c = key("c");
        let mut w = write(&c, 7, 5.0);
        w.outcome = Outcome::Unknown;
        h.push(w);
        h.push(read(FINAL, &c, Some(7), 10.0));
        assert!(check_all(&h, &[], 1_000_000).clean());
        h.pop();
        h.push(read(FINAL, &c, None, 10.0));
        assert!(check_all(&h, &[], 1_000_000).clean());
    }

    #[test]
    fn availability_measures_the_wait_of_writes_during_a_fault() {
        let a = key("a");
        let mut failed = write(&a, 2, 11.0);
        failed.outcome = Outcome::Unknown;
        failed.complete = 13.0;
        let h = vec![
            write(&a, 1, 9.0),
            failed,
            // Served again 3.5 s after the failed write was invoked.
            op(1, Call::Write { key: a.clone(), value: 3 }, 14.0, 14.5),
        ];
        let mut faults = vec![FaultRecord {
            kind: "kill".into(),
            target: "n1".into(),
            start_s: 10.0,
            heal_s: 12.0,
            unavailable_s: 0.0,
            recover_s: 0.0,
            majority_kept: true,
        }];
        availability(&h, &mut faults);
        assert!((faults[0].unavailable_s - 3.5).abs() < 1e-9, "{faults:?}");
        assert!((faults[0].recover_s - 2.5).abs() < 1e-9, "{faults:?}");
        assert!((max_global_gap(&h) - 5.4).abs() < 1e-9);
        // Held 2 s only: too short to call a stall.
        assert!(stalled(&faults).is_empty());
    }

    fn zone_fault(start_s: f64, heal_s: f64, majority_kept: bool) -> FaultRecord {
        FaultRecord {
            kind: "zone".into(),
            target: "isolate z2".into(),
            start_s,
            heal_s,
            unavailable_s: 0.0,
            recover_s: 0.0,
            majority_kept,
        }
    }

    /// A stream stuck from the fault's start until after the heal (the majority never
    /// elected) is a stall; one served again mid-fault is not; nor is any fault that left a
    /// group without a majority.
    #[test]
    fn stalled_flags_writes_stuck_through_a_majority_keeping_fault() {
        let a = key("a");
        let b = Key::new("t1", "u2", "b");
        let stuck = vec![
            write(&a, 1, 9.0),
            // In flight when the fault began, acknowledged only 0.9 s after the heal.
            op(0, Call::Write { key: a.clone(), value: 2 }, 9.9, 18.6),
            // Another stream, served throughout.
            op(1, Call::Write { key: b.clone(), value: 1 }, 11.0, 11.2),
        ];
        let mut faults = vec![zone_fault(10.0, 17.7, true), zone_fault(10.0, 17.7, false)];
        availability(&stuck, &mut faults);
        assert!((faults[0].unavailable_s - 8.6).abs() < 1e-9, "{faults:?}");
        let found = stalled(&faults);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("zone isolate z2 at 10.0s"), "{found:?}");

        let recovered = vec![
            write(&a, 1, 9.0),
            // Back 2.5 s into the fault.
            op(0, Call::Write { key: a.clone(), value: 2 }, 9.9, 12.5),
            op(0, Call::Write { key: a.clone(), value: 3 }, 12.6, 12.7),
        ];
        let mut faults = vec![zone_fault(10.0, 17.7, true)];
        availability(&recovered, &mut faults);
        assert!(stalled(&faults).is_empty(), "{faults:?}");
    }
}
