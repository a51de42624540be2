//! SVG plots for the reports (plotters, SVG backend): recall–QPS curves, latency
//! percentiles, the scaling curve and the failover timeline.

use plotters::prelude::*;

use crate::failover::{FailoverReport, Sample};
use crate::load::BoxError;
use crate::scale::ScaleReport;

const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(255, 187, 120),
];

pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let lo = lo.max(1e-3);
    let hi = hi.max(lo * 1.01);
    (lo / 1.3, hi * 1.3)
}

/// The legend box every figure draws, at `pos`.
fn legend<'a, 'b: 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    pos: SeriesLabelPosition,
) -> Result<(), BoxError> {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// One labelled line of series `i`'s colour, with a dot of `radius` on each point.
fn line_with_dots<'a, 'b: 'a, CT: plotters::coord::CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    name: &str,
    points: &[(f64, f64)],
    i: usize,
    radius: i32,
) -> Result<(), BoxError> {
    let col = colour(i);
    chart
        .draw_series(LineSeries::new(points.iter().copied(), col.stroke_width(2)))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
    chart.draw_series(points.iter().map(|&p| Circle::new(p, radius, col.filled())))?;
    Ok(())
}

/// Recall@k (x) against single-thread QPS (y, log scale), one line per engine.
pub fn recall_qps(title: &str, curves: &[(String, Vec<(f64, f64)>)]) -> Result<String, BoxError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let pts = curves.iter().flat_map(|(_, c)| c.iter());
        let (mut rmin, mut qmin, mut qmax) = (1.0f64, f64::MAX, 0.0f64);
        for &(r, q) in pts {
            rmin = rmin.min(r);
            qmin = qmin.min(q);
            qmax = qmax.max(q);
        }
        if qmax <= 0.0 {
            return Err("no points to plot".into());
        }
        let (lo, hi) = log_range(qmin, qmax);
        let x0 = (rmin - 0.02).clamp(0.0, 0.98);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..1.0f64, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("recall@10")
            .y_desc("queries per second (one thread, log scale)")
            .draw()?;
        for (i, (name, c)) in curves.iter().enumerate() {
            let mut c = c.clone();
            c.sort_by(|a, b| a.0.total_cmp(&b.0));
            line_with_dots(&mut chart, name, &c, i, 3)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
        root.present()?;
    }
    Ok(out)
}

/// p50 / p95 / p99 latency bars (ms, log scale) per engine.
pub fn latency_bars(title: &str, rows: &[(String, [f64; 3])]) -> Result<String, BoxError> {
    let mut out = String::new();
    {
        let width = (110 * rows.len() as u32 + 160).max(600);
        let root = SVGBackend::with_string(&mut out, (width, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let vals = rows.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| *v > 0.0);
        let (mut lo, mut hi) = (f64::MAX, 0.0f64);
        for v in vals {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if hi <= 0.0 {
            return Err("no latencies to plot".into());
        }
        let (lo, hi) = log_range(lo, hi);
        let n = rows.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..n, (lo..hi).log_scale())?;
        let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rows.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.26 && i < names.len() {
                    names[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("latency (ms, log scale)")
            .draw()?;
        for (q, label) in ["p50", "p95", "p99"].iter().enumerate() {
            let col = colour(q);
            chart
                .draw_series(rows.iter().enumerate().map(|(i, (_, v))| {
                    let x = i as f64 + 0.15 + q as f64 * 0.24;
                    Rectangle::new([(x, lo), (x + 0.22, v[q].max(lo))], col.filled())
                }))?
                .label(*label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        root.present()?;
    }
    Ok(out)
}

/// Ingest rate and recall QPS against the node count.
pub fn scaling_curve(r: &ScaleReport) -> Result<String, BoxError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1000, 440)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        let xmax = r.runs.iter().map(|x| x.nodes).max().unwrap_or(1) as f64 + 0.5;
        let ingest: Vec<(f64, f64)> = r
            .runs
            .iter()
            .map(|x| (x.nodes as f64, x.ingest.vectors_per_s))
            .collect();
        let panel = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                     title: &str,
                     ydesc: &str,
                     series: Vec<(String, Vec<(f64, f64)>)>|
         -> Result<(), BoxError> {
            let ymax = series
                .iter()
                .flat_map(|(_, s)| s.iter().map(|p| p.1))
                .fold(0.0f64, f64::max)
                * 1.2;
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 18))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0.5..xmax, 0.0..ymax.max(1.0))?;
            chart
                .configure_mesh()
                .x_desc("nodes")
                .y_desc(ydesc)
                .x_labels(8)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()?;
            for (i, (name, s)) in series.iter().enumerate() {
                line_with_dots(&mut chart, name, s, i, 4)?;
            }
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
            Ok(())
        };
        panel(
            &left,
            "ingest",
            "memories per second",
            vec![("ingest (batches)".into(), ingest)],
        )?;
        let mut rec: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        let concurrencies: Vec<usize> = r
            .runs
            .first()
            .map(|x| x.recall.iter().map(|p| p.concurrency).collect())
            .unwrap_or_default();
        for c in concurrencies {
            rec.push((
                format!("recalls, concurrency {c}"),
                r.runs
                    .iter()
                    .filter_map(|x| {
                        x.recall
                            .iter()
                            .find(|p| p.concurrency == c)
                            .map(|p| (x.nodes as f64, p.overall.qps))
                    })
                    .collect(),
            ));
        }
        let mixed: Vec<(f64, f64)> = r
            .runs
            .iter()
            .filter_map(|x| x.mixed.as_ref().map(|m| (x.nodes as f64, m.writes.qps)))
            .collect();
        if !mixed.is_empty() {
            rec.push(("single writes in the mixed phase".into(), mixed));
        }
        panel(&right, "recall and write throughput", "operations per second", rec)?;
        root.present()?;
    }
    Ok(out)
}

/// Latency of every write and search over time (log scale), failed ones on top, with each
/// trial's kill → ready span shaded.
pub fn failover_timeline(samples: &[Sample], r: &FailoverReport) -> Result<String, BoxError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1200, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let tmax = samples
            .iter()
            .map(|s| s.at_s + s.latency_ms / 1000.0)
            .fold(1.0f64, f64::max);
        let lmax = samples.iter().map(|s| s.latency_ms).fold(1.0f64, f64::max);
        let (lo, hi) = log_range(0.2, lmax * 2.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "failover: leader of a shard SIGKILLed and restarted ({} nodes, {} zones); writes back after p50 {:.2} s, max {:.2} s",
                    r.nodes, r.zones, r.write_unavailable_p50_s, r.write_unavailable_max_s
                ),
                ("sans-serif", 16),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..tmax, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("latency (ms, log scale)")
            .draw()?;
        let band = RGBColor(214, 39, 40);
        chart
            .draw_series(r.trials.iter().map(|t| {
                Rectangle::new([(t.kill_at_s, lo), (t.ready_at_s, hi)], band.mix(0.08).filled())
            }))?
            .label("node down → restarted and ready")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], band.mix(0.3).filled()));
        chart.draw_series(r.trials.iter().map(|t| {
            PathElement::new(
                vec![
                    (t.kill_at_s + t.write_unavailable_s, lo),
                    (t.kill_at_s + t.write_unavailable_s, hi),
                ],
                band.stroke_width(1),
            )
        }))?;
        for (i, write, name) in [(0usize, true, "writes"), (2, false, "searches")] {
            let col = colour(i);
            chart
                .draw_series(
                    samples
                        .iter()
                        .filter(|s| s.write == write && s.ok)
                        .map(|s| Circle::new((s.at_s, s.latency_ms.max(lo)), 1, col.filled())),
                )?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 6, y), 3, col.filled()));
        }
        chart
            .draw_series(
                samples
                    .iter()
                    .filter(|s| !s.ok)
                    .map(|s| Cross::new((s.at_s, s.latency_ms.max(lo)), 3, band.stroke_width(1))),
            )?
            .label("failed (after the SDK's retries)")
            .legend(move |(x, y)| Cross::new((x + 6, y), 3, band.stroke_width(1)));
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present()?;
    }
    Ok(out)
}
