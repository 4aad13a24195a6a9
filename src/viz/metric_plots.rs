//! The ROC / PR / PRO plots of one or several evaluated methods (viz depends on eval, never
//! the reverse).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::plot::{LegendCorner, LinePlot, Series};
use crate::eval::report::Method;
use crate::eval::Metrics;

/// Plot size in pixels.
const PLOT_SIZE: (u32, u32) = (800, 600);

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

/// Writes `roc.png`, `pr.png` and `pro.png` in `out` (created), one curve per method.
/// Returns the paths written.
pub fn write_plots(out: &Path, methods: &[Method]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    let series = |points: fn(&Metrics) -> Vec<(f64, f64)>,
                  what: &str,
                  value: fn(&Metrics) -> Option<f64>| {
        methods
            .iter()
            .map(|m| Series {
                label: format!("{} ({what} {})", m.label(), fmt_metric(value(&m.metrics))),
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
