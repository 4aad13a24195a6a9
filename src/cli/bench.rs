//! `stars bench`: per-stage latency and throughput of the in-process node graph on a bag's
//! frames, and what the graph's plumbing costs beyond the nodes' own work.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::out::outln;
use super::run::{percentile_ms, StageArgs};
use crate::bag::BagReader;
use crate::msg::Image;
use crate::node::inproc::Graph;
use crate::node::{stamp_ns, topics, Msg, Node, Publication};

/// Arguments of `stars bench`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  stars bench --bag reports/demo/bags/test --detector reports/demo/checkpoints/detector \\
      --refiner reports/demo/checkpoints/refiner/best --random-weights \\
      --threshold reports/demo/threshold.yaml
  stars bench --bag runs/test_bag --detector ckpt --random-weights --threshold t.yaml --frames 20

Feeds the first FRAMES camera frames of the bag through the four nodes twice: once calling the
nodes' handlers one after another in this thread (direct), once through the in-process graph
(tokio tasks, queues, the blocking pool), waiting for each frame to be fully handled before the
next. Prints each stage's handler latency (p50, p99), frames/s of both, and the plumbing cost:
the graph's wall time per frame minus its critical path (the slower of the feature and detector
handlers, then temporal, then alert). Latency depends on the weights' size, not their values,
so the placeholder backbone measures the real cost of its architecture.")]
pub struct Args {
    /// Input rosbag2 directory with /camera/image_raw.
    #[arg(long, value_name = "DIR")]
    bag: PathBuf,
    /// Frames to time (from the start of the bag); the first one warms up and is not counted.
    #[arg(long, default_value_t = 30, value_name = "N")]
    frames: usize,
    /// Write the figures as JSON too.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    #[command(flatten)]
    stages: StageArgs,
}

/// The camera frames to time.
fn read_frames(bag: &BagReader, n: usize) -> Result<Vec<Image>> {
    let mut frames = Vec::new();
    let mut messages = bag.messages(&[topics::CAMERA])?;
    while let Some(m) = messages.next_message() {
        frames.push(m?.image()?.into_owned());
        if frames.len() == n {
            break;
        }
    }
    ensure!(
        frames.len() >= 2,
        "the bag has {} frames on {}; bench needs at least 2",
        frames.len(),
        topics::CAMERA
    );
    Ok(frames)
}

/// Direct: the four handlers called in this thread, outputs handed on by hand. Returns each
/// frame's total time, ns.
fn direct(
    mut nodes: Vec<(Box<dyn Node>, usize)>,
    frames: &[Image],
    bar: &indicatif::ProgressBar,
) -> Result<Vec<u64>> {
    let subscriptions: Vec<Vec<&str>> = nodes.iter().map(|(n, _)| n.subscriptions()).collect();
    let mut totals = Vec::new();
    for image in frames {
        let started = Instant::now();
        let mut pending: Vec<Publication> =
            vec![Publication::new(topics::CAMERA, Msg::Image(image.clone()))];
        while !pending.is_empty() {
            let mut next = Vec::new();
            for publication in pending {
                let msg = Arc::new(publication.msg);
                for ((node, _), topics) in nodes.iter_mut().zip(&subscriptions) {
                    if topics.contains(&publication.topic) {
                        next.extend(node.handle(publication.topic, msg.clone())?);
                    }
                }
            }
            pending = next;
        }
        totals.push(started.elapsed().as_nanos() as u64);
        bar.inc(1);
    }
    Ok(totals)
}

/// Runs `stars bench`.
pub fn run(args: Args) -> Result<ExitCode> {
    ensure!(args.frames >= 2, "--frames must be at least 2");
    let bag =
        BagReader::open(&args.bag).with_context(|| format!("--bag {}", args.bag.display()))?;
    let frames = read_frames(&bag, args.frames).context("--bag")?;
    let stages = args.stages.open()?;
    let random = stages.random;
    let label = stages.method.label.clone();
    // Each frame's time is taken before the bar is advanced, so drawing is not timed.
    let bar = super::progress::bar(2 * frames.len() as u64, "bench");
    let direct_ns = direct(stages.into_nodes()?, &frames, &bar)?;

    // Fresh nodes for the graph: the direct pass left windows and hysteresis behind it.
    let nodes = args.stages.open()?.into_nodes()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
        .context("starting the async runtime")?;
    let (graph_ns, reports) = runtime.block_on(async {
        let graph = Graph::start(nodes);
        let mut walls = Vec::new();
        for image in &frames {
            let now = stamp_ns(&image.header);
            let started = Instant::now();
            graph.publish(topics::CAMERA, Msg::Image(image.clone()));
            graph.tick(now);
            graph.settle().await;
            walls.push(started.elapsed().as_nanos() as u64);
            bar.inc(1);
        }
        (walls, graph.stop().await)
    });
    bar.finish_and_clear();

    // The first frame warms caches and allocators up; it is left out everywhere.
    let skip = |v: &[u64]| v[1.min(v.len())..].to_vec();
    // A frame passes the temporal node's handler three times (frame, features, map) and every
    // other node's once; per frame, a stage's cost is the sum of its handlings of that frame.
    let stage = |name: &str, per_frame: usize| -> Vec<u64> {
        let raw = reports
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.handle_ns.clone())
            .unwrap_or_default();
        skip(
            &raw.chunks(per_frame)
                .map(|c| c.iter().sum())
                .collect::<Vec<u64>>(),
        )
    };
    let feature = stage("feature_node", 1);
    let detector = stage("detector_node", 1);
    let temporal = stage("temporal_node", 3);
    let alert = stage("alert_node", 1);
    let graph_ns = skip(&graph_ns);
    let direct_ns = skip(&direct_ns);
    let n = graph_ns
        .len()
        .min(feature.len())
        .min(detector.len())
        .min(temporal.len())
        .min(alert.len());
    let plumbing: Vec<u64> = (0..n)
        .map(|i| {
            let critical = feature[i].max(detector[i]) + temporal[i] + alert[i];
            graph_ns[i].saturating_sub(critical)
        })
        .collect();
    let fps = |v: &[u64]| v.len() as f64 / (v.iter().sum::<u64>() as f64 / 1e9).max(1e-9);

    outln!(
        "stars bench: {} frames of {}x{} (first one not counted), temporal method {label}",
        frames.len(),
        frames[0].width,
        frames[0].height
    )?;
    outln!("| stage | p50 ms | p99 ms |\n|---|---|---|")?;
    let rows: [(&str, &[u64]); 7] = [
        ("feature_node", &feature),
        ("detector_node", &detector),
        ("temporal_node (3 messages/frame)", &temporal),
        ("alert_node", &alert),
        ("graph, end to end per frame", &graph_ns),
        ("direct, the four handlers serially", &direct_ns),
        ("graph plumbing (wall - critical path)", &plumbing),
    ];
    for (name, v) in rows {
        outln!(
            "| {name} | {:.2} | {:.2} |",
            percentile_ms(v, 0.5),
            percentile_ms(v, 0.99)
        )?;
    }
    outln!(
        "throughput: graph {:.2} frames/s, direct {:.2} frames/s",
        fps(&graph_ns),
        fps(&direct_ns)
    )?;
    if random {
        outln!(
            "{}: placeholder weights (latency is that of the architecture)",
            crate::model::flowclas::backbone::RANDOM_BACKBONE_LABEL
        )?;
    }
    if let Some(path) = &args.json {
        let figure = |v: &[u64]| serde_json::json!({"p50_ms": percentile_ms(v, 0.5), "p99_ms": percentile_ms(v, 0.99)});
        let json = serde_json::json!({
            "frames": frames.len() - 1,
            "width": frames[0].width,
            "height": frames[0].height,
            "temporal_method": label,
            "random_backbone": random,
            "stages": {
                "feature_node": figure(&feature),
                "detector_node": figure(&detector),
                "temporal_node": figure(&temporal),
                "alert_node": figure(&alert),
            },
            "graph_per_frame": figure(&graph_ns),
            "direct_per_frame": figure(&direct_ns),
            "plumbing_per_frame": figure(&plumbing),
            "graph_fps": fps(&graph_ns),
            "direct_fps": fps(&direct_ns),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
