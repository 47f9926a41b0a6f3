//! The benchmark's pictures, as SVG files next to its JSON: the distribution of submit → delivered
//! latency (a CDF, log-scaled in time, so the median and the tail are both readable) and, from a
//! `--sweep`, throughput and latency against the offered load. Each series is one system: the
//! exchange nodes, and NATS JetStream when `--peer nats` ran.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::prelude::*;

/// One system's latencies, sorted ascending, in ms.
pub struct LatencySeries<'a> {
    pub label: String,
    pub sorted_ms: &'a [f64],
}

/// One point of a sweep for one system.
#[derive(Debug, Clone, Copy)]
pub struct LoadPoint {
    pub offered_per_s: f64,
    pub achieved_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `bench-result.json` → `bench-result-<suffix>.svg` in the same folder.
pub fn path_next_to(json: &Path, suffix: &str) -> PathBuf {
    let stem = json.file_stem().and_then(|s| s.to_str()).unwrap_or("bench-result");
    json.with_file_name(format!("{stem}-{suffix}.svg"))
}

const COLORS: [RGBColor; 4] = [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0xd6, 0x27, 0x28), RGBColor(0x2c, 0xa0, 0x2c), RGBColor(0x94, 0x67, 0xbd)];

/// Powers of ten around `[lo, hi]`, so that a log axis is labelled with whole decades.
fn decades(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let lo = if lo.is_finite() { lo } else { 1.0 };
    let hi = if hi.is_finite() { hi } else { lo };
    let lo = 10f64.powf(lo.max(1e-3).log10().floor());
    let hi = 10f64.powf(hi.max(lo).log10().ceil()).max(lo * 10.0);
    lo..hi
}

/// At most ~2,000 points of a sorted series: enough for a smooth curve, small enough for an SVG.
fn cdf_points(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let step = (n / 2000).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n).step_by(step).map(|i| (sorted[i].max(1e-3), (i + 1) as f64 / n as f64)).collect();
    if let Some(last) = sorted.last() {
        pts.push((last.max(1e-3), 1.0));
    }
    pts
}

/// Draws the latency CDFs of all `series` into `out`.
pub fn latency_cdf(out: &Path, title: &str, series: &[LatencySeries]) -> anyhow::Result<()> {
    let all = || series.iter().flat_map(|s| s.sorted_ms.iter().copied());
    let x = decades(all().fold(f64::INFINITY, f64::min), all().fold(0.0, f64::max));
    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x.log_scale(), 0.0..1.0)?;
        chart
            .configure_mesh()
            .label_style(("sans-serif", 14))
            .x_desc("submit → delivered latency, ms (log scale)")
            .y_desc("fraction of messages delivered within")
            .draw()?;
        for (k, s) in series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            chart
                .draw_series(LineSeries::new(cdf_points(s.sorted_ms), color.stroke_width(2)))?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).border_style(BLACK).background_style(WHITE).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", out.display()))
}

/// Draws throughput (top) and p50/p99 latency (bottom) against the offered load for each system.
pub fn throughput_against_load(out: &Path, title: &str, systems: &[(String, Vec<LoadPoint>)]) -> anyhow::Result<()> {
    let points = || systems.iter().flat_map(|(_, p)| p.iter().copied());
    let max_offered = points().map(|p| p.offered_per_s).fold(0.0, f64::max).max(1.0);
    let max_rate = points().map(|p| p.achieved_per_s.max(p.offered_per_s)).fold(0.0, f64::max).max(1.0);
    let lat = || points().flat_map(|p| [p.p50_ms, p.p99_ms]).filter(|v| v.is_finite());
    let lat_range = decades(lat().fold(f64::INFINITY, f64::min), lat().fold(0.0, f64::max));
    let lat_lo = lat_range.start;
    let root = SVGBackend::new(out, (900, 900)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 20))?;
        let (top, bottom) = root.split_vertically(450);
        let mut chart = ChartBuilder::on(&top)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..max_offered * 1.05, 0.0..max_rate * 1.1)?;
        chart.configure_mesh().label_style(("sans-serif", 14)).x_desc("offered load, messages/s").y_desc("achieved, messages/s").draw()?;
        chart
            .draw_series(LineSeries::new(vec![(0.0, 0.0), (max_offered, max_offered)], BLACK.mix(0.3)))?
            .label("offered = achieved")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.3)));
        for (k, (label, pts)) in systems.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.offered_per_s, p.achieved_per_s)).collect();
            chart
                .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)).point_size(4))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).background_style(WHITE).draw()?;

        let mut chart = ChartBuilder::on(&bottom)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..max_offered * 1.05, lat_range.log_scale())?;
        chart.configure_mesh().label_style(("sans-serif", 14)).x_desc("offered load, messages/s").y_desc("latency, ms (log scale)").draw()?;
        for (k, (label, pts)) in systems.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let p99: Vec<(f64, f64)> = pts.iter().filter(|p| p.p99_ms.is_finite()).map(|p| (p.offered_per_s, p.p99_ms.max(lat_lo))).collect();
            let p50: Vec<(f64, f64)> = pts.iter().filter(|p| p.p50_ms.is_finite()).map(|p| (p.offered_per_s, p.p50_ms.max(lat_lo))).collect();
            chart
                .draw_series(LineSeries::new(p99, color.stroke_width(2)).point_size(4))?
                .label(format!("{label} p99"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(LineSeries::new(p50, color.mix(0.5).stroke_width(1)).point_size(3))?
                .label(format!("{label} p50"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.5).stroke_width(1)));
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).background_style(WHITE).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", out.display())).context("drawing the sweep")
}
