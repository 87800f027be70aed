//! PNG plots of a job, drawn into `<job.dir>/plots/` after its evaluation: the training
//! losses of both stages, stage 2's violated pairs and agreement, dev R@5 over training steps, and the final
//! comparison of BM25, GR and DGR. Text is set in Noto Sans, compiled in, so that plots draw
//! the same on a machine without fonts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dgr_trainer::engine::StepLog;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};
use serde_json::Value;
use tracing::info;

use crate::error::{Context, PipelineError, Result, if_present};
use crate::results::JobResults;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 520;
/// One colour per series, in order.
const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// A named line of (x, y) points.
type Series = (String, Vec<(f64, f64)>);

fn drawing(error: impl std::fmt::Display) -> PipelineError {
    PipelineError::Invalid(format!("cannot draw the plot: {error}"))
}

/// Draws every plot the job's outputs allow; returns the files written.
pub fn draw(job_dir: &Path, results: &JobResults) -> Result<Vec<PathBuf>> {
    // Registering twice is harmless; the font is the crate's own, so parsing cannot fail twice.
    register_font("sans-serif", FontStyle::Normal, ttf_noto_sans::REGULAR)
        .map_err(|_| PipelineError::Invalid("the embedded font cannot be read".into()))?;
    let dir = job_dir.join("plots");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();

    for (stage, name) in [("stage1", "Stage 1"), ("stage2", "Stage 2")] {
        let steps = step_log(&job_dir.join(stage).join("train_log.jsonl"))?;
        if steps.is_empty() {
            continue;
        }
        // The loss, and apart (their scales differ by λ) the terms it sums.
        let mut panels =
            vec![Panel::of(format!("{name}: training loss"), "loss", smoothed("loss", &steps, |s| Some(s.loss)))];
        for (measure, label) in [("rank_loss", "ranking loss"), ("generation_loss", "generation loss")] {
            if steps.iter().any(|s| s.measures.contains_key(measure)) {
                let series = smoothed(label, &steps, |s| s.measures.get(measure).copied());
                panels.push(Panel::of(format!("{name}: {label}"), label, series));
            }
        }
        let path = dir.join(format!("{stage}-loss.png"));
        line_charts(&path, &panels)?;
        written.push(path);
        if steps.iter().any(|s| s.measures.contains_key("violated_pairs")) {
            // Distillation at work: violated pairs fall while agreement with the teacher rises.
            // Each step's lists are new draws; the fixed lists (at the evaluations) stay.
            let drawn = "each step's lists (moving average)";
            let violated = smoothed(drawn, &steps, |s| s.measures.get("violated_pairs").copied());
            let agreement = smoothed(drawn, &steps, |s| s.measures.get("agreement").copied());
            let mut panels = [
                Panel::of(format!("{name}: pairs inside the margin or out of order"), "pairs per query", violated),
                Panel::of(format!("{name}: pairs ordered as the teacher orders them"), "share of pairs", agreement),
            ];
            let metrics = job_dir.join("metrics.jsonl");
            for (panel, metric) in panels.iter_mut().zip(["violated_pairs", "agreement"]) {
                if let Some(points) = training_evaluations(&metrics, "fixed-lists", metric)?.remove("train-distill") {
                    panel
                        .series
                        .push(("fixed lists".to_string(), points.into_iter().map(|(s, v)| (s as f64, v)).collect()));
                }
            }
            let path = dir.join("stage2-violated-pairs.png");
            line_charts(&path, &panels)?;
            written.push(path);
        }
    }

    let dev = dev_recall(&job_dir.join("metrics.jsonl"))?;
    if !dev.is_empty() {
        let path = dir.join("dev-recall.png");
        line_charts(&path, &[Panel { title: "Dev R@5 during training".into(), y_desc: "R@5 (%)", series: dev }])?;
        written.push(path);
    }
    if !results.rows.is_empty() {
        let path = dir.join("results.png");
        comparison(&path, results)?;
        written.push(path);
    }
    info!(plots = written.len(), dir = %dir.display(), "plots drawn");
    Ok(written)
}

/// A training stage's step log (empty when the stage has not run).
fn step_log(path: &Path) -> Result<Vec<StepLog>> {
    let Some(text) = if_present(std::fs::read_to_string(path), path)? else { return Ok(Vec::new()) };
    text.lines()
        .enumerate()
        .map(|(i, line)| serde_json::from_str(line).with_context(|| format!("{}: line {}", path.display(), i + 1)))
        .collect()
}

/// `value` over steps, as a moving average over a twentieth of the run.
fn smoothed(name: &str, steps: &[StepLog], value: impl Fn(&StepLog) -> Option<f64>) -> Series {
    let points: Vec<(f64, f64)> = steps.iter().filter_map(|s| Some((s.step as f64, value(s)?))).collect();
    let window = (points.len() / 20).max(1);
    let averaged = points
        .iter()
        .enumerate()
        .map(|(i, &(x, _))| {
            let from = i.saturating_sub(window - 1);
            let part = &points[from..=i];
            (x, part.iter().map(|p| p.1).sum::<f64>() / part.len() as f64)
        })
        .collect();
    (name.to_string(), averaged)
}

/// Dev R@5 (in percent) by step, one series per training stage, from `metrics.jsonl`.
fn dev_recall(path: &Path) -> Result<Vec<Series>> {
    Ok(training_evaluations(path, "qrels", "recall@5")?
        .into_iter()
        .map(|(stage, points)| (stage, points.into_iter().map(|(s, r)| (s as f64, 100.0 * r)).collect()))
        .collect())
}

/// `metric` by step in the evaluations of `kind` made during training (lines of `metrics.jsonl`
/// with a step), per stage. A rerun's later line for the same step replaces the earlier one.
fn training_evaluations(path: &Path, kind: &str, metric: &str) -> Result<BTreeMap<String, BTreeMap<u64, f64>>> {
    let Some(text) = if_present(std::fs::read_to_string(path), path)? else { return Ok(BTreeMap::new()) };
    let mut by_stage: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(row) = serde_json::from_str::<Value>(line) else { continue };
        let (Some(stage), Some(step), Some(value)) =
            (row["stage"].as_str(), row["step"].as_u64(), row["metrics"][metric].as_f64())
        else {
            continue;
        };
        if row["kind"] == kind {
            by_stage.entry(stage.to_string()).or_default().insert(step, value);
        }
    }
    Ok(by_stage)
}

/// One chart of a plot: lines over training steps.
struct Panel {
    title: String,
    y_desc: &'static str,
    series: Vec<Series>,
}

impl Panel {
    fn of(title: String, y_desc: &'static str, series: Series) -> Self {
        Panel { title, y_desc, series: vec![series] }
    }
}

/// Line charts over steps, stacked in one PNG.
fn line_charts(path: &Path, panels: &[Panel]) -> Result<()> {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT * panels.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(drawing)?;
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        line_chart(area, panel)?;
    }
    root.present().map_err(drawing)?;
    Ok(())
}

fn line_chart(area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>, panel: &Panel) -> Result<()> {
    let points = panel.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        return Ok(());
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-6);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(panel.y_desc)
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(drawing)?;
    for (i, (name, points)) in panel.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))
            .map_err(drawing)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(drawing)?;
    Ok(())
}

/// Grouped bars: per split, each metric's value for each system.
fn comparison(path: &Path, results: &JobResults) -> Result<()> {
    const METRICS: [(&str, &str); 5] = [
        ("recall@5", "R@5"),
        ("recall@20", "R@20"),
        ("recall@100", "R@100"),
        ("mrr@10", "MRR@10"),
        ("ndcg@10", "nDCG@10"),
    ];
    let rows: Vec<_> = results.rows.iter().filter(|r| r.kind == "qrels").collect();
    let mut splits: Vec<&str> = Vec::new();
    let mut systems: Vec<&str> = Vec::new();
    for row in &rows {
        if !splits.contains(&row.split.as_str()) {
            splits.push(&row.split);
        }
        if !systems.contains(&row.system.as_str()) {
            systems.push(&row.system);
        }
    }
    if splits.is_empty() {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT * splits.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(drawing)?;
    let panels = root.split_evenly((splits.len(), 1));
    let width = systems.len() as f64 + 1.0;
    for (panel, split) in panels.iter().zip(&splits) {
        let names: Vec<String> = systems.iter().map(|s| s.to_uppercase()).collect();
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{} on {split}", names.join(", ")), ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(10)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..width * METRICS.len() as f64, -8.0..105.0)
            .map_err(drawing)?;
        // The metric names sit under their bars, inside the chart: the x axis is not numeric.
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|y| if *y < 0.0 { String::new() } else { format!("{y:.0}") })
            .y_desc("%")
            .draw()
            .map_err(drawing)?;
        let label_style = TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .draw_series(METRICS.iter().enumerate().map(|(m, (_, label))| {
                Text::new(label.to_string(), (m as f64 * width + width / 2.0, -4.0), label_style.clone())
            }))
            .map_err(drawing)?;
        for (s, system) in systems.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            let row = rows.iter().find(|r| r.split == *split && r.system == *system);
            let bars = METRICS.iter().enumerate().filter_map(|(m, (metric, _))| {
                let value = 100.0 * row?.metrics.get(*metric)?;
                let left = m as f64 * width + 0.5 + s as f64;
                Some(Rectangle::new([(left, 0.0), (left + 0.9, value)], colour.filled()))
            });
            chart
                .draw_series(bars)
                .map_err(drawing)?
                .label(system.to_uppercase())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], colour.filled()));
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 15))
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(drawing)?;
    }
    root.present().map_err(drawing)?;
    Ok(())
}
