//! `stars run`: the four nodes over the in-process graph, fed by a replayed bag, every topic
//! recorded into an output bag.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::out::outln;
use crate::bag::{BagReader, BagWriter};
use crate::model::flowclas::backbone::RANDOM_BACKBONE_LABEL;
use crate::msg::{Encoding, Image, Message};
use crate::node::alert::AlertNode;
use crate::node::config::GraphConfig;
use crate::node::inproc::{Graph, StageReport};
use crate::node::recorder::{self, output_topics, BagRecorder};
use crate::node::stages::{ModelSources, Stages};
use crate::node::{stamp_ns, topics, Msg};

/// Input-clock tick period during replay (ros2 bag play --clock publishes at 40 Hz; 20 Hz
/// resolves `stale_after_s` to 50 ms).
const TICK_NS: u64 = 50_000_000;
/// Parameter file read when `--config` is not given and it exists.
const DEFAULT_CONFIG: &str = "config/stars.yaml";

/// Arguments of `stars run`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars run --bag runs/test_bag --out runs/test_out --detector ckpt --random-weights \\
      --threshold config/threshold.yaml --rate max
  stars run --bag recorded --out replayed --detector ckpt --refiner refiner_ckpt \\
      --backbone-weights models/dinov2-vitl14.safetensors --config config/stars.yaml
  stars bag info runs/test_out

The output bag holds every topic of the graph (/stars/features, /stars/detector/anomaly_map,
/stars/refined/anomaly_map, /stars/refined/overlay, /stars/alert/active, /stars/alert/status,
/diagnostics) and the input's /camera/image_raw and /tallo/gt_mask, so `stars bag to-tallo`
and `stars eval` can score it. --rate max feeds the next frame when the graph is idle (nothing
is dropped); --rate R replays at R times the recorded timing and a slow stage drops its oldest
frames (counted in the summary). The alert's STALE watchdog follows the recorded clock.")]
pub struct Args {
    /// Input rosbag2 directory with /camera/image_raw (rgb8, bgr8, rgba8, bgra8 or mono8).
    #[arg(long, value_name = "DIR")]
    bag: PathBuf,
    /// Output rosbag2 directory (must not exist or be empty; see --force).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replay speed: a factor of the recorded timing (1.0 = real time), or `max`.
    #[arg(long, default_value = "1.0", value_name = "RATE|max")]
    rate: String,
    #[command(flatten)]
    stages: StageArgs,
    /// Also write the published overlays as an animated GIF (10 frames/s).
    #[arg(long, value_name = "FILE")]
    gif: Option<PathBuf>,
    /// Replace an existing bag in --out.
    #[arg(long)]
    force: bool,
}

/// What the graph's stages load: parameters, weights, checkpoints, the temporal method and the
/// alert threshold (shared by `stars run` and `stars bench`).
#[derive(clap::Args, Debug)]
pub struct StageArgs {
    /// Node parameters (ros__parameters per node) [default: config/stars.yaml when it exists,
    /// else the built-in defaults, which that file mirrors].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// DINOv2 weights matching the detector's backbone (loaded once, shared by two stages).
    #[arg(long, value_name = "PATH", conflicts_with = "random_weights")]
    backbone_weights: Option<PathBuf>,
    /// Use a randomly initialised backbone (placeholder; outputs are labelled as such).
    #[arg(long)]
    random_weights: bool,
    /// Detector checkpoint directory (from `stars train detector`).
    #[arg(long, value_name = "DIR")]
    detector: PathBuf,
    /// Refiner checkpoint directory (from `stars train refiner`); selects `--method stars`.
    #[arg(long, value_name = "DIR")]
    refiner: Option<PathBuf>,
    /// Temporal method (default: stars with --refiner, else the detector maps passed through).
    #[arg(long, value_name = "NAME")]
    method: Option<String>,
    /// Alert threshold file (default: alert_node.threshold_file of --config).
    #[arg(long, value_name = "FILE")]
    threshold: Option<PathBuf>,
    /// Where inference runs: cpu, or cuda:N (a build with `--features cuda` and a GPU).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: String,
}

impl StageArgs {
    /// Loads everything; every mistake a user can make is an error here, before any frame.
    pub fn open(&self) -> Result<Stages> {
        let params = self.params()?;
        self.load(params)
    }

    /// The parameter and threshold files, read and checked (no model is loaded).
    pub fn params(&self) -> Result<(GraphConfig, AlertNode)> {
        let default_config = Path::new(DEFAULT_CONFIG);
        let cfg = match &self.config {
            Some(path) => GraphConfig::load(path).context("--config")?,
            None if default_config.is_file() => GraphConfig::load(default_config)?,
            None => {
                eprintln!("no --config and no {DEFAULT_CONFIG} here: built-in parameter defaults");
                GraphConfig::default()
            }
        };
        let mut alert_params = cfg.alert_node.params.clone();
        if let Some(t) = &self.threshold {
            alert_params.threshold_file = t.display().to_string();
        }
        let alert = AlertNode::new(alert_params).context("--threshold")?;
        Ok((cfg, alert))
    }

    /// The models and the temporal method, on top of checked [`StageArgs::params`].
    pub fn load(&self, (cfg, alert): (GraphConfig, AlertNode)) -> Result<Stages> {
        let sources = ModelSources {
            backbone_weights: self.backbone_weights.clone(),
            random_weights: self.random_weights,
            detector: self.detector.clone(),
            refiner: self.refiner.clone(),
            method: self.method.clone(),
            device: crate::model::device(&self.device).context("--device")?,
        };
        let stages = Stages::load(cfg, alert, &sources)?;
        eprintln!("backbone: {}", stages.extractor.describe());
        eprintln!("temporal method: {}", stages.method.label);
        Ok(stages)
    }
}

/// Replay pacing.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rate {
    /// Lossless: the next input when the graph is idle.
    Max,
    /// A factor of the recorded timing.
    Factor(f64),
}

fn parse_rate(s: &str) -> Result<Rate> {
    if s == "max" {
        return Ok(Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::Factor(r)),
        _ => bail!("--rate {s:?}: expected a positive number or `max`"),
    }
}

/// Checks the input bag at start-up: the camera topic exists, carries images, and its first
/// frame has an encoding the nodes read.
fn check_input(bag: &BagReader, path: &Path) -> Result<(u64, bool)> {
    let info = bag.info();
    let find = |name: &str| {
        info.topics_with_message_count
            .iter()
            .find(|t| t.topic_metadata.name == name)
    };
    let camera = find(topics::CAMERA).with_context(|| {
        format!(
            "{} has no {} topic (topics: {})",
            path.display(),
            topics::CAMERA,
            info.topics_with_message_count
                .iter()
                .map(|t| t.topic_metadata.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    ensure!(
        camera.topic_metadata.type_name == Image::TYPE.name,
        "{}: {} carries {}, not {}",
        path.display(),
        topics::CAMERA,
        camera.topic_metadata.type_name,
        Image::TYPE.name
    );
    let mut messages = bag.messages(&[topics::CAMERA])?;
    if let Some(first) = messages.next_message() {
        let image = first?.image()?;
        ensure!(
            matches!(
                image.encoding,
                Encoding::Rgb8
                    | Encoding::Bgr8
                    | Encoding::Rgba8
                    | Encoding::Bgra8
                    | Encoding::Mono8
            ),
            "{}: {} has encoding {}, unsupported (use rgb8, bgr8, rgba8, bgra8 or mono8)",
            path.display(),
            topics::CAMERA,
            image.encoding
        );
    }
    let gt = find(topics::GT_MASK).is_some_and(|t| t.topic_metadata.type_name == Image::TYPE.name);
    Ok((camera.message_count, gt))
}

/// What the replay did.
struct Replay {
    frames_in: u64,
    /// Why the input stopped early, if it did.
    stopped: Option<anyhow::Error>,
    reports: Vec<StageReport>,
    elapsed: Duration,
}

/// Feeds the bag's frames (and masks) into `graph` at `rate`, ticking the input clock, until
/// the input ends or `halt` says the output cannot take more.
async fn replay(
    bag: &BagReader,
    feed: &[&str],
    graph: Graph,
    rate: Rate,
    bar: &indicatif::ProgressBar,
    halt: &dyn Fn() -> bool,
) -> Replay {
    let start = Instant::now();
    let (mut frames_in, mut stopped) = (0u64, None);
    let mut first: Option<u64> = None;
    let mut clock: Option<u64> = None;
    let mut messages = match bag.messages(feed) {
        Ok(m) => m,
        Err(e) => {
            return Replay {
                frames_in,
                stopped: Some(e),
                reports: graph.stop().await,
                elapsed: start.elapsed(),
            }
        }
    };
    while !halt() {
        let (topic, log_time, image) = match messages.next_message() {
            None => break,
            Some(Err(e)) => {
                stopped = Some(e.context(format!(
                    "the input stopped after {frames_in} frames (last log time {} ns)",
                    clock.unwrap_or(0)
                )));
                break;
            }
            Some(Ok(m)) => {
                let topic = if m.topic == topics::CAMERA {
                    topics::CAMERA
                } else {
                    topics::GT_MASK
                };
                match m.image() {
                    Ok(image) => (topic, m.log_time, image.into_owned()),
                    Err(e) => {
                        tracing::warn!("skipping a message: {e:#}");
                        continue;
                    }
                }
            }
        };
        let t0 = *first.get_or_insert(log_time);
        // Clock ticks through silences, so the watchdog fires inside a long gap.
        let mut t = clock.map_or(log_time, |c| c + TICK_NS);
        while t < log_time {
            pace(rate, start, t0, t).await;
            graph.tick(t as i64);
            t += TICK_NS;
        }
        pace(rate, start, t0, log_time).await;
        graph.publish(topic, Msg::Image(image));
        graph.tick(log_time as i64);
        clock = Some(clock.map_or(log_time, |c| c.max(log_time)));
        if topic == topics::CAMERA {
            frames_in += 1;
            bar.inc(1);
        }
        if rate == Rate::Max {
            graph.settle().await;
        }
    }
    graph.settle().await;
    Replay {
        frames_in,
        stopped,
        reports: graph.stop().await,
        elapsed: start.elapsed(),
    }
}

/// Sleeps until input time `t` is due at `rate` (never for `max`).
async fn pace(rate: Rate, start: Instant, t0: u64, t: u64) {
    if let Rate::Factor(r) = rate {
        let due = start + Duration::from_secs_f64((t.saturating_sub(t0)) as f64 / 1e9 / r);
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Runs `stars run`.
pub fn run(args: Args) -> Result<ExitCode> {
    // Everything a user can get wrong is checked before any frame flows.
    let rate = parse_rate(&args.rate)?;
    let params = args.stages.params()?;
    let input =
        BagReader::open(&args.bag).with_context(|| format!("--bag {}", args.bag.display()))?;
    let (frames, gt) = check_input(&input, &args.bag).context("--bag")?;
    let stages = args.stages.load(params)?;
    let random = stages.random;
    let mut out = BagWriter::create_with(&args.out, args.force)
        .with_context(|| format!("--out {}", args.out.display()))?;
    for (name, ty, qos) in output_topics(gt) {
        out.add_topic(name, ty, qos)?;
    }
    for (key, value) in input.info().custom_data.iter().flatten() {
        out.set_custom_data(key, value.clone());
    }
    out.set_custom_data("stars/backbone", stages.extractor.describe());
    out.set_custom_data("stars/temporal_method", stages.method.label.clone());
    out.set_custom_data("stars/random_backbone", random.to_string());
    let out = Arc::new(Mutex::new(Some(out)));

    let mut nodes = stages.into_nodes()?;
    nodes.push((
        Box::new(BagRecorder::new(
            out.clone(),
            output_topics(gt).into_iter().map(|t| t.0).collect(),
        )),
        recorder::QUEUE_DEPTH,
    ));
    let feed: Vec<&str> = if gt {
        vec![topics::CAMERA, topics::GT_MASK]
    } else {
        vec![topics::CAMERA]
    };
    let bar = super::progress::bar(frames, "run");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
        .context("starting the async runtime")?;
    let write_failed = || {
        out.lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(BagWriter::failed)
    };
    let replay = runtime.block_on(async {
        let graph = Graph::start(nodes);
        replay(&input, &feed, graph, rate, &bar, &write_failed).await
    });
    bar.finish_and_clear();
    let writer = out.lock().unwrap_or_else(|e| e.into_inner()).take();
    let summary = match writer.context("the output bag writer is gone")?.finish() {
        Ok(summary) => summary,
        Err(e) => {
            let recorded = replay
                .reports
                .iter()
                .find(|r| r.name == recorder::NAME)
                .map_or(0, |r| counter(r, "written"));
            return Err(e.context(format!(
                "--out {}: the output failed after {recorded} messages (the replay stopped after {} of {frames} frames)",
                args.out.display(),
                replay.frames_in
            )));
        }
    };
    print_summary(&replay, summary.message_count, &args.out, random)?;
    if let Some(gif) = &args.gif {
        overlay_gif(&args.out, None, gif).context("--gif")?;
        outln!("overlays: {}", gif.display())?;
    }
    match replay.stopped {
        Some(e) => Err(e.context(format!(
            "--bag {}: the output bag {} holds what was processed",
            args.bag.display(),
            args.out.display()
        ))),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The `q` quantile (nearest rank) of nanosecond durations, in milliseconds; 0 when empty.
pub fn percentile_ms(ns: &[u64], q: f64) -> f64 {
    if ns.is_empty() {
        return 0.0;
    }
    let mut sorted = ns.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

fn counter(report: &StageReport, key: &str) -> u64 {
    report
        .counters
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(0, |(_, v)| *v)
}

fn print_summary(replay: &Replay, written: u64, out: &Path, random: bool) -> Result<()> {
    let secs = replay.elapsed.as_secs_f64();
    let by_name: BTreeMap<&str, &StageReport> =
        replay.reports.iter().map(|r| (r.name, r)).collect();
    let refined = by_name
        .get("temporal_node")
        .map_or(0, |r| counter(r, "refined"));
    outln!(
        "frames in {}, refined maps out {refined} in {secs:.1} s ({:.2} frames/s); {written} messages written to {}",
        replay.frames_in,
        replay.frames_in as f64 / secs.max(1e-9),
        out.display()
    )?;
    for r in &replay.reports {
        let counters: Vec<String> = r.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
        outln!(
            "  {:<14} handled {:>5}, dropped {:>4}, errors {}, queue high-water {}, handler p50 {:.1} ms p99 {:.1} ms; {}",
            r.name,
            r.handled,
            r.total_dropped(),
            r.errors,
            r.high_water,
            percentile_ms(&r.handle_ns, 0.5),
            percentile_ms(&r.handle_ns, 0.99),
            counters.join(", ")
        )?;
    }
    if let Some(alert) = by_name.get("alert_node") {
        outln!(
            "alert transitions {}, stale events {}",
            counter(alert, "transitions"),
            counter(alert, "stale_events")
        )?;
    }
    if random {
        outln!(
            "{RANDOM_BACKBONE_LABEL}: the backbone has random weights; these maps are placeholders"
        )?;
    }
    Ok(())
}

/// The `/stars/refined/overlay` messages of an output bag (of one sequence of its sequence
/// table when `sequence` is given) as a looping GIF at 10 frames/s.
pub fn overlay_gif(bag: &Path, sequence: Option<&str>, file: &Path) -> Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, DynamicImage, Frame};

    let reader = BagReader::open(bag)?;
    let span = match sequence {
        Some(name) => Some(
            reader
                .sequence_table()?
                .unwrap_or_default()
                .into_iter()
                .find(|s| s.id == name)
                .with_context(|| format!("{} has no sequence {name}", bag.display()))?,
        ),
        None => None,
    };
    let out = std::fs::File::create(file).with_context(|| format!("writing {}", file.display()))?;
    let mut gif = GifEncoder::new_with_speed(std::io::BufWriter::new(out), 10);
    gif.set_repeat(Repeat::Infinite)?;
    let mut messages = reader.messages(&[topics::REFINED_OVERLAY])?;
    while let Some(m) = messages.next_message() {
        let image = m?.image()?.into_owned();
        let stamp = stamp_ns(&image.header).max(0) as u64;
        if span.as_ref().is_some_and(|s| s.frame_at(stamp).is_none()) {
            continue;
        }
        let rgba = DynamicImage::ImageRgb8(image.to_rgb8()?).into_rgba8();
        gif.encode_frame(Frame::from_parts(
            rgba,
            0,
            0,
            Delay::from_numer_denom_ms(100, 1),
        ))
        .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}
