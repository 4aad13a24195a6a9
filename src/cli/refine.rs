//! `stars refine`: run a temporal method over a split's detector maps and write refined maps.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};

use super::eval::placeholder_label;
use super::out::outln;
use crate::eval::{load_map, npy, numbered_files, sequence_dirs};
use crate::model::flowclas::backbone::RANDOM_BACKBONE_LABEL;
use crate::temporal::flicker::FRAME_PERIOD_NS;
use crate::temporal::open::open;
use crate::temporal::{run_sequence, AnomalyMap, Frame, PatchFeatures, Sequencer};

/// Name of the run description written beside the refined maps.
pub const REFINE_JSON: &str = "refine.json";

/// The temporal methods `stars refine` knows.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodName {
    /// Exponential moving average of maps.
    Ema,
    /// Centroid tracking: keep scores of blobs linked over frames.
    Centroid,
    /// Constant-velocity Kalman tracking of blobs.
    Kalman,
    /// The learned STARS refiner (needs --features and --refiner).
    Stars,
}

/// Arguments of `stars refine`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars refine --method kalman --maps runs/flowclas/test-maps --out runs/kalman/test-maps
  stars refine --method ema --maps pred --out refined/ema --config ema.yaml   # alpha: 0.3
  stars refine --method stars --maps pred --features feats --refiner runs/stars --out refined/stars
  stars eval --pred FlowCLAS=pred --pred +EMA=refined/ema --gt data/test --out table3

Reads MAPS/SEQ/masks/NNN.npy (what `stars detect` writes), runs the method over each
sequence in frame order (a fresh window per sequence; a missing frame number restarts the
window), and writes OUT/SEQ/masks/NNN.npy plus OUT/refine.json (method, parameters, source,
and the source's random_backbone label). Features, for STARS, are FEATURES/SEQ/features/NNN.npy
(f32 C x grid_h x grid_w). Method parameters and their defaults: docs/temporal.md.")]
pub struct Args {
    /// Temporal method to apply.
    ///
    /// ema, centroid and kalman are the baselines of the STARS paper's Table III (ema is ours);
    /// stars is the learned refiner.
    #[arg(long, value_enum)]
    method: MethodName,
    /// Detector maps: a split (SEQ/masks/NNN.npy) or one sequence, as `stars detect` wrote it.
    ///
    /// Maps are float .npy of shape HxW (leading unit axes allowed), values in [0, 1]. A map
    /// with NaN or infinite values is an error naming the file.
    #[arg(long, value_name = "PRED_DIR")]
    maps: PathBuf,
    /// Folder for the refined maps (mirrors --maps; created).
    #[arg(long, value_name = "OUT_DIR")]
    out: PathBuf,
    /// Backbone patch features: FEAT_DIR/SEQ/features/NNN.npy, for methods that use them.
    ///
    /// Each file holds f32 channels x grid_h x grid_w for the map of the same number. Only
    /// the STARS refiner reads them.
    #[arg(long, value_name = "FEAT_DIR")]
    features: Option<PathBuf>,
    /// STARS refiner checkpoint folder (from `stars train refiner`); only with --method stars.
    #[arg(long, value_name = "CKPT")]
    refiner: Option<PathBuf>,
    /// Where inference runs: cpu, or cuda:N (a build with `--features cuda` and a GPU).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: String,
    /// YAML mapping of the method's parameters, overriding its defaults.
    ///
    /// Keys are the method's config fields (docs/temporal.md), e.g. `alpha: 0.3` for ema or
    /// `max_distance: 12` and `gating: {outside_gain: 0.1}` for kalman. Unknown keys are
    /// errors.
    #[arg(long, value_name = "YAML")]
    config: Option<PathBuf>,
}

/// One sequence of maps to refine: where it is relative to --maps, and its numbered maps.
struct MapSequence {
    rel: PathBuf,
    maps: Vec<(u32, PathBuf)>,
}

fn map_sequences(maps: &Path) -> Result<Vec<MapSequence>> {
    let dirs = sequence_dirs(maps, "masks")?;
    ensure!(
        !dirs.is_empty(),
        "{} holds no maps (expected SEQ/masks/NNN.npy, as `stars detect` writes them)",
        maps.display()
    );
    dirs.into_iter()
        .map(|dir| {
            let files = numbered_files(&dir.join("masks"), "npy")?;
            ensure!(
                !files.is_empty(),
                "{} holds no NNN.npy maps",
                dir.join("masks").display()
            );
            let rel = dir
                .strip_prefix(maps)
                .unwrap_or(Path::new(""))
                .to_path_buf();
            Ok(MapSequence { rel, maps: files })
        })
        .collect()
}

/// Reads patch features `C x grid_h x grid_w` (leading unit axes allowed), checking the header
/// before any data is read.
fn load_features(path: &Path) -> Result<PatchFeatures> {
    let header = npy::read_header(path)?;
    let dims: Vec<usize> = match header.shape.as_slice() {
        [lead @ .., c, h, w] if lead.iter().all(|&d| d == 1) => vec![*c, *h, *w],
        other => bail!(
            "{} has shape {other:?}, expected channels x grid_h x grid_w",
            path.display()
        ),
    };
    ensure!(
        header
            .descr
            .trim_start_matches(['<', '>', '|', '='])
            .starts_with('f'),
        "{} holds {} values, expected float features",
        path.display(),
        header.descr
    );
    let data = Tensor::read_npy(path)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .with_context(|| format!("reading {}", path.display()))?;
    let features = PatchFeatures::new(dims[0], dims[1], dims[2], data)
        .with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        features.data.iter().all(|v| v.is_finite()),
        "{} has non-finite values",
        path.display()
    );
    Ok(features)
}

/// Loads the frames of one sequence: maps, and features when `features` is given.
fn load_frames(seq: &MapSequence, features: Option<&Path>) -> Result<Vec<Frame>> {
    seq.maps
        .iter()
        .map(|(index, path)| {
            let (data, width, height) = load_map(path, None)?;
            let map = AnomalyMap::new(width, height, data)
                .and_then(|m| m.check_finite().map(|()| m))
                .with_context(|| format!("{}", path.display()))?;
            let features = match features {
                Some(root) => {
                    let file = root
                        .join(&seq.rel)
                        .join("features")
                        .join(format!("{index:03}.npy"));
                    ensure!(
                        file.is_file(),
                        "--features: {} is missing (features are FEAT_DIR/SEQ/features/NNN.npy)",
                        file.display()
                    );
                    Some(load_features(&file)?)
                }
                None => None,
            };
            Ok(Frame {
                stamp_ns: i64::from(*index) * FRAME_PERIOD_NS,
                map,
                features,
            })
        })
        .collect()
}

/// Runs `stars refine`.
pub fn run(args: Args) -> Result<ExitCode> {
    let name = match args.method {
        MethodName::Ema => "ema",
        MethodName::Centroid => "centroid",
        MethodName::Kalman => "kalman",
        MethodName::Stars => "stars",
    };
    let opened = open(
        name,
        args.config.as_deref(),
        args.refiner.as_deref(),
        &crate::model::device(&args.device).context("--device")?,
    )
    .with_context(|| format!("--method {name}"))?;
    if opened.method.needs_features() && args.features.is_none() {
        bail!("--method {name} needs --features FEAT_DIR (backbone patch features per frame)");
    }
    let placeholder = placeholder_label(&args.maps)
        .context("--maps")?
        .or_else(|| {
            opened
                .random_backbone
                .then(|| RANDOM_BACKBONE_LABEL.to_string())
        });
    let sequences = map_sequences(&args.maps).context("--maps")?;
    if let Some(f) = &args.features {
        ensure!(f.is_dir(), "--features: {} is not a directory", f.display());
    }

    let total: usize = sequences.iter().map(|s| s.maps.len()).sum();
    let bar = super::progress::bar(total as u64, "refine");
    // Stamps are frame numbers at 10 Hz: a missing number is a gap that restarts the window.
    let mut sequencer = Sequencer::new(opened.method, FRAME_PERIOD_NS * 3 / 2);
    for seq in &sequences {
        let frames = load_frames(seq, args.features.as_deref())?;
        let refined = run_sequence(&mut sequencer, &frames)
            .with_context(|| format!("refining {}", args.maps.join(&seq.rel).display()))?;
        let dir = args.out.join(&seq.rel).join("masks");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for ((index, _), map) in seq.maps.iter().zip(&refined) {
            let path = dir.join(format!("{index:03}.npy"));
            Tensor::from_slice(
                &map.data,
                (map.height, map.width),
                &candle_core::Device::Cpu,
            )
            .and_then(|t| t.write_npy(&path))
            .with_context(|| format!("writing {}", path.display()))?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let note = serde_json::json!({
        "method": name,
        "params": opened.params,
        "maps": args.maps,
        "features": args.features,
        "sequences": sequences.len(),
        "frames": total,
        "window_restarts": sequencer.restarts(),
        "random_backbone": placeholder.is_some(),
        "label": placeholder,
    });
    let path = args.out.join(REFINE_JSON);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(&path, serde_json::to_string_pretty(&note)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    outln!(
        "{name}: refined {total} maps of {} sequences into {}",
        sequences.len(),
        args.out.display()
    )?;
    if let Some(label) = placeholder {
        outln!("{label}: the source maps are placeholders, and so are these")?;
    }
    Ok(ExitCode::SUCCESS)
}
