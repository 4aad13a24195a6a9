//! `stars detect`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::detect::write_maps;
use crate::eval::report::{markdown_table, write_metrics_json, Method};
use crate::eval::{evaluate_dirs, EvalConfig};
use crate::model::flowclas;
use crate::model::flowclas::backbone::{self, RANDOM_BACKBONE_LABEL};

use super::out::outln;
use super::progress::{bar, Bar};

/// Name of the metrics written next to the maps with `--gt`.
pub const METRICS_JSON: &str = "metrics.json";
/// Name of the run description written next to the maps.
pub const DETECT_JSON: &str = "detect.json";

/// Arguments of `stars detect`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars detect --checkpoint ckpt --data synth/val --out pred --random-weights --gt
  stars detect --checkpoint ckpt --data tallo/test --out pred \\
      --backbone-weights models/dinov2-vitl14.safetensors
  stars eval --pred pred --gt tallo/test --out report

Maps are .npy f32 HxW in [0,1], one per frame, at the masks' relative paths: the frame
SPLIT/SEQ/frames/007.png gives OUT/SEQ/masks/007.npy, so OUT mirrors the split for `stars eval`.")]
pub struct Args {
    /// Detector checkpoint directory (from `stars train detector`).
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// A split (SPLIT/SEQ/frames/NNN.png) or one sequence to run on.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Folder for the maps (mirrors --data).
    #[arg(long, value_name = "PRED_DIR")]
    out: PathBuf,
    /// DINOv2 weights matching the checkpoint's backbone.
    #[arg(long, value_name = "PATH", conflicts_with = "random_weights")]
    backbone_weights: Option<PathBuf>,
    /// Use a randomly initialised backbone (placeholder; outputs are labelled as such).
    #[arg(long)]
    random_weights: bool,
    /// Also score the maps against the split's masks and print the metrics table.
    #[arg(long)]
    gt: bool,
    /// Where inference runs: cpu, or cuda:N (a build with `--features cuda` and a GPU).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: String,
}

/// Runs `stars detect`.
pub fn run(args: Args) -> Result<ExitCode> {
    let device = crate::model::device(&args.device).context("--device")?;
    let (model, _vars, meta) = flowclas::load(&args.checkpoint, &device)?;
    let extractor = backbone::open(
        &meta.backbone_arch,
        args.backbone_weights.as_deref(),
        args.random_weights,
        meta.backbone_blocks,
        &device,
    )?;
    let random = extractor.is_random();
    eprintln!("backbone: {}", extractor.describe());
    eprintln!(
        "detector: {} (epoch {}, step {}, trained on backbone: {})",
        args.checkpoint.display(),
        meta.epoch,
        meta.step,
        meta.backbone_weights
    );
    if meta.backbone_weights != extractor.describe() {
        tracing::warn!(
            "the detector was trained on other backbone weights ({})",
            meta.backbone_weights
        );
    }
    let progress = Bar(bar(0, "detect"));
    let total = write_maps(&model, extractor.as_ref(), &args.data, &args.out, &progress)?;
    let note = serde_json::json!({
        "checkpoint": args.checkpoint,
        "detector_epoch": meta.epoch,
        "backbone": extractor.describe(),
        "detector_trained_on_backbone": meta.backbone_weights,
        "random_backbone": random,
        "label": if random { Some(RANDOM_BACKBONE_LABEL) } else { None },
        "frames": total,
    });
    let note_path = args.out.join(DETECT_JSON);
    std::fs::write(&note_path, serde_json::to_string_pretty(&note)?)
        .with_context(|| format!("writing {}", note_path.display()))?;
    outln!("wrote {total} maps under {}", args.out.display())?;
    if random {
        outln!(
            "{RANDOM_BACKBONE_LABEL}: the backbone has random weights; these maps are placeholders"
        )?;
    }
    if args.gt {
        let metrics = evaluate_dirs(&args.out, &args.data, &EvalConfig::default())?;
        write_metrics_json(&args.out.join(METRICS_JSON), &metrics)?;
        let method = Method {
            name: "FlowCLAS".to_string(),
            metrics,
            placeholder: random.then(|| RANDOM_BACKBONE_LABEL.to_string()),
        };
        outln!("{}", markdown_table(&[method]))?;
    }
    Ok(ExitCode::SUCCESS)
}
