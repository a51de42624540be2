//! The run's outputs: a human summary, the JSON report and an SVG timeline.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::checker::Findings;
use crate::history::{Call, FaultRecord, Op, Outcome, FINAL};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_s: f64,
    pub nodes: usize,
    pub zones: usize,
    pub fault_kinds: Vec<String>,
    pub ops: usize,
    pub acked_writes: usize,
    pub lost_writes: usize,
    pub phantoms: usize,
    pub linearizable: bool,
    pub resurrected: usize,
    pub isolation_violations: usize,
    pub unfindable: usize,
    pub unverified: usize,
    /// The longest write unavailability of any fault (see `checker::availability`).
    pub max_unavailable_s: f64,
    /// The longest time after a heal until every stuck write stream was served again.
    pub max_recover_s: f64,
    pub faults: Vec<FaultRecord>,
    /// Operations per outcome and kind.
    pub outcomes: BTreeMap<String, usize>,
    /// Error messages' codes (first word) and how often they were seen.
    pub errors: BTreeMap<String, usize>,
    /// Problems of the run itself (a node that did not come back, setup failures).
    pub incidents: Vec<String>,
    /// Faults that left every shard a majority, yet some writes waited through the whole
    /// fault (`checker::stalled`).
    pub stalled: Vec<String>,
    pub findings: Findings,
    pub ok: bool,
}

impl Report {
    pub fn new(
        seed: u64,
        duration_s: f64,
        (nodes, zones): (usize, usize),
        fault_kinds: Vec<String>,
        history: &[Op],
        faults: Vec<FaultRecord>,
        findings: Findings,
        incidents: Vec<String>,
    ) -> Self {
        let mut outcomes = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for o in history.iter().filter(|o| o.process != FINAL) {
            let kind = match o.call {
                Call::Write { .. } => "write",
                Call::Delete { .. } => "delete",
                Call::Read { .. } => "read",
                Call::Search { .. } => "search",
            };
            let out = match o.outcome {
                Outcome::Ok => "ok",
                Outcome::Fail => "fail",
                Outcome::Unknown => "unknown",
            };
            *outcomes.entry(format!("{kind}_{out}")).or_insert(0) += 1;
            if let Some(e) = &o.error {
                let code = e.split(':').next().unwrap_or("").to_string();
                *errors.entry(code).or_insert(0) += 1;
            }
        }
        let max_unavailable_s = faults.iter().map(|f| f.unavailable_s).fold(0.0, f64::max);
        let max_recover_s = faults.iter().map(|f| f.recover_s).fold(0.0, f64::max);
        let stalled = crate::checker::stalled(&faults);
        let ok = findings.clean() && incidents.is_empty() && stalled.is_empty();
        Report {
            seed,
            duration_s,
            nodes,
            zones,
            fault_kinds,
            ops: history.iter().filter(|o| o.process != FINAL).count(),
            acked_writes: findings.acked_writes,
            lost_writes: findings.lost_writes.len(),
            phantoms: findings.phantoms.len(),
            linearizable: findings.linearizable,
            resurrected: findings.resurrected.len(),
            isolation_violations: findings.isolation_violations.len(),
            unfindable: findings.unfindable.len(),
            unverified: findings.unverified.len(),
            max_unavailable_s,
            max_recover_s,
            faults,
            outcomes,
            errors,
            incidents,
            stalled,
            findings,
            ok,
        }
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "engram-chaos seed {} — {:.0} s, {} nodes in {} zones, faults {}",
            self.seed,
            self.duration_s,
            self.nodes,
            self.zones,
            self.fault_kinds.join(",")
        );
        let _ = writeln!(
            s,
            "  ops {}  acknowledged writes {}  outcomes {:?}",
            self.ops, self.acked_writes, self.outcomes
        );
        for f in &self.faults {
            let _ = writeln!(
                s,
                "  {:>7.1}s–{:>6.1}s  {:<14} {:<28} writes unavailable {:>5.2} s, recovered {:>5.2} s after heal",
                f.start_s, f.heal_s, f.kind, f.target, f.unavailable_s, f.recover_s
            );
        }
        let check = |ok: bool| if ok { "ok" } else { "FAILED" };
        let f = &self.findings;
        let _ = writeln!(s, "  no lost writes ........ {} ({})", check(f.lost_writes.is_empty()), self.lost_writes);
        let _ = writeln!(s, "  findable by search .... {} ({} not found)", check(f.unfindable.is_empty()), self.unfindable);
        let _ = writeln!(s, "  verified .............. {} ({} unverified)", check(f.unverified.is_empty()), self.unverified);
        let _ = writeln!(s, "  no phantoms ........... {} ({})", check(f.phantoms.is_empty()), self.phantoms);
        let _ = writeln!(s, "  linearizable .......... {} ({} keys not)", check(f.linearizable), f.nonlinearizable_keys.len());
        let _ = writeln!(s, "  deletes stay deleted .. {} ({})", check(f.resurrected.is_empty()), self.resurrected);
        let _ = writeln!(s, "  tenant isolation ...... {} ({})", check(f.isolation_violations.is_empty()), self.isolation_violations);
        let _ = writeln!(
            s,
            "  availability: max write unavailability {:.2} s, max recovery after heal {:.2} s, longest gap with no write {:.2} s",
            self.max_unavailable_s, self.max_recover_s, f.max_global_gap_s
        );
        let _ = writeln!(
            s,
            "  writes back mid-fault . {} ({} faults kept a majority yet stalled writes to the heal)",
            check(self.stalled.is_empty()),
            self.stalled.len()
        );
        for i in &self.incidents {
            let _ = writeln!(s, "  INCIDENT: {i}");
        }
        for st in &self.stalled {
            let _ = writeln!(s, "  stalled: {st}");
        }
        for (name, list) in [
            ("lost", &f.lost_writes),
            ("phantom", &f.phantoms),
            ("non-linearizable", &f.nonlinearizable_keys),
            ("resurrected", &f.resurrected),
            ("isolation", &f.isolation_violations),
            ("unfindable", &f.unfindable),
            ("unverified", &f.unverified),
        ] {
            for l in list.iter().take(10) {
                let _ = writeln!(s, "  {name}: {l}");
            }
        }
        let _ = writeln!(s, "  verdict: {}", if self.ok { "PASS" } else { "FAIL" });
        s
    }
}

/// A timeline a person can look at: one lane per client, operations coloured by outcome
/// (short ones binned, long ones drawn whole), acknowledged writes per second on top, and
/// the faults as bands.
pub fn timeline_svg(history: &[Op], faults: &[FaultRecord], seed: u64) -> String {
    let ops: Vec<&Op> = history.iter().filter(|o| o.process != FINAL).collect();
    let lanes = ops.iter().map(|o| o.process + 1).max().unwrap_or(1);
    let end = ops
        .iter()
        .map(|o| o.complete)
        .fold(1.0f64, f64::max)
        .max(faults.iter().map(|f| f.heal_s).fold(0.0, f64::max));
    let (left, width, top, tput_h, lane_h) = (70.0, 1100.0, 40.0, 80.0, 18.0);
    let lanes_top = top + tput_h + 30.0;
    let height = lanes_top + lanes as f64 * lane_h + 60.0;
    let x = |t: f64| left + t / end * width;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"#,
        left + width + 30.0
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="14">engram-chaos seed {seed}: operations per client (green ok, orange unknown, red failed) and faults</text>"#
    );
    // Faults.
    for (i, f) in faults.iter().enumerate() {
        let (a, b) = (x(f.start_s), x(f.heal_s));
        let _ = writeln!(
            s,
            r##"<rect x="{a:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#c0392b" opacity="0.12"/>"##,
            (b - a).max(1.0),
            height - top - 40.0
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#922">{} {}</text>"##,
            a + 2.0,
            top + 10.0 + (i % 3) as f64 * 11.0,
            f.kind,
            f.target
        );
    }
    // Acknowledged writes per second.
    let bins = (end.ceil() as usize).max(1);
    let mut per_s = vec![0usize; bins + 1];
    for o in &ops {
        if o.ok() && matches!(o.call, Call::Write { .. }) {
            per_s[(o.complete as usize).min(bins)] += 1;
        }
    }
    let peak = per_s.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut path = String::new();
    for (i, n) in per_s.iter().enumerate() {
        let px = x(i as f64);
        let py = top + tput_h - *n as f64 / peak * (tput_h - 15.0);
        let _ = write!(path, "{}{px:.1},{py:.1} ", if i == 0 { "M" } else { "L" });
    }
    let _ = writeln!(s, r##"<path d="{path}" fill="none" stroke="#1f6f3f" stroke-width="1.5"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="4" y="{:.1}" fill="#1f6f3f">acks/s</text><text x="4" y="{:.1}" fill="#1f6f3f">{peak:.0}</text>"##,
        top + tput_h / 2.0,
        top + 18.0
    );
    // Lanes: short operations binned at 0.25 s, long ones (> 0.25 s) drawn whole.
    let bin = 0.25;
    let nbins = (end / bin).ceil() as usize + 1;
    let mut grid = vec![vec![(0usize, 0usize, 0usize); nbins]; lanes];
    let colour = |o: Outcome| match o {
        Outcome::Ok => "#2a9d48",
        Outcome::Unknown => "#e67e22",
        Outcome::Fail => "#c0392b",
    };
    let mut long = String::new();
    for o in &ops {
        let lane_y = lanes_top + o.process as f64 * lane_h;
        if o.complete - o.invoke > bin {
            let _ = writeln!(
                long,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" opacity="0.85"><title>{:?} {:.2}s</title></rect>"#,
                x(o.invoke),
                lane_y + 4.0,
                (x(o.complete) - x(o.invoke)).max(1.0),
                lane_h - 8.0,
                colour(o.outcome),
                o.outcome,
                o.complete - o.invoke
            );
        } else {
            let g = &mut grid[o.process][((o.complete / bin) as usize).min(nbins - 1)];
            match o.outcome {
                Outcome::Ok => g.0 += 1,
                Outcome::Unknown => g.1 += 1,
                Outcome::Fail => g.2 += 1,
            }
        }
    }
    for (lane, row) in grid.iter().enumerate() {
        let lane_y = lanes_top + lane as f64 * lane_h;
        let _ = writeln!(
            s,
            r#"<text x="4" y="{:.1}">client {lane}</text>"#,
            lane_y + lane_h * 0.7
        );
        for (b, &(ok, unk, fail)) in row.iter().enumerate() {
            if ok + unk + fail == 0 {
                continue;
            }
            let c = if fail > 0 {
                colour(Outcome::Fail)
            } else if unk > 0 {
                colour(Outcome::Unknown)
            } else {
                colour(Outcome::Ok)
            };
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}"/>"#,
                x(b as f64 * bin),
                lane_y + 2.0,
                (x(bin) - x(0.0)).max(0.5),
                lane_h - 4.0
            );
        }
    }
    s += &long;
    // Time axis.
    let axis_y = lanes_top + lanes as f64 * lane_h + 10.0;
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#333"/>"##,
        left + width
    );
    let step = if end > 300.0 { 60.0 } else if end > 60.0 { 10.0 } else { 5.0 };
    let mut t = 0.0;
    while t <= end {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{axis_y}" x2="{0:.1}" y2="{1}" stroke="#333"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3:.0}s</text>"##,
            x(t),
            axis_y + 5.0,
            axis_y + 18.0,
            t
        );
        t += step;
    }
    s += "</svg>\n";
    s
}
