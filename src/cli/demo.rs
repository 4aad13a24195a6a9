//! `stars demo`: the whole pipeline on generated data, as the verbs a user would type, run in
//! this process: synth -> train detector -> train refiner -> detect -> calibrate -> bag ->
//! `stars run` -> refine (baselines) -> eval -> `results.json` and `index.md`.
//!
//! Each step prints the command line it runs, so any step can be rerun or varied by hand.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;

use super::out::outln;
use crate::model::flowclas::backbone::RANDOM_BACKBONE_LABEL;

/// The baselines the demo scores beside FlowCLAS and STARS (the paper's Table III rows).
const BASELINES: [&str; 3] = ["kalman", "centroid", "ema"];
/// Name of the Fig. 4-style figure.
const FIGURE: &str = "temporal_figure.png";
/// Name of the animation of the graph's overlays.
const OVERLAY_GIF: &str = "overlay.gif";
/// Name of the machine-readable summary.
pub const RESULTS_JSON: &str = "results.json";

/// Arguments of `stars demo`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars demo                                  # placeholder backbone, about 10 minutes on 2 cores
  stars demo --preset tiny --out /tmp/demo    # the CI check, about a minute
  stars demo --backbone-weights models/dinov2-vits14.safetensors --out reports/demo-real

Writes OUT/results.json ({\"weights\": .., \"methods\": {\"flowclas\": {\"auroc\", \"ap\", \"fpr95\",
\"aupro\"}, \"stars\": .., \"kalman\": .., \"centroid\": .., \"ema\": ..}}), OUT/index.md linking the
table and the ROC/PR/PRO plots in OUT/eval/, a Fig. 4-style figure (temporal_figure.png), the
graph's overlays of one sequence (overlay.gif), the trained checkpoints in OUT/checkpoints/detector
and OUT/checkpoints/refiner (ready for `stars run --detector/--refiner`), the threshold in
OUT/threshold.yaml, and the graph's output bag in OUT/run/test. Without --backbone-weights the
backbone is the labelled random placeholder and every number says so.")]
pub struct Args {
    /// Report folder (replaced if it holds an earlier demo).
    #[arg(long, default_value = "reports/demo", value_name = "DIR")]
    out: PathBuf,
    /// Size: `tiny` (CI, ~1 min) or `small` (320x180 frames, ViT-S/14, ~10 min on 2 cores).
    #[arg(long, default_value = "small", value_parser = ["tiny", "small"])]
    preset: String,
    /// Real DINOv2 weights for the preset's backbone (ViT-S/14 for small; see `stars models`).
    #[arg(long, value_name = "PATH")]
    backbone_weights: Option<PathBuf>,
    /// Seed of the generated data and of training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// What each preset runs: data caps and training lengths chosen so the demo fits its time.
struct Plan {
    /// `stars synth --preset` and `--max-sequences`.
    data: (&'static str, usize),
    /// `stars train detector --preset` and `--epochs`.
    detector: (&'static str, usize),
    /// `stars train refiner --preset`, `--epochs` and `--patience`.
    refiner: (&'static str, usize, usize),
}

impl Plan {
    fn of(preset: &str) -> Result<Self> {
        Ok(match preset {
            "tiny" => Self {
                data: ("tiny", 4),
                detector: ("tiny", 2),
                refiner: ("tiny", 2, 2),
            },
            "small" => Self {
                data: ("small", 6),
                detector: ("small", 4),
                refiner: ("small", 4, 2),
            },
            other => bail!("unknown demo preset {other:?} (tiny, small)"),
        })
    }
}

/// Runs one `stars` verb in this process, echoing its command line.
fn step(args: &[String]) -> Result<()> {
    let line = args.join(" ");
    eprintln!("\n$ stars {line}");
    let argv = std::iter::once("stars".to_string()).chain(args.iter().cloned());
    let cli = super::Cli::try_parse_from(argv).with_context(|| format!("`stars {line}`"))?;
    match super::execute(cli.command).with_context(|| format!("`stars {line}`"))? {
        code if code == ExitCode::SUCCESS => Ok(()),
        _ => bail!("`stars {line}` did not succeed"),
    }
}

/// `--flag value` pairs and switches as owned strings.
fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `stars demo`.
pub fn run(args: Args) -> Result<ExitCode> {
    let started = Instant::now();
    let plan = Plan::of(&args.preset)?;
    let out = &args.out;
    prepare_out(out)?;
    let weights: Vec<String> = match &args.backbone_weights {
        Some(w) => argv(&["--backbone-weights", &path(w)]),
        None => argv(&["--random-weights"]),
    };
    let weights_label = match &args.backbone_weights {
        Some(w) => format!("DINOv2 weights {}", w.display()),
        None => format!("{RANDOM_BACKBONE_LABEL}: random backbone weights (placeholder)"),
    };
    eprintln!("stars demo: preset {}, {weights_label}", args.preset);
    if args.backbone_weights.is_none() {
        eprintln!(
            "  every map, table and plot below comes from a placeholder backbone and is labelled so;\n  \
             for real results pass --backbone-weights (see `stars models list` for the files)"
        );
    }
    let seed = args.seed.to_string();
    let data = out.join("data");
    let (det, refiner) = (
        out.join("checkpoints/detector"),
        out.join("checkpoints/refiner"),
    );
    let maps = out.join("maps");
    let threshold = out.join("threshold.yaml");
    let split = |s: &str| path(&data.join(s));

    step(&argv(&[
        "synth",
        "--preset",
        plan.data.0,
        "--out",
        &path(&data),
        "--seed",
        &seed,
        "--max-sequences",
        &plan.data.1.to_string(),
    ]))?;
    let mut train_det = argv(&[
        "train",
        "detector",
        "--data",
        &split("train"),
        "--out",
        &path(&det),
        "--preset",
        plan.detector.0,
        "--epochs",
        &plan.detector.1.to_string(),
        "--seed",
        &seed,
    ]);
    train_det.extend(weights.iter().cloned());
    step(&train_det)?;
    let mut train_ref = argv(&[
        "train",
        "refiner",
        "--data",
        &split("train"),
        "--val",
        &split("val"),
        "--detector",
        &path(&det),
        "--out",
        &path(&refiner),
        "--preset",
        plan.refiner.0,
        "--epochs",
        &plan.refiner.1.to_string(),
        "--patience",
        &plan.refiner.2.to_string(),
        "--seed",
        &seed,
    ]);
    train_ref.extend(weights.iter().cloned());
    step(&train_ref)?;
    // The best validation epoch is what the graph runs.
    let best = refiner.join(crate::train::refiner::BEST_DIR);
    let refiner_ckpt = if best.is_dir() { best } else { refiner.clone() };

    for s in ["val", "test"] {
        let mut detect = argv(&[
            "detect",
            "--checkpoint",
            &path(&det),
            "--data",
            &split(s),
            "--out",
            &path(&maps.join(format!("{s}-flowclas"))),
        ]);
        detect.extend(weights.iter().cloned());
        step(&detect)?;
    }
    // The alert node thresholds the graph's output; FlowCLAS's validation maps calibrate it (the
    // refiner keeps the detector's scale: its correction is a bounded residual).
    step(&argv(&[
        "calibrate",
        "--pred",
        &path(&maps.join("val-flowclas")),
        "--gt",
        &split("val"),
        "--out",
        &path(&threshold),
    ]))?;

    let (bag_in, bag_out) = (out.join("bags/test"), out.join("run/test"));
    step(&argv(&[
        "bag",
        "from-tallo",
        &split("test"),
        "--out",
        &path(&bag_in),
    ]))?;
    let mut run = argv(&[
        "run",
        "--bag",
        &path(&bag_in),
        "--out",
        &path(&bag_out),
        "--detector",
        &path(&det),
        "--refiner",
        &path(&refiner_ckpt),
        "--threshold",
        &path(&threshold),
        "--rate",
        "max",
    ]);
    run.extend(weights.iter().cloned());
    step(&run)?;
    step(&argv(&[
        "bag",
        "to-tallo",
        &path(&bag_out),
        "--out",
        &path(&out.join("run/test-frames")),
        "--maps-topic",
        "/stars/refined/anomaly_map",
        "--maps-out",
        &path(&maps.join("test-stars")),
    ]))?;
    for method in BASELINES {
        step(&argv(&[
            "refine",
            "--method",
            method,
            "--maps",
            &path(&maps.join("test-flowclas")),
            "--out",
            &path(&maps.join(format!("test-{method}"))),
        ]))?;
    }
    let mut eval = argv(&[
        "eval",
        "--gt",
        &split("test"),
        "--out",
        &path(&out.join("eval")),
    ]);
    for method in ["flowclas", "stars"].into_iter().chain(BASELINES) {
        eval.push("--pred".into());
        eval.push(format!(
            "{method}={}",
            path(&maps.join(format!("test-{method}")))
        ));
    }
    step(&eval)?;

    let figure = out.join(FIGURE);
    let shown = temporal_figure(&data.join("test"), &maps, &figure)?;
    eprintln!("figure: {}", figure.display());
    let gif = out.join(OVERLAY_GIF);
    super::run::overlay_gif(&bag_out, Some(&shown), &gif)?;
    eprintln!("overlays of {shown}: {}", gif.display());
    let results = write_results(out, &weights_label, args.backbone_weights.is_none())?;
    write_index(out, &args, &weights_label, &results)?;
    outln!("\n{results}")?;
    outln!(
        "stars demo: done in {:.0} s; report in {} (index.md, results.json)",
        started.elapsed().as_secs_f64(),
        out.display()
    )?;
    if args.backbone_weights.is_none() {
        outln!("{RANDOM_BACKBONE_LABEL}: these numbers come from a random placeholder backbone")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Clears an earlier demo from `out`; refuses a non-empty folder that is not one.
fn prepare_out(out: &Path) -> Result<()> {
    if out.is_dir() && std::fs::read_dir(out)?.next().is_some() {
        if !out.join(RESULTS_JSON).is_file() && !out.join("data").is_dir() {
            bail!(
                "{} is not empty and holds no earlier demo; pick another --out",
                out.display()
            );
        }
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

/// Gathers each method's four metrics from `OUT/eval/NAME/metrics.json` into
/// `OUT/results.json`; returns the table `stars eval` wrote.
fn write_results(out: &Path, weights: &str, placeholder: bool) -> Result<String> {
    let mut methods = serde_json::Map::new();
    for method in ["flowclas", "stars"].into_iter().chain(BASELINES) {
        let file = out.join("eval").join(method).join("metrics.json");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let m: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        let pick = |k: &str| m.get(k).cloned().unwrap_or(serde_json::Value::Null);
        methods.insert(
            method.to_string(),
            serde_json::json!({
                "auroc": pick("auroc"),
                "ap": pick("ap"),
                "fpr95": pick("fpr95"),
                "aupro": pick("aupro"),
                "label": pick("label"),
            }),
        );
    }
    let results = serde_json::json!({
        "weights": weights,
        "random_backbone": placeholder,
        "methods": methods,
    });
    let path = out.join(RESULTS_JSON);
    std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    let table = out.join("eval/table.md");
    std::fs::read_to_string(&table).with_context(|| format!("reading {}", table.display()))
}

/// `OUT/index.md`: what ran, on which weights, and links to everything written.
fn write_index(out: &Path, args: &Args, weights: &str, table: &str) -> Result<()> {
    let text = format!(
        "# stars demo ({preset} preset)\n\n\
         Weights: **{weights}**\n\n\
         Test split of generated TALLO-style data (seed {seed}); FlowCLAS maps from `stars detect`, \
         STARS maps from the node graph (`stars run`, exported with `stars bag to-tallo \
         --maps-topic /stars/refined/anomaly_map`), baselines from `stars refine` on the \
         FlowCLAS maps. Metrics: 5000-bin streaming pixel metrics (docs/eval.md).\n\n\
         {table}\n\
         - [results.json](results.json)\n\
         - plots: [ROC](eval/roc.png), [PR](eval/pr.png), [PRO](eval/pro.png)\n\
         - three consecutive test frames (rows: frame, FlowCLAS, STARS, ground truth): \
         [{FIGURE}]({FIGURE})\n\
         - the graph's `/stars/refined/overlay` on that sequence, as published: \
         [{OVERLAY_GIF}]({OVERLAY_GIF})\n\
         - checkpoints: `checkpoints/detector`, `checkpoints/refiner`\n\
         - alert threshold: [threshold.yaml](threshold.yaml)\n\
         - the graph's output bag: `run/test` (`stars bag info {run}`)\n",
        preset = args.preset,
        seed = args.seed,
        run = out.join("run/test").display(),
    );
    let path = out.join("index.md");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// The paper's Fig. 4 layout on the test split: three consecutive frames of the anomalous
/// sequence with the most anomaly pixels, centred on its largest anomaly; rows: the frame, the
/// FlowCLAS map, the STARS map (turbo colormap, 0..1 fixed), the ground truth. Returns the
/// sequence's name.
fn temporal_figure(test: &Path, maps: &Path, file: &Path) -> Result<String> {
    use crate::data::tallo::list_sequences;
    use crate::viz::colormap::colourise_mask;
    use crate::viz::contact_sheet::grid;
    use crate::viz::overlay::turbo;

    let anomaly = crate::data::MaskIds::default().anomaly;
    let mut best: Option<(usize, crate::data::Sequence, usize)> = None;
    for seq in list_sequences(test)? {
        for i in 0..seq.frames.len() {
            let area = seq
                .load_mask(i)?
                .pixels()
                .filter(|p| p.0[0] == anomaly)
                .count();
            if best.as_ref().is_none_or(|(a, _, _)| area > *a) {
                best = Some((area, seq.clone(), i));
            }
        }
    }
    let Some((_, seq, centre)) = best else {
        bail!("{} has no sequences to draw", test.display());
    };
    let last = seq.frames.len() - 1;
    let first = centre.saturating_sub(1).min(last.saturating_sub(2));
    let name = seq
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let heat = |method: &str, i: usize| -> Result<image::RgbImage> {
        let path = maps
            .join(format!("test-{method}"))
            .join(&name)
            .join(format!("masks/{i:03}.npy"));
        let (data, w, h) = crate::eval::load_map(&path, None)?;
        Ok(image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            turbo(data[y as usize * w + x as usize])
        }))
    };
    let (mut frames, mut flowclas, mut stars, mut truth) = (vec![], vec![], vec![], vec![]);
    for i in first..=(first + 2).min(last) {
        frames.push(seq.load_image(i)?);
        flowclas.push(heat("flowclas", i)?);
        stars.push(heat("stars", i)?);
        truth.push(colourise_mask(&seq.load_mask(i)?));
    }
    grid(&[frames, flowclas, stars, truth], 4)?
        .save(file)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(name)
}
