//! metrics.json and the paper-style markdown table of one or several evaluated methods (the
//! plots are drawn by `crate::viz::metric_plots`: eval does not depend on viz).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Metrics;

/// One evaluated prediction set.
#[derive(Clone, Debug)]
pub struct Method {
    /// Its name (the folder of its metrics when several methods are compared).
    pub name: String,
    /// Its metrics.
    pub metrics: Metrics,
    /// Set when the maps are placeholders (e.g. `PLACEHOLDER_RANDOM_BACKBONE`): the text is
    /// appended to the name in every table row, legend and JSON.
    pub placeholder: Option<String>,
}

impl Method {
    /// The row label of tables and legends: the name, with the placeholder label if any.
    pub fn label(&self) -> String {
        match &self.placeholder {
            Some(p) => format!("{} ({p})", self.name),
            None => self.name.clone(),
        }
    }

    /// Its metrics as JSON, with `method`, `label` and `random_backbone` (whether the maps are
    /// placeholders) added; `curves` left out unless `with_curves`.
    pub fn to_json(&self, with_curves: bool) -> Result<serde_json::Value> {
        let mut value = serde_json::to_value(&self.metrics)?;
        let object = value
            .as_object_mut()
            .context("metrics serialise as a JSON object")?;
        if !with_curves {
            object.remove("curves");
        }
        object.insert("method".into(), self.name.clone().into());
        object.insert("label".into(), self.label().into());
        object.insert("random_backbone".into(), self.placeholder.is_some().into());
        Ok(value)
    }
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
        let _ = write!(out, "| {} |", method.label());
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

/// Writes, in `out`: `metrics.json` (one method: its metrics, curves included; several: a
/// summary `{"methods": [...]}` of every method without curves, and the full metrics of each
/// in `NAME/metrics.json`), and `table.md`. Every JSON names the method, its label and
/// whether it is a placeholder. The plots are `crate::viz::metric_plots::write_plots`'s.
/// Returns the paths written.
pub fn write_report(out: &Path, methods: &[Method]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    let write_json = |path: PathBuf, value: &serde_json::Value| -> Result<PathBuf> {
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    if let [method] = methods {
        written.push(write_json(
            out.join("metrics.json"),
            &method.to_json(true)?,
        )?);
    } else {
        let summary = methods
            .iter()
            .map(|m| m.to_json(false))
            .collect::<Result<Vec<_>>>()?;
        let summary = serde_json::json!({ "methods": summary });
        written.push(write_json(out.join("metrics.json"), &summary)?);
        for method in methods {
            let dir = out.join(&method.name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            written.push(write_json(
                dir.join("metrics.json"),
                &method.to_json(true)?,
            )?);
        }
    }
    let table = out.join("table.md");
    std::fs::write(&table, markdown_table(methods))
        .with_context(|| format!("writing {}", table.display()))?;
    written.push(table);

    Ok(written)
}
