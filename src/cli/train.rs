//! `stars train`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::model::flowclas::backbone::{self, RANDOM_BACKBONE_LABEL};
use crate::train::cache::FeatureCache;
use crate::train::detector::{self, Settings};

use super::out::outln;
use super::progress::{bar, Bar};

/// Subcommands of `stars train`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Train the FlowCLAS detector (flow + projection head) on a TALLO-layout training split.
    Detector(DetectorArgs),
    /// Train the STARS temporal refiner on a frozen detector's maps and backbone features.
    Refiner(RefinerArgs),
}

/// Arguments of `stars train detector`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars synth --preset tiny --out synth --seed 1
  stars train detector --data synth/train --out ckpt --preset tiny --random-weights
  stars train detector --data tallo/train --out ckpt --preset paper \\
      --backbone-weights models/dinov2-vitl14.safetensors --cache /scratch/features
  stars train detector --data tallo/train --out ckpt --preset paper \\
      --backbone-weights models/dinov2-vitl14.safetensors --resume --epochs 60
  stars train detector --data synth/train --out untrained --preset tiny --random-weights --epochs 0

Pseudo-anomalies are hard-negative objects (mask id 10) cut from the training frames and pasted
into other frames. Backbone features of every augmented view are cached on disk (default
OUT/feature-cache), so later epochs only run the flow.")]
pub struct DetectorArgs {
    /// Training split: SPLIT/SEQ/{frames,masks}/NNN.png.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Checkpoint directory to write (detector.safetensors + detector.json).
    #[arg(long, value_name = "CKPT_DIR")]
    out: PathBuf,
    /// Detector and backbone size: tiny (tests), small (ViT-S, CPU), paper (ViT-L, 16 steps).
    #[arg(long, default_value = "small", value_parser = ["tiny", "small", "paper"])]
    preset: String,
    /// DINOv2 weights (safetensors, HF or torch-hub naming) matching the preset's width.
    #[arg(long, value_name = "PATH", conflicts_with = "random_weights")]
    backbone_weights: Option<PathBuf>,
    /// Use a randomly initialised backbone (placeholder; every output is labelled as such).
    #[arg(long)]
    random_weights: bool,
    /// Read the backbone's tokens after its first N blocks (0: the patch embedding alone).
    ///
    /// Default: every block (FlowCLAS) with --backbone-weights; with --random-weights the
    /// placeholder's depth (0: a random ViT's blocks wash out the local appearance, see
    /// docs/detector.md). Stored in the checkpoint; `stars detect` reads it from there.
    #[arg(long, value_name = "N")]
    backbone_blocks: Option<usize>,
    /// Epochs in total (default: the preset's; paper 50); 0 writes the untrained detector.
    #[arg(long)]
    epochs: Option<usize>,
    /// Frames per batch (each adds an outlier-source view; paper 64).
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate after the 30% warm-up (paper 1e-5).
    #[arg(long)]
    lr: Option<f64>,
    /// Fixed augmented views per frame, cycled over epochs.
    #[arg(long)]
    views: Option<usize>,
    /// Training crop HxW in pixels, e.g. 540x960 (default: the preset's; tiny uses whole frames).
    #[arg(long, value_name = "HxW", value_parser = parse_hw)]
    crop: Option<(u32, u32)>,
    /// Seed for permutations, views and pixel sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the checkpoint in --out (weights, step, ActNorm state; optimiser moments restart).
    #[arg(long)]
    resume: bool,
    /// Feature cache folder (default OUT/feature-cache).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
}

/// Parses `HxW`.
pub(crate) fn parse_hw(s: &str) -> Result<(u32, u32), String> {
    let (h, w) = s
        .split_once('x')
        .ok_or_else(|| format!("`{s}` is not HxW, e.g. 540x960"))?;
    let parse = |v: &str| v.parse::<u32>().ok().filter(|&v| v > 0);
    match (parse(h), parse(w)) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(format!(
            "`{s}` is not HxW with positive integers, e.g. 540x960"
        )),
    }
}

/// Runs `stars train`.
pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Detector(args) => detector_cmd(args),
        Command::Refiner(args) => refiner_cmd(args),
    }
}

fn detector_cmd(args: DetectorArgs) -> Result<ExitCode> {
    let mut settings = Settings::preset(&args.preset).context("unknown preset")?;
    let mut blocks = args.backbone_blocks;
    if args.resume {
        // the stored settings are the defaults when resuming; flags still override them
        let meta = crate::model::flowclas::load_meta(&args.out).context("--resume")?;
        if let Some(stored) = meta.training.get("settings") {
            settings =
                serde_json::from_value(stored.clone()).context("--resume: stored settings")?;
        }
        blocks = blocks.or(meta.backbone_blocks);
    }
    settings.epochs = args.epochs.unwrap_or(settings.epochs);
    settings.batch = args.batch.unwrap_or(settings.batch);
    settings.lr = args.lr.unwrap_or(settings.lr);
    settings.views = args.views.unwrap_or(settings.views);
    settings.crop = args.crop.or(settings.crop);
    if !args.resume {
        settings.seed = args.seed;
    }
    if settings.batch == 0 || settings.views == 0 {
        bail!("--batch and --views must be at least 1");
    }
    let arch = backbone::arch_of_preset(&settings.preset);
    let extractor = backbone::open(
        arch,
        args.backbone_weights.as_deref(),
        args.random_weights,
        blocks,
        &candle_core::Device::Cpu,
    )?;
    eprintln!("backbone: {}", extractor.describe());
    let cache_dir = args.cache.unwrap_or_else(|| args.out.join("feature-cache"));
    let cache = FeatureCache::new(Some(&cache_dir));
    let progress = Bar(bar(0, "train"));
    let losses = detector::train(
        &args.data,
        &args.out,
        extractor.as_ref(),
        arch,
        &settings,
        &cache,
        args.resume,
        &progress,
    )?;
    outln!("| epoch | loss | nll | contrastive |")?;
    outln!("|---|---|---|---|")?;
    let first = settings.epochs - losses.len();
    for (i, l) in losses.iter().enumerate() {
        outln!(
            "| {} | {:.4} | {:.1} | {:.4} |",
            first + i + 1,
            l.total,
            l.nll,
            l.contrastive
        )?;
    }
    outln!("checkpoint: {}", args.out.display())?;
    outln!("backbone: {}", extractor.describe())?;
    if extractor.is_random() {
        outln!(
            "{RANDOM_BACKBONE_LABEL}: trained on random backbone features; a placeholder detector"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `stars train refiner`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars synth --preset tiny --out synth --seed 1
  stars train detector --data synth/train --out det --preset tiny --random-weights
  stars train refiner --data synth/train --val synth/val --detector det --out refiner \\
      --preset tiny --random-weights
  stars train refiner --data tallo/train --val tallo/val --detector det --out refiner \\
      --preset paper --backbone-weights models/dinov2-vitl14.safetensors
  stars train refiner --data tallo/train --val tallo/val --detector det --out refiner \\
      --preset paper --backbone-weights models/dinov2-vitl14.safetensors --resume --epochs 60

The detector and the backbone stay frozen: each frame's detector map and backbone features are
computed once and cached (default OUT/frame-cache), so later epochs only run the adapter.
OUT holds the latest epoch (refiner.safetensors + refiner.json, for --resume) and OUT/best the
epoch with the best validation AP (exact pixel AP on the anomaly id).")]
pub struct RefinerArgs {
    /// Training split: SPLIT/SEQ/{frames,masks}/NNN.png.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Validation split for early stopping (omit to train all epochs without validation).
    #[arg(long, value_name = "DIR")]
    val: Option<PathBuf>,
    /// Frozen detector checkpoint (from `stars train detector`).
    #[arg(long, value_name = "CKPT_DIR")]
    detector: PathBuf,
    /// Checkpoint directory to write (refiner.safetensors + refiner.json, best/).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Refiner size: tiny (tests), small (ViT-S, CPU), paper (ViT-L, 256x256 fused, 8.5M params).
    #[arg(long, default_value = "small", value_parser = ["tiny", "small", "paper"])]
    preset: String,
    /// Table II ablation row: temporal-only, with-features, full.
    #[arg(long, default_value = "full", value_parser = ["temporal-only", "with-features", "full"])]
    variant: String,
    /// DINOv2 weights the detector was trained on (safetensors, HF or torch-hub naming).
    #[arg(long, value_name = "PATH", conflicts_with = "random_weights")]
    backbone_weights: Option<PathBuf>,
    /// Use the randomly initialised placeholder backbone (every output is labelled as such).
    #[arg(long)]
    random_weights: bool,
    /// Epochs at most (default: the preset's; paper 50).
    #[arg(long)]
    epochs: Option<usize>,
    /// AdamW learning rate (paper 5e-5).
    #[arg(long)]
    lr: Option<f64>,
    /// Epochs without a better validation AP before stopping (paper 10).
    #[arg(long)]
    patience: Option<usize>,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the checkpoint in --out (weights, step, history; optimiser moments restart).
    #[arg(long)]
    resume: bool,
    /// Cache folder of detector maps and backbone features (default OUT/frame-cache).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
}

fn refiner_cmd(args: RefinerArgs) -> Result<ExitCode> {
    use crate::model::stars::Variant;
    use crate::train::refiner::{self as refiner_train, Frozen};

    let mut settings = refiner_train::Settings::preset(&args.preset).context("unknown preset")?;
    settings.variant = Variant::from_name(&args.variant).context("--variant")?;
    if args.resume {
        // the stored settings are the defaults when resuming; flags still override them
        let meta = crate::model::stars::load_meta(&args.out).context("--resume")?;
        if let Some(stored) = meta.training.get("settings") {
            settings =
                serde_json::from_value(stored.clone()).context("--resume: stored settings")?;
        }
    } else {
        settings.seed = args.seed;
    }
    settings.epochs = args.epochs.unwrap_or(settings.epochs);
    settings.lr = args.lr.unwrap_or(settings.lr);
    settings.patience = args.patience.unwrap_or(settings.patience);
    if settings.patience == 0 {
        bail!("--patience must be at least 1");
    }
    let device = candle_core::Device::Cpu;
    let (detector, _, det_meta) =
        crate::model::flowclas::load(&args.detector, &device).context("--detector")?;
    let extractor = backbone::open(
        &det_meta.backbone_arch,
        args.backbone_weights.as_deref(),
        args.random_weights,
        det_meta.backbone_blocks,
        &device,
    )?;
    eprintln!("backbone: {}", extractor.describe());
    let cache_dir = args.cache.unwrap_or_else(|| args.out.join("frame-cache"));
    let cache = FeatureCache::new(Some(&cache_dir));
    let frozen = Frozen {
        detector: &detector,
        detector_dir: &args.detector,
        backbone: extractor.as_ref(),
        backbone_arch: &det_meta.backbone_arch,
    };
    let bar = crate::cli::progress::Bar(crate::cli::progress::bar(0, "train"));
    let report = refiner_train::train(
        &args.data,
        args.val.as_deref(),
        &args.out,
        &frozen,
        &settings,
        &cache,
        args.resume,
        &bar,
    )?;
    let ap = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!("| epoch | loss | contrast | temporal | correction | val AP |");
    println!("|---|---|---|---|---|---|");
    for e in &report.epochs {
        println!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {} |",
            e.epoch,
            e.total,
            e.contrast,
            e.temporal,
            e.correction,
            ap(e.val_ap)
        );
    }
    println!("detector val AP: {}", ap(report.detector_val_ap));
    if let Some((epoch, best)) = report.best {
        println!(
            "best: epoch {epoch}, val AP {best:.4} ({})",
            args.out.join(refiner_train::BEST_DIR).display()
        );
    }
    if report.stopped_early {
        println!(
            "stopped early: no better val AP for {} epochs",
            settings.patience
        );
    }
    println!("checkpoint: {}", args.out.display());
    println!("backbone: {}", extractor.describe());
    if extractor.is_random() {
        println!(
            "{RANDOM_BACKBONE_LABEL}: trained on random backbone features; a placeholder refiner"
        );
    }
    Ok(ExitCode::SUCCESS)
}
