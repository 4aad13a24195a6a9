//! `stars calibrate`: the FPR@95 operating threshold for the alert node.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::eval::MaskIdArgs;
use super::out::outln;
use crate::eval::calibrate::Threshold;
use crate::eval::{pair_frames, score_pairs, EvalConfig, Evaluator};

/// Arguments of `stars calibrate`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars calibrate --pred runs/flowclas/val-maps --gt data/tallo/val --out config/threshold.yaml
  stars calibrate --pred maps --gt gt --out t.yaml --bins 1000 --anomaly-id 8

The threshold is the highest of linspace(0, 1, BINS) whose pixel TPR on the data is still
>= 0.95 (where FPR@95 is read). The YAML has keys threshold, tpr, fpr, bins, source.")]
pub struct Args {
    /// Prediction folder: .npy maps at the masks' relative paths (as for `stars eval`).
    #[arg(long, value_name = "DIR")]
    pub pred: PathBuf,
    /// Ground truth: a TALLO-layout split (validation data) or one sequence.
    #[arg(long, value_name = "DIR")]
    pub gt: PathBuf,
    /// Threshold file to write (its folder is created).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Number of candidate thresholds, linspace(0, 1, BINS).
    #[arg(long, default_value_t = 5000, value_name = "BINS")]
    pub bins: usize,
    #[command(flatten)]
    pub ids: MaskIdArgs,
}

/// Runs `stars calibrate`.
pub fn run(args: Args) -> Result<ExitCode> {
    let cfg = EvalConfig {
        bins: args.bins,
        ids: args.ids.ids(),
        ..EvalConfig::default()
    };
    Evaluator::new(cfg.clone())?; // reject bad settings before reading anything
    let pairs = pair_frames(&args.pred, &args.gt)?;
    let bar = super::progress::bar(pairs.len() as u64, "calibrate");
    let metrics = score_pairs(&pairs, &cfg, || bar.inc(1))?;
    bar.finish_and_clear();
    let source = format!(
        "stars calibrate --pred {} --gt {} ({} frames)",
        args.pred.display(),
        args.gt.display(),
        metrics.counts.frames
    );
    let threshold = Threshold::from_metrics(&metrics, source)?;
    threshold.save(&args.out)?;
    outln!(
        "threshold {:.4}: pixel TPR {:.4}, FPR {:.4}; written to {}",
        threshold.threshold,
        threshold.tpr,
        threshold.fpr,
        args.out.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
