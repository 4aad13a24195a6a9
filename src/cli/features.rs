//! `stars features`: DINOv2 patch tokens of one frame or one input tensor, as `.npy`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};

use crate::model::dinov2::{preprocess, Config, PosInterp};
use crate::model::weights::{self, manifest, LoadOptions, LoadedBackbone, PLACEHOLDER_BLOCKS};

/// Arguments of `stars features`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars features --weights dinov2-large --image frame.png --out tokens.npy --no-final-norm
  stars features --weights ckpt/model.safetensors --input-npy x.npy --out tokens.npy --layer 11
  stars features --random-weights --arch small --image frame.png --out tokens.npy

--image pads the frame (centred, zeros after ALLO normalisation) to multiples of 14 and never
resizes it: 1920x1080 gives a 138x78 grid. --input-npy takes a (1, 3, H, W) f32 tensor that is
already normalised and padded. The output is (H/14, W/14, C) f32; a JSON file beside it
(OUT with extension .json) records which weights produced it.")]
pub struct Args {
    /// DINOv2 weights: a .safetensors file, a folder with model.safetensors (+ config.json for
    /// Hugging Face checkpoints), or a name from `stars models list` already in the cache.
    #[arg(long, value_name = "PATH|NAME")]
    weights: Option<String>,
    /// Hugging Face cache to look names up in (default: $HF_HOME/hub or ~/.cache/huggingface/hub).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Input frame: an 8-bit RGB PNG.
    #[arg(long, value_name = "PNG", conflicts_with = "input_npy")]
    image: Option<PathBuf>,
    /// Input tensor instead of a frame: (1, 3, H, W) f32, normalised, H and W multiples of 14.
    #[arg(long, value_name = "X.npy")]
    input_npy: Option<PathBuf>,
    /// Where to write the (H/14, W/14, C) f32 patch tokens.
    #[arg(long, value_name = "OUT.npy")]
    out: PathBuf,
    /// Leave out the final LayerNorm (FlowCLAS takes the tokens without it).
    #[arg(long)]
    no_final_norm: bool,
    /// Take the tokens after block K (0-based) instead of the last block.
    #[arg(long, value_name = "K")]
    layer: Option<usize>,
    /// Use deterministic random weights instead of a checkpoint: a labelled placeholder whose
    /// features mean nothing. Without --layer its output is the patch embedding alone (a random
    /// linear projection of each patch), as the detector's placeholder backbone.
    #[arg(long, conflicts_with = "weights")]
    random_weights: bool,
    /// Architecture for --random-weights.
    #[arg(long, value_enum, requires = "random_weights")]
    arch: Option<Arch>,
    /// Seed for --random-weights.
    #[arg(long, default_value_t = 0, requires = "random_weights")]
    seed: u64,
    /// Position-table interpolation (default: the checkpoint's reference; torch-hub naming ->
    /// original, HF naming -> transformers, models with registers -> antialias).
    #[arg(long, value_enum)]
    interp: Option<Interp>,
}

/// Architectures for random weights.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Arch {
    Small,
    Base,
    Large,
    Giant,
}

/// `PosInterp` on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Interp {
    /// DINOv2/FlowCLAS: scale_factor (grid + 0.1) / 37.
    Original,
    /// transformers Dinov2Model: size = grid.
    Transformers,
    /// torch-hub *_reg and transformers Dinov2WithRegistersModel: size = grid, antialias.
    Antialias,
}

impl From<Interp> for PosInterp {
    fn from(i: Interp) -> Self {
        match i {
            Interp::Original => Self::Original,
            Interp::Transformers => Self::Transformers,
            Interp::Antialias => Self::Antialias,
        }
    }
}

/// Runs `stars features`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let device = Device::Cpu;
    let interpolation = args.interp.map(PosInterp::from);
    let started = std::time::Instant::now();
    let backbone = load_backbone(&args, interpolation, &device)?;
    tracing::info!("backbone ready in {:.2} s", started.elapsed().as_secs_f64());
    if backbone.source.is_random() {
        eprintln!("WARNING: {}", backbone.describe());
    } else {
        eprintln!("weights: {}", backbone.describe());
    }
    let x = match (&args.image, &args.input_npy) {
        (Some(png), None) => {
            let img = image::open(png).with_context(|| format!("reading {}", png.display()))?;
            let rgb = match img {
                image::DynamicImage::ImageRgb8(rgb) => rgb,
                other => bail!(
                    "{} is {:?}, expected an 8-bit RGB image",
                    png.display(),
                    other.color()
                ),
            };
            preprocess(&rgb, backbone.model.config().patch_size, &device)
                .with_context(|| format!("preparing {}", png.display()))?
                .0
        }
        (None, Some(npy)) => read_input(npy, backbone.model.config(), &device)?,
        _ => bail!("give one input: --image PNG or --input-npy X.npy"),
    };
    let final_norm = !args.no_final_norm;
    let depth = backbone.model.config().num_layers;
    let blocks = match args.layer {
        Some(k) => k.saturating_add(1),
        None if backbone.source.is_random() => PLACEHOLDER_BLOCKS,
        None => depth,
    };
    if blocks == 0 {
        eprintln!("tokens: the patch embedding alone (pass --layer K for block K's)");
    }
    let started = std::time::Instant::now();
    let tokens = backbone
        .tokens_after(&x, blocks, final_norm)?
        .squeeze(0)?
        .to_dtype(DType::F32)?;
    tracing::info!(
        "forward {:?} in {:.2} s",
        x.dims(),
        started.elapsed().as_secs_f64()
    );
    tokens
        .write_npy(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let label = serde_json::json!({
        "weights": backbone.describe(),
        "random_weights": backbone.source.is_random(),
        "shape": tokens.dims(),
        "final_norm": final_norm,
        // null: the patch embedding alone, before any block
        "layer": blocks.checked_sub(1),
    });
    let label_path = args.out.with_extension("json");
    std::fs::write(&label_path, serde_json::to_string_pretty(&label)?)
        .with_context(|| format!("writing {}", label_path.display()))?;
    let (hp, wp, c) = tokens.dims3()?;
    eprintln!("wrote {} ({hp}x{wp}x{c})", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn load_backbone(
    args: &Args,
    interpolation: Option<PosInterp>,
    device: &Device,
) -> anyhow::Result<LoadedBackbone> {
    if args.random_weights {
        let cfg = match args.arch.unwrap_or(Arch::Large) {
            Arch::Small => Config::vit_small(),
            Arch::Base => Config::vit_base(),
            Arch::Large => Config::vit_large(),
            Arch::Giant => Config::vit_giant(),
        };
        let cfg = Config {
            interpolation: interpolation.unwrap_or(cfg.interpolation),
            ..cfg
        };
        return weights::random_dinov2(&cfg, args.seed, device);
    }
    let Some(name) = &args.weights else {
        bail!(
            "no weights: pass --weights PATH|NAME (see `stars models list` and \
             `stars models fetch`), or --random-weights for a labelled placeholder run"
        );
    };
    let path = manifest::resolve(name, args.cache.as_deref())?;
    let opts = LoadOptions {
        interpolation,
        ..LoadOptions::default()
    };
    weights::load_dinov2(&path, device, &opts)
}

/// Reads a (1, 3, H, W) f32 input tensor and checks it fits the model.
fn read_input(path: &Path, cfg: &Config, device: &Device) -> anyhow::Result<Tensor> {
    let x = Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))?;
    let p = cfg.patch_size;
    match (x.dtype(), x.dims()) {
        (DType::F32, &[1, 3, h, w]) if h > 0 && w > 0 && h % p == 0 && w % p == 0 => {
            Ok(x.to_device(device)?)
        }
        (DType::F32, &[1, 3, h, w]) => bail!(
            "{} is 1x3x{h}x{w}: H and W must be positive multiples of {p} (pad the input)",
            path.display()
        ),
        (dtype, dims) => bail!(
            "{} is {dtype:?} {dims:?}, expected f32 (1, 3, H, W)",
            path.display()
        ),
    }
}
