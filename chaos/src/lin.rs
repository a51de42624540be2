//! Per-key linearizability of register histories: the Wing–Gong search with Lowe's
//! memoisation (as in Porcupine / Knossos), one key at a time (linearizability is
//! compositional, so a history is linearizable iff every key's sub-history is).
//!
//! The model is a register holding `Option<u64>`: a write sets it, a delete clears it, a read
//! must return what it holds. An operation whose outcome is unknown may take effect at any
//! point after its invocation or never: it is given an infinite return time (it can always
//! be linearized after everything observed). Failed operations and reads with no result
//! constrain nothing and are left out.

use std::collections::HashSet;

/// One operation on one register.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RegOp {
    Write(u64),
    Delete,
    Read(Option<u64>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub op: RegOp,
    pub invoke: f64,
    /// `f64::INFINITY` when the outcome is unknown.
    pub ret: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history. `stuck_at` is the return time the search could not get
    /// past (the earliest operation whose result no linearization can produce).
    Violation { stuck_at: f64 },
    /// The search gave up after `steps` (reported as a failure: not proven).
    Undecided { steps: u64 },
}

const NIL: usize = usize::MAX;

struct Node {
    /// Index into the entries; call nodes have `partner` = their return node.
    entry: usize,
    is_call: bool,
    partner: usize,
    prev: usize,
    next: usize,
}

fn step(state: Option<u64>, op: RegOp) -> Option<Option<u64>> {
    match op {
        RegOp::Write(v) => Some(Some(v)),
        RegOp::Delete => Some(None),
        RegOp::Read(r) => (r == state).then_some(state),
    }
}

/// Checks one register's history, starting from an absent value.
pub fn check(entries: &[Entry], max_steps: u64) -> Verdict {
    let n = entries.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events sorted by time; at equal times calls come first (touching operations are
    // treated as concurrent, the lenient reading of a clock tie).
    let mut events: Vec<(f64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, e) in entries.iter().enumerate() {
        events.push((e.invoke, true, i));
        events.push((e.ret, false, i));
    }
    events.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.1.cmp(&a.1))
    });
    // Node 0 is the head sentinel; event k is node k + 1.
    let mut nodes: Vec<Node> = Vec::with_capacity(events.len() + 1);
    nodes.push(Node {
        entry: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: 1,
    });
    let mut ret_node = vec![NIL; n];
    for (k, &(_, is_call, i)) in events.iter().enumerate() {
        let id = k + 1;
        if !is_call {
            ret_node[i] = id;
        }
        nodes.push(Node {
            entry: i,
            is_call,
            partner: NIL,
            prev: id - 1,
            next: if k + 1 < events.len() { id + 1 } else { NIL },
        });
    }
    for node in nodes.iter_mut().skip(1) {
        if node.is_call {
            node.partner = ret_node[node.entry];
        }
    }

    fn lift(nodes: &mut [Node], c: usize) {
        let (p, nx) = (nodes[c].prev, nodes[c].next);
        nodes[p].next = nx;
        if nx != NIL {
            nodes[nx].prev = p;
        }
        let r = nodes[c].partner;
        let (p, nx) = (nodes[r].prev, nodes[r].next);
        nodes[p].next = nx;
        if nx != NIL {
            nodes[nx].prev = p;
        }
    }
    fn unlift(nodes: &mut [Node], c: usize) {
        let r = nodes[c].partner;
        let (p, nx) = (nodes[r].prev, nodes[r].next);
        nodes[p].next = r;
        if nx != NIL {
            nodes[nx].prev = r;
        }
        let (p, nx) = (nodes[c].prev, nodes[c].next);
        nodes[p].next = c;
        if nx != NIL {
            nodes[nx].prev = c;
        }
    }

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut state: Option<u64> = None;
    let mut cur = nodes[0].next;
    let mut steps = 0u64;
    let mut furthest = f64::NEG_INFINITY;
    while nodes[0].next != NIL {
        steps += 1;
        if steps > max_steps {
            return Verdict::Undecided { steps };
        }
        let node = &nodes[cur];
        let i = node.entry;
        if node.is_call {
            if let Some(next_state) = step(state, entries[i].op) {
                let mut lin = linearized.clone();
                lin[i / 64] |= 1 << (i % 64);
                if cache.insert((lin.clone(), next_state)) {
                    stack.push((cur, state));
                    state = next_state;
                    linearized = lin;
                    lift(&mut nodes, cur);
                    cur = nodes[0].next;
                    continue;
                }
            }
            cur = nodes[cur].next;
        } else {
            // A return reached before its operation could be linearized: back up.
            furthest = furthest.max(entries[i].ret);
            let Some((c, s)) = stack.pop() else {
                return Verdict::Violation { stuck_at: furthest };
            };
            let e = nodes[c].entry;
            state = s;
            linearized[e / 64] &= !(1 << (e % 64));
            unlift(&mut nodes, c);
            cur = nodes[c].next;
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(op: RegOp, invoke: f64, ret: f64) -> Entry {
        Entry { op, invoke, ret }
    }

    const BIG: u64 = 1_000_000;

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            e(RegOp::Read(None), 0.0, 1.0),
            e(RegOp::Write(1), 2.0, 3.0),
            e(RegOp::Read(Some(1)), 4.0, 5.0),
            e(RegOp::Delete, 6.0, 7.0),
            e(RegOp::Read(None), 8.0, 9.0),
        ];
        assert_eq!(check(&h, BIG), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_is_caught() {
        // Write 1 completes, write 2 completes, then a read returns 1: stale.
        let h = [
            e(RegOp::Write(1), 0.0, 1.0),
            e(RegOp::Write(2), 2.0, 3.0),
            e(RegOp::Read(Some(1)), 4.0, 5.0),
        ];
        assert!(matches!(check(&h, BIG), Verdict::Violation { .. }));
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        let h = [
            e(RegOp::Write(1), 0.0, 1.0),
            e(RegOp::Write(2), 2.0, 6.0),
            e(RegOp::Read(Some(2)), 3.0, 4.0),
            e(RegOp::Read(Some(1)), 3.0, 5.0),
        ];
        // Read 2 returned (at 4) before read 1 was invoked? No: both invoked at 3, so read 1
        // can be ordered first. Linearizable.
        assert_eq!(check(&h, BIG), Verdict::Linearizable);
        // But once a read has seen 2, a read invoked after it returned cannot see 1.
        let h2 = [
            e(RegOp::Write(1), 0.0, 1.0),
            e(RegOp::Write(2), 2.0, 9.0),
            e(RegOp::Read(Some(2)), 3.0, 4.0),
            e(RegOp::Read(Some(1)), 5.0, 6.0),
        ];
        assert!(matches!(check(&h2, BIG), Verdict::Violation { .. }));
    }

    #[test]
    fn lost_write_is_caught() {
        // An acknowledged write, then a read (after it) that finds nothing.
        let h = [
            e(RegOp::Write(7), 0.0, 1.0),
            e(RegOp::Read(None), 2.0, 3.0),
        ];
        assert!(matches!(check(&h, BIG), Verdict::Violation { .. }));
    }

    #[test]
    fn resurrected_delete_is_caught() {
        let h = [
            e(RegOp::Write(7), 0.0, 1.0),
            e(RegOp::Delete, 2.0, 3.0),
            e(RegOp::Read(Some(7)), 4.0, 5.0),
        ];
        assert!(matches!(check(&h, BIG), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_write_may_land_late_or_never() {
        // Unknown write of 5: a later read may see it...
        let h = [
            e(RegOp::Write(5), 0.0, f64::INFINITY),
            e(RegOp::Read(None), 1.0, 2.0),
            e(RegOp::Read(Some(5)), 3.0, 4.0),
        ];
        assert_eq!(check(&h, BIG), Verdict::Linearizable);
        // ...or never be seen at all.
        let h = [
            e(RegOp::Write(5), 0.0, f64::INFINITY),
            e(RegOp::Read(None), 3.0, 4.0),
        ];
        assert_eq!(check(&h, BIG), Verdict::Linearizable);
        // But once seen, it cannot un-happen.
        let h = [
            e(RegOp::Write(5), 0.0, f64::INFINITY),
            e(RegOp::Read(Some(5)), 1.0, 2.0),
            e(RegOp::Read(None), 3.0, 4.0),
        ];
        assert!(matches!(check(&h, BIG), Verdict::Violation { .. }));
    }

    #[test]
    fn read_of_a_value_never_written_is_caught() {
        let h = [e(RegOp::Write(1), 0.0, 1.0), e(RegOp::Read(Some(9)), 2.0, 3.0)];
        assert!(matches!(check(&h, BIG), Verdict::Violation { .. }));
    }

    #[test]
    fn many_concurrent_writers_check_quickly() {
        // 200 overlapping writes and reads in waves of 8: memoisation keeps this small.
        let mut h = Vec::new();
        for wave in 0..25u64 {
            let t = wave as f64 * 10.0;
            for k in 0..8u64 {
                h.push(e(RegOp::Write(wave * 8 + k), t, t + 5.0));
            }
            h.push(e(RegOp::Read(Some(wave * 8 + 7)), t + 6.0, t + 7.0));
        }
        assert_eq!(check(&h, 5_000_000), Verdict::Linearizable);
    }

    proptest::proptest! {
        /// Any history produced by a real sequential register (each op applied atomically at
        /// some instant inside its window) is accepted.
        #[test]
        fn histories_of_a_real_register_pass(
            ops in proptest::collection::vec((0u8..3, 0u32..1000, 1u32..200, 0u32..200), 1..40)
        ) {
            // Apply ops at distinct instants `at`; windows [at - before, at + after].
            let mut timed: Vec<(u32, u8, u32, u32)> = ops.iter().enumerate()
                .map(|(i, &(k, at, b, a))| (at * 64 + i as u32, k, b, a)).collect();
            timed.sort();
            let mut state: Option<u64> = None;
            let mut h = Vec::new();
            for (n, &(at, k, b, a)) in timed.iter().enumerate() {
                let op = match k {
                    0 => { state = Some(n as u64); RegOp::Write(n as u64) }
                    1 => { state = None; RegOp::Delete }
                    _ => RegOp::Read(state),
                };
                let at = at as f64;
                h.push(e(op, at - b as f64, at + a as f64));
            }
            proptest::prop_assert_eq!(check(&h, 10_000_000), Verdict::Linearizable);
        }
    }
}
