//! `stars synth`: generate synthetic TALLO-layout data.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::out::outln;
use anyhow::{Context, Result};
use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::data::synth::{self, Preset, SynthConfig};
use crate::data::tallo::{self, Sequence};
use crate::viz::{colormap, contact_sheet};

/// Arguments of `stars synth`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  stars synth                                  # small preset (320x180) into data/synth
  stars synth --preset tiny --out /tmp/t --preview /tmp/t.png
  stars synth --preset paper --out /data/tallo-synth --seed 1
  stars synth --preset paper --splits test --max-sequences 2 --out /tmp/p   # a quick look

Layout: OUT/<split>/<sequence_id>/{frames,masks}/NNN.png and meta.json. Mask ids: 0 space,
1 Earth, 2 module, 3 truss, 4 radiator, 5 solar array, 6 grapple fixture, 7 node,
8 equipment, 9 anomaly, 10 hard negative (train/val only).
Threads: rayon's default (all cores); set RAYON_NUM_THREADS to limit.")]
pub struct Args {
    /// Size of the dataset: tiny (tests), small (320x180) or paper (1920x1080, TALLO's splits).
    #[arg(long, default_value = "small")]
    preset: String,
    /// Output folder; must be empty or new unless --force.
    #[arg(long, default_value = "data/synth")]
    out: PathBuf,
    /// Dataset seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Splits to generate, comma-separated (camera sets stay those of the full preset).
    #[arg(long, value_delimiter = ',', default_value = "train,val,test")]
    splits: Vec<String>,
    /// Generate at most N sequences per split (for a quick look at a big preset).
    #[arg(long, value_name = "N")]
    max_sequences: Option<usize>,
    /// Also write a contact sheet (frames beside their colour-coded masks) to this PNG.
    #[arg(long, value_name = "PNG")]
    preview: Option<PathBuf>,
    /// Write into a non-empty --out, replacing the split folders being generated.
    #[arg(long)]
    force: bool,
}

/// Runs `stars synth`.
pub fn run(args: Args) -> Result<ExitCode> {
    let preset: Preset = args.preset.parse().context("--preset")?;
    let mut cfg = SynthConfig::preset(preset, args.seed);
    cfg.select_splits(&args.splits).context("--splits")?;
    if let Some(n) = args.max_sequences {
        cfg.cap_sequences(n);
    }
    let bar = super::progress::bar(0, "synth");
    let summary = synth::generate(&cfg, &args.out, args.force, &bar)?;
    bar.finish_and_clear();
    outln!(
        "wrote {} sequences ({} anomalous), {} frames of {}x{} to {} in {:.1} s ({:.1} frames/s)",
        summary.sequences,
        summary.anomalous,
        summary.frames,
        cfg.width,
        cfg.height,
        args.out.display(),
        summary.seconds,
        summary.frames_per_second()
    )?;
    if let Some(path) = &args.preview {
        let splits: Vec<&str> = cfg.splits.iter().map(|s| s.name.as_str()).collect();
        write_preview(&args.out, &splits, path)?;
        outln!("wrote preview {}", path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Tile width of the preview, in pixels.
const TILE_WIDTH: u32 = 160;

/// A contact sheet: two sequences per split (anomalous first, then one with hard negatives,
/// else clean), one row each, three frames per row, each frame beside its colour-coded mask.
fn write_preview(out: &Path, splits: &[&str], path: &Path) -> Result<()> {
    let mut rows = Vec::new();
    for split in splits {
        let mut seqs: Vec<(u8, Sequence)> = Vec::new();
        for seq in tallo::list_sequences(&out.join(split))? {
            let meta = seq
                .meta()?
                .with_context(|| format!("{} has no meta.json", seq.dir.display()))?;
            let rank = if meta.anomaly.is_some() {
                0
            } else if !meta.hard_negatives.is_empty() {
                1
            } else {
                2
            };
            seqs.push((rank, seq));
        }
        // Stable sort: within a rank, sequences stay in name order.
        seqs.sort_by_key(|(rank, _)| *rank);
        let mut picked: Vec<&Sequence> = seqs
            .iter()
            .filter(|s| s.0 == 0)
            .map(|s| &s.1)
            .take(1)
            .collect();
        picked.extend(seqs.iter().filter(|s| s.0 != 0).map(|s| &s.1).take(1));
        for seq in picked {
            rows.push(preview_row(seq)?);
        }
    }
    let sheet = contact_sheet::grid(&rows, 4)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the folder of --preview {}", path.display()))?;
    }
    sheet
        .save(path)
        .with_context(|| format!("writing --preview {}", path.display()))
}

fn preview_row(seq: &Sequence) -> Result<Vec<RgbImage>> {
    let n = seq.frames.len();
    let mut row = Vec::new();
    for i in [0, n / 2, n - 1] {
        let frame = seq.load_image(i)?;
        let mask = colormap::colourise_mask(&seq.load_mask(i)?);
        let h = (TILE_WIDTH * frame.height()).div_ceil(frame.width()).max(1);
        row.push(imageops::resize(
            &frame,
            TILE_WIDTH,
            h,
            FilterType::Triangle,
        ));
        row.push(imageops::resize(&mask, TILE_WIDTH, h, FilterType::Nearest));
    }
    Ok(row)
}
