//! `stars model`: what a model preset is made of (parameters per module, per-frame cost).
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use crate::cli::out::outln;
use crate::model::stars::{self, cost, Config, StarsRefiner, Variant};

/// Subcommands of `stars model`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print a model's trainable parameters per module and its per-frame cost.
    #[command(subcommand)]
    Summary(Summary),
}

/// Models `stars model summary` knows.
#[derive(clap::Subcommand, Debug)]
pub enum Summary {
    /// The STARS temporal refiner (adapter on the frozen detector and backbone).
    #[command(after_help = "\
Examples:
  stars model summary refiner --preset paper
  stars model summary refiner --preset small --frame 180x320
  stars model summary refiner --preset paper --variant temporal-only

Prints a table of trainable parameters per module, the line `trainable parameters: N`, and the
analytic per-frame cost (multiply-accumulates and f32 activations) of streaming one frame at
--frame: one frame encoding plus one pass of the temporal module.")]
    Refiner(RefinerArgs),
}

/// Arguments of `stars model summary refiner`.
#[derive(clap::Args, Debug)]
pub struct RefinerArgs {
    /// Refiner preset: tiny (tests), small (ViT-S, CPU), paper (ViT-L, 256x256 fused).
    #[arg(long, default_value = "paper", value_parser = ["tiny", "small", "paper"])]
    preset: String,
    /// Table II ablation row: temporal-only, with-features, full.
    #[arg(long, default_value = "full", value_parser = ["temporal-only", "with-features", "full"])]
    variant: String,
    /// Detector map size HxW for the cost table (TALLO: 1080x1920).
    #[arg(long, value_name = "HxW", default_value = "1080x1920", value_parser = crate::cli::train::parse_hw)]
    frame: (u32, u32),
}

/// Runs `stars model`.
pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Summary(Summary::Refiner(args)) => refiner(args),
    }
}

fn refiner(args: RefinerArgs) -> Result<ExitCode> {
    let cfg = Config {
        variant: Variant::from_name(&args.variant).context("--variant")?,
        ..Config::preset(&args.preset).context("--preset")?
    };
    let vars = VarMap::new();
    StarsRefiner::new(
        &cfg,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .context("building the refiner")?;
    let counts = stars::parameter_counts(&vars);
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    outln!(
        "STARS refiner, preset {} ({}), features {} ch, fused {} ch at {r}x{r}",
        args.preset,
        args.variant,
        cfg.feature_channels,
        cfg.fused_channels,
        r = cfg.resolution
    )?;
    outln!("| module | trainable parameters |")?;
    outln!("|---|---:|")?;
    for (module, n) in &counts {
        outln!("| {module} | {n} |")?;
    }
    outln!("trainable parameters: {total}")?;
    let (h, w) = (args.frame.0 as usize, args.frame.1 as usize);
    let rows = cost::per_frame(&cfg, h, w);
    outln!("")?;
    outln!("per-frame cost at {h}x{w} (streaming: one encoding + one window):")?;
    outln!("| stage | GFLOPs | activations (MiB, f32) |")?;
    outln!("|---|---:|---:|")?;
    let mib = |elems: u64| elems as f64 * 4.0 / (1024.0 * 1024.0);
    for r in &rows {
        outln!(
            "| {} | {:.3} | {:.1} |",
            r.stage,
            2.0 * r.macs as f64 / 1e9,
            mib(r.activations)
        )?;
    }
    let macs: u64 = rows.iter().map(|r| r.macs).sum();
    let acts: u64 = rows.iter().map(|r| r.activations).sum();
    outln!(
        "| total | {:.3} | {:.1} |",
        2.0 * macs as f64 / 1e9,
        mib(acts)
    )?;
    Ok(ExitCode::SUCCESS)
}
