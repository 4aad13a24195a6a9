//! metrics.json, the paper-style markdown table and the ROC / PR / PRO plots of one or several
//! evaluated methods.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Metrics;
use crate::viz::plot::{LegendCorner, LinePlot, Series};

/// Plot size in pixels.
const PLOT_SIZE: (u32, u32) = (800, 600);

/// One evaluated prediction set.
#[derive(Clone, Debug)]
pub struct Method {
    /// Row label in tables and legends.
    pub name: String,
    /// Its metrics.
    pub metrics: Metrics,
}

/// Writes `metrics` as pretty JSON.
pub fn write_metrics_json(path: &Path, metrics: &Metrics) -> Result<()> {
    let text = serde_json::to_string_pretty(metrics)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The paper's table (Tables I-III): method | AUROC | AP | FPR@95 | AUPRO, four decimals,
/// `n/a` when undefined, the best value of each column in bold when there are several methods.
pub fn markdown_table(methods: &[Method]) -> String {
    type Column = (fn(&Metrics) -> Option<f64>, bool);
    let columns: [Column; 4] = [
        (|m| m.auroc, true),
        (|m| m.ap, true),
        (|m| m.fpr95, false),
        (|m| m.aupro, true),
    ];
    let best: Vec<Option<f64>> = columns
        .iter()
        .map(|&(get, higher)| {
            let vals = methods.iter().filter_map(|m| get(&m.metrics));
            if higher {
                vals.reduce(f64::max)
            } else {
                vals.reduce(f64::min)
            }
        })
        .collect();
    let mut out = String::from("| method | AUROC ↑ | AP ↑ | FPR@95 ↓ | AUPRO ↑ |\n");
    out.push_str("|---|---|---|---|---|\n");
    for method in methods {
        let _ = write!(out, "| {} |", method.name);
        for (&(get, _), best) in columns.iter().zip(&best) {
            let cell = match get(&method.metrics) {
                None => "n/a".to_string(),
                Some(v) if methods.len() > 1 && Some(v) == *best => format!("**{v:.4}**"),
                Some(v) => format!("{v:.4}"),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

fn fmt_metric(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"))
}

/// ROC points (FPR, TPR) by ascending FPR.
fn roc_points(m: &Metrics) -> Vec<(f64, f64)> {
    m.curves.as_ref().map_or_else(Vec::new, |c| {
        (0..c.rates.fpr.len())
            .rev()
            .map(|k| (c.rates.fpr[k], c.rates.tpr[k]))
            .collect()
    })
}

/// PR points (recall, precision) by ascending recall, without thresholds that predict nothing.
fn pr_points(m: &Metrics) -> Vec<(f64, f64)> {
    m.curves.as_ref().map_or_else(Vec::new, |c| {
        (0..c.rates.tpr.len())
            .rev()
            .filter(|&k| c.rates.precision[k] > 0.0 || c.rates.tpr[k] > 0.0)
            .map(|k| (c.rates.tpr[k], c.rates.precision[k]))
            .collect()
    })
}

/// PRO points (FPR, PRO) from (0, 0) up to the integration limit.
fn pro_points(m: &Metrics) -> Vec<(f64, f64)> {
    let Some((c, pro)) = m
        .curves
        .as_ref()
        .and_then(|c| c.pro.as_ref().map(|p| (c, p)))
    else {
        return Vec::new();
    };
    std::iter::once((0.0, 0.0))
        .chain(
            (0..pro.len())
                .rev()
                .map(|k| (c.rates.fpr[k], pro[k]))
                .filter(|&(x, _)| x <= m.aupro_max_fpr),
        )
        .collect()
}

/// Writes, in `out`: the metrics JSON (`metrics.json` for one method, `NAME/metrics.json` for
/// several), `table.md`, and `roc.png`, `pr.png`, `pro.png` with one curve per method.
/// Returns the paths written.
pub fn write_report(out: &Path, methods: &[Method]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for method in methods {
        let path = if methods.len() == 1 {
            out.join("metrics.json")
        } else {
            let dir = out.join(&method.name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.join("metrics.json")
        };
        write_metrics_json(&path, &method.metrics)?;
        written.push(path);
    }
    let table = out.join("table.md");
    std::fs::write(&table, markdown_table(methods))
        .with_context(|| format!("writing {}", table.display()))?;
    written.push(table);

    let series = |points: fn(&Metrics) -> Vec<(f64, f64)>,
                  what: &str,
                  value: fn(&Metrics) -> Option<f64>| {
        methods
            .iter()
            .map(|m| Series {
                label: format!("{} ({what} {})", m.name, fmt_metric(value(&m.metrics))),
                points: points(&m.metrics),
            })
            .collect::<Vec<_>>()
    };
    let prevalence = methods.first().map_or(0.0, |m| {
        let c = &m.metrics.counts;
        c.positive_pixels as f64 / (c.positive_pixels + c.negative_pixels).max(1) as f64
    });
    let max_fpr = methods.first().map_or(0.3, |m| m.metrics.aupro_max_fpr);
    let plots = [
        (
            "roc.png",
            LinePlot {
                title: "ROC (pixels)".into(),
                x_label: "False positive rate".into(),
                y_label: "True positive rate".into(),
                x_range: (0.0, 1.0),
                y_range: (0.0, 1.0),
                series: series(roc_points, "AUROC", |m| m.auroc),
                reference: Some(Series {
                    label: "chance".into(),
                    points: vec![(0.0, 0.0), (1.0, 1.0)],
                }),
                legend: LegendCorner::LowerRight,
            },
        ),
        (
            "pr.png",
            LinePlot {
                title: "Precision-recall (pixels)".into(),
                x_label: "Recall".into(),
                y_label: "Precision".into(),
                x_range: (0.0, 1.0),
                y_range: (0.0, 1.0),
                series: series(pr_points, "AP", |m| m.ap),
                reference: Some(Series {
                    label: format!("prevalence {prevalence:.4}"),
                    points: vec![(0.0, prevalence), (1.0, prevalence)],
                }),
                legend: LegendCorner::LowerLeft,
            },
        ),
        (
            "pro.png",
            LinePlot {
                title: format!("Per-region overlap up to FPR {max_fpr}"),
                x_label: "False positive rate".into(),
                y_label: "Per-region overlap (PRO)".into(),
                x_range: (0.0, max_fpr),
                y_range: (0.0, 1.0),
                series: series(pro_points, "AUPRO", |m| m.aupro),
                reference: None,
                legend: LegendCorner::LowerRight,
            },
        ),
    ];
    for (file, plot) in plots {
        let path = out.join(file);
        plot.save_png(&path, PLOT_SIZE.0, PLOT_SIZE.1)?;
        written.push(path);
    }
    Ok(written)
}
