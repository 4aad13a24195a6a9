//! metrics.json and the paper-style markdown table of one or several evaluated methods (the
//! plots are drawn by `crate::viz::metric_plots`: eval does not depend on viz).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Metrics;

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

/// Writes, in `out`: the metrics JSON (`metrics.json` for one method, `NAME/metrics.json` for
/// several) and `table.md`. The plots are `crate::viz::metric_plots::write_plots`'s.
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

    Ok(written)
}
