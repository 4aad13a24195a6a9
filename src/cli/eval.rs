//! `stars eval`: score anomaly maps against ground-truth masks and write a report.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::data::tallo::MaskIds;
use crate::eval::report::{markdown_table, write_report, Method};
use crate::eval::{pair_frames, score_pairs, EvalConfig, Evaluator, FramePair};
use crate::viz::metric_plots::write_plots;

/// Arguments of `stars eval`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars eval --pred runs/flowclas/maps --gt data/tallo/test --out reports/flowclas
  stars eval --pred FlowCLAS=runs/flowclas/maps --pred STARS=runs/stars/maps \\
             --gt data/tallo/test --out reports/table1
  stars eval --pred maps --gt gt --out r --exact --bins 1000 --anomaly-id 8

Predictions are .npy float maps (HxW) at the masks' relative paths under the prediction
folder: GT/seq07/masks/003.png is scored by PRED/seq07/masks/003.npy.
Writes OUT/metrics.json (OUT/NAME/metrics.json per method when there are several),
OUT/table.md, and OUT/roc.png, OUT/pr.png, OUT/pro.png. See docs/eval.md.")]
pub struct Args {
    /// Prediction folder, or NAME=DIR; repeat to compare several methods in one table.
    ///
    /// Holds one .npy anomaly map (float, HxW, values in [0, 1]) per mask, at the mask's path
    /// relative to --gt with the extension .npy. NAME labels the table row and legend (default:
    /// the folder's name).
    #[arg(long, value_name = "[NAME=]DIR", required = true)]
    pub pred: Vec<String>,
    /// Ground truth: a TALLO-layout split (SEQ/masks/NNN.png) or one sequence.
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

/// Runs `stars eval`.
pub fn run(args: Args) -> Result<ExitCode> {
    let cfg = EvalConfig {
        bins: args.bins,
        exact: args.exact,
        ids: args.ids.ids(),
        aupro_max_fpr: args.aupro_max_fpr,
    };
    Evaluator::new(cfg.clone())?; // reject bad settings before reading anything
    let mut sets: Vec<(String, Vec<FramePair>)> = Vec::new();
    for spec in &args.pred {
        let (name, dir) = parse_pred(spec)?;
        if sets.iter().any(|(n, _)| *n == name) {
            bail!("--pred {spec}: two prediction sets are named {name:?}; use NAME=DIR");
        }
        let pairs = pair_frames(&dir, &args.gt).with_context(|| format!("--pred {spec}"))?;
        sets.push((name, pairs));
    }

    let total = sets.iter().map(|(_, p)| p.len() as u64).sum();
    let bar = super::progress::bar(total, "eval");
    let mut methods = Vec::new();
    for (name, pairs) in sets {
        let metrics = score_pairs(&pairs, &cfg, || bar.inc(1))?;
        for note in &metrics.notes {
            eprintln!("stars eval: {name}: {note}");
        }
        methods.push(Method { name, metrics });
    }
    bar.finish_and_clear();

    write_report(&args.out, &methods)?;
    write_plots(&args.out, &methods)?;
    print!("{}", markdown_table(&methods));
    println!("report written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
