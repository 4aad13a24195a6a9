//! `stars train`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::model::flowclas::backbone::{self, RANDOM_BACKBONE_LABEL};
use crate::train::cache::FeatureCache;
use crate::train::detector::{self, Settings};

/// Subcommands of `stars train`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Train the FlowCLAS detector (flow + projection head) on a TALLO-layout training split.
    Detector(DetectorArgs),
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
fn parse_hw(s: &str) -> Result<(u32, u32), String> {
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
    }
}

fn detector_cmd(args: DetectorArgs) -> Result<ExitCode> {
    let mut settings = Settings::preset(&args.preset).context("unknown preset")?;
    if args.resume {
        // the stored settings are the defaults when resuming; flags still override them
        let meta = crate::model::flowclas::load_meta(&args.out).context("--resume")?;
        if let Some(stored) = meta.training.get("settings") {
            settings =
                serde_json::from_value(stored.clone()).context("--resume: stored settings")?;
        }
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
    let extractor = backbone::open(arch, args.backbone_weights.as_deref(), args.random_weights)?;
    eprintln!("backbone: {}", extractor.describe());
    let cache_dir = args.cache.unwrap_or_else(|| args.out.join("feature-cache"));
    let cache = FeatureCache::new(Some(&cache_dir));
    let bar = crate::cli::progress::Bar(crate::cli::progress::bar(0, "train"));
    let losses = detector::train_with_progress(
        &args.data,
        &args.out,
        extractor.as_ref(),
        arch,
        &settings,
        &cache,
        args.resume,
        &bar,
    )?;
    println!("| epoch | loss | nll | contrastive |");
    println!("|---|---|---|---|");
    let first = settings.epochs - losses.len();
    for (i, l) in losses.iter().enumerate() {
        println!(
            "| {} | {:.4} | {:.1} | {:.4} |",
            first + i + 1,
            l.total,
            l.nll,
            l.contrastive
        );
    }
    println!("checkpoint: {}", args.out.display());
    println!("backbone: {}", extractor.describe());
    if extractor.is_random() {
        println!(
            "{RANDOM_BACKBONE_LABEL}: trained on random backbone features; a placeholder detector"
        );
    }
    Ok(ExitCode::SUCCESS)
}
