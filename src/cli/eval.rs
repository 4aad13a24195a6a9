//! `stars eval`: score anomaly maps against ground-truth masks and write a report.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::out::outln;
use crate::data::tallo::MaskIds;
use crate::eval::report::{markdown_table, write_report, Method};
use crate::eval::{pair_frames, score_pairs, EvalConfig, Evaluator, FramePair};
use crate::model::flowclas::backbone::RANDOM_BACKBONE_LABEL;
use crate::viz::metric_plots::write_plots;

/// The run descriptions a prediction folder may hold, most specific first: `stars refine`'s,
/// `stars bag to-tallo --maps-out`'s, then `stars detect`'s.
const PROVENANCE_FILES: [&str; 3] = ["refine.json", "maps.json", "detect.json"];

/// Arguments of `stars eval`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars eval --pred runs/flowclas/maps --gt data/tallo/test --out reports/flowclas
  stars eval --pred FlowCLAS=runs/flowclas/maps --pred STARS=runs/stars/maps \\
             --gt data/tallo/test --out reports/table1
  stars eval --pred maps --gt gt --out r --exact --bins 1000 --anomaly-id 8

  stars eval --pred FlowCLAS=pred --pred +EMA=refined/ema --pred +Kalman=refined/kalman \\
             --pred +centroid=refined/centroid --gt flicker/gt --out reports/table3

Predictions are .npy float maps (HxW) at the masks' relative paths under the prediction
folder: GT/seq07/masks/003.png is scored by PRED/seq07/masks/003.npy. The ground truth needs
masks only (SEQ/masks/NNN.png). A prediction folder whose detect.json, refine.json or maps.json
says random_backbone: true is labelled PLACEHOLDER_RANDOM_BACKBONE in every row, legend and JSON.
Writes OUT/metrics.json (with several methods: a summary, and OUT/NAME/metrics.json each),
OUT/table.md, and OUT/roc.png, OUT/pr.png, OUT/pro.png. See docs/eval.md.")]
pub struct Args {
    /// Prediction folder, or NAME=DIR; repeat to compare several methods in one table.
    ///
    /// Holds one .npy anomaly map (float, HxW, values in [0, 1]) per mask, at the mask's path
    /// relative to --gt with the extension .npy. NAME labels the table row and legend (default:
    /// the folder's name).
    #[arg(long, value_name = "[NAME=]DIR", required = true)]
    pub pred: Vec<String>,
    /// Ground truth: a TALLO-layout split (SEQ/masks/NNN.png) or one sequence; frames are
    /// not needed.
    #[arg(long, value_name = "DIR")]
    pub gt: PathBuf,
    /// Report folder (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also compute sort-based AUROC / AP / FPR@95 (scikit-learn's definitions).
    ///
    /// Keeps every pixel's score in memory (8 bytes per pixel): for small sets. Curves, AUPRO
    /// and the operating point stay binned.
    #[arg(long)]
    pub exact: bool,
    /// Number of thresholds, linspace(0, 1, BINS); a pixel is positive when score >= threshold.
    #[arg(long, default_value_t = 5000, value_name = "BINS")]
    pub bins: usize,
    #[command(flatten)]
    pub ids: MaskIdArgs,
    /// AUPRO integrates the PRO curve from FPR 0 to this limit (STARS paper: 0.3).
    #[arg(long, default_value_t = 0.3, value_name = "FPR")]
    pub aupro_max_fpr: f64,
}

/// Mask ids, shared by `eval` and `calibrate`.
#[derive(clap::Args, Debug)]
pub struct MaskIdArgs {
    /// Mask id of anomalous pixels (synthetic data and the STARS paper: 9; ALLO loader: 8).
    #[arg(long, default_value_t = 9, value_name = "ID")]
    pub anomaly_id: u8,
    /// Mask id of pixels left out of every metric.
    #[arg(long, default_value_t = 255, value_name = "ID")]
    pub ignore_id: u8,
}

impl MaskIdArgs {
    /// The ids as the reader and the evaluator take them.
    pub fn ids(&self) -> MaskIds {
        MaskIds {
            anomaly: self.anomaly_id,
            ignore: self.ignore_id,
            ..MaskIds::default()
        }
    }
}

/// Splits `NAME=DIR` (or plain `DIR`, named after its last component).
fn parse_pred(spec: &str) -> Result<(String, PathBuf)> {
    let (name, dir) = match spec.split_once('=') {
        Some((name, dir)) if !Path::new(spec).is_dir() => (name.to_string(), PathBuf::from(dir)),
        _ => {
            let dir = PathBuf::from(spec);
            // `.` and `..` have no usable last component until resolved.
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .or_else(|| {
                    let full = dir.canonicalize().ok()?;
                    full.file_name().map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "pred".to_string());
            (name, dir)
        }
    };
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        bail!("--pred {spec}: the method name {name:?} must be a plain word (NAME=DIR)");
    }
    Ok((name, dir))
}

/// The placeholder label of the maps in `dir`: `Some` when the run description beside them
/// (`refine.json`, `maps.json`, else `detect.json`) says `random_backbone: true`. Its `label`
/// is kept when it has one. A description that is not JSON is an error: it may be what marks
/// the maps as placeholders.
pub fn placeholder_label(dir: &Path) -> Result<Option<String>> {
    let Some(path) = PROVENANCE_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
    else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    if json["random_backbone"].as_bool() != Some(true) {
        return Ok(None);
    }
    let label = json["label"].as_str().unwrap_or(RANDOM_BACKBONE_LABEL);
    Ok(Some(label.to_string()))
}

/// Runs `stars eval`.
pub fn run(args: Args) -> Result<ExitCode> {
    let cfg = EvalConfig {
        bins: args.bins,
        exact: args.exact,
        ids: args.ids.ids(),
        aupro_max_fpr: args.aupro_max_fpr,
    };
    Evaluator::new(cfg.clone())?; // reject bad settings before reading anything
    let mut sets: Vec<(String, Option<String>, Vec<FramePair>)> = Vec::new();
    for spec in &args.pred {
        let (name, dir) = parse_pred(spec)?;
        if sets.iter().any(|(n, _, _)| *n == name) {
            bail!("--pred {spec}: two prediction sets are named {name:?}; use NAME=DIR");
        }
        let pairs = pair_frames(&dir, &args.gt).with_context(|| format!("--pred {spec}"))?;
        let placeholder = placeholder_label(&dir).with_context(|| format!("--pred {spec}"))?;
        sets.push((name, placeholder, pairs));
    }

    let total = sets.iter().map(|(_, _, p)| p.len() as u64).sum();
    let bar = super::progress::bar(total, "eval");
    let mut methods = Vec::new();
    for (name, placeholder, pairs) in sets {
        let metrics = score_pairs(&pairs, &cfg, || bar.inc(1))?;
        let method = Method {
            name,
            metrics,
            placeholder,
        };
        for note in &method.metrics.notes {
            eprintln!("stars eval: {}: {note}", method.label());
        }
        methods.push(method);
    }
    bar.finish_and_clear();

    write_report(&args.out, &methods)?;
    write_plots(&args.out, &methods)?;
    for row in markdown_table(&methods).lines() {
        outln!("{row}")?;
    }
    outln!("report written to {}", args.out.display())?;
    Ok(ExitCode::SUCCESS)
}
