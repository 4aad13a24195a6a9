//! The soak run shared by `test/soak.rs` (short) and `benches/soak.rs` (100,000 frames):
//! generated camera frames through the in-process graph of the real nodes at the tiny preset
//! (random backbone, random-init detector and STARS refiner), every output recorded into a
//! bag by `stars run`'s recorder, the process's memory sampled as it goes.
#![allow(dead_code)] // the test and the bench read different fields

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use stars::bag::{BagSummary, BagWriter};
use stars::model::flowclas::{self, backbone, FeatureExtractor};
use stars::model::stars::{Config as RefinerConfig, StarsRefiner};
use stars::msg::{Encoding, Header, Image, Time};
use stars::node::alert::{AlertNode, AlertParams};
use stars::node::detector::{DetectorNode, DetectorParams};
use stars::node::feature::{FeatureNode, FeatureParams};
use stars::node::inproc::{Graph, StageReport};
use stars::node::recorder::{self, output_topics, BagRecorder};
use stars::node::temporal::{TemporalNode, TemporalParams};
use stars::node::{topics, Msg, Node};
use stars::temporal::stars::Stars;

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000_000_000;
/// Frames are 100 ms apart (10 Hz) on the input clock.
const PERIOD_NS: u64 = 100_000_000;
/// Small frames: the soak measures the graph's bookkeeping, not the models' arithmetic.
const FRAME: (u32, u32) = (32, 24);
/// The feature node's input side: a 4x4 patch grid.
const FEATURE_SIDE: u32 = 56;

/// One memory sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Frames published so far.
    pub frame: u64,
    /// Resident set size (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set size so far (VmHWM), KiB.
    pub hwm_kib: u64,
    /// Seconds since the first frame.
    pub elapsed_s: f64,
}

/// What a soak run measured.
pub struct Soak {
    pub frames: u64,
    pub samples: Vec<Sample>,
    pub reports: Vec<StageReport>,
    pub bag: BagSummary,
    pub seconds: f64,
}

impl Soak {
    pub fn frames_per_s(&self) -> f64 {
        self.frames as f64 / self.seconds
    }

    /// The report of the stage called `name`.
    pub fn stage(&self, name: &str) -> &StageReport {
        self.reports
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no stage {name}"))
    }

    /// RSS growth between the first sample at or after frame `from` and the last sample, as a
    /// fraction of the former.
    pub fn rss_growth_after(&self, from: u64) -> f64 {
        let first = self
            .samples
            .iter()
            .find(|s| s.frame >= from)
            .expect("a sample after warm-up");
        let last = self.samples.last().expect("samples");
        (last.rss_kib as f64 - first.rss_kib as f64) / first.rss_kib as f64
    }
}

/// VmRSS and VmHWM of this process, KiB.
pub fn memory_kib() -> Result<(u64, u64)> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/self/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// A camera frame: a gradient moving one pixel per frame.
fn frame(k: u64) -> Image {
    let (w, h) = FRAME;
    let data = (0..w * h)
        .flat_map(|i| {
            let x = (i % w) as u64 + k;
            [(x * 8) as u8, (i / w * 10) as u8, 128]
        })
        .collect();
    let header = Header {
        stamp: Time::from_nanos(T0 + k * PERIOD_NS),
        frame_id: "camera".into(),
    };
    Image::packed(header, w, h, Encoding::Rgb8, data)
}

/// The four nodes at the tiny preset, random weights throughout.
fn nodes() -> Result<Vec<(Box<dyn Node>, usize)>> {
    let device = Device::Cpu;
    let extractor: Arc<dyn FeatureExtractor> =
        Arc::from(backbone::open("tiny", None, true, Some(0), &device)?);
    let vars = VarMap::new();
    let cfg = flowclas::Config::tiny();
    let detector = flowclas::FlowClas::new(
        &cfg,
        &flowclas::FlowState::new(&cfg, 0),
        VarBuilder::from_varmap(&vars, DType::F32, &device),
    )?;
    let refiner_vars = VarMap::new();
    let refiner = StarsRefiner::new(
        &RefinerConfig::tiny(),
        VarBuilder::from_varmap(&refiner_vars, DType::F32, &device),
    )?;
    let feature = FeatureParams {
        input_size: FEATURE_SIDE,
        ..FeatureParams::default()
    };
    let alert = AlertParams::default();
    Ok(vec![
        (
            Box::new(FeatureNode::new(feature.clone(), extractor.clone())?),
            feature.queue_depth as usize,
        ),
        (
            Box::new(DetectorNode::new(
                DetectorParams::default(),
                detector,
                extractor,
            )?),
            DetectorParams::default().queue_depth as usize,
        ),
        (
            Box::new(TemporalNode::new(
                TemporalParams::default(),
                Box::new(Stars::new(refiner)),
            )?),
            TemporalParams::default().queue_depth as usize,
        ),
        (
            Box::new(AlertNode::with_threshold(alert.clone(), 0.5)?),
            alert.queue_depth as usize,
        ),
    ])
}

/// Publishes `frames` frames, each once the graph is idle (lossless, as `stars run --rate
/// max`), sampling memory every `sample_every` frames; records into a bag at `out`.
pub fn run(frames: u64, sample_every: u64, out: &Path) -> Result<Soak> {
    let mut bag = BagWriter::create(out)?;
    for (topic, ty, qos) in output_topics(false) {
        bag.add_topic(topic, ty, qos)?;
    }
    let bag = Arc::new(Mutex::new(Some(bag)));
    let mut graph_nodes = nodes()?;
    let recorded = output_topics(false).into_iter().map(|t| t.0).collect();
    graph_nodes.push((
        Box::new(BagRecorder::new(bag.clone(), recorded)),
        recorder::QUEUE_DEPTH,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()?;
    let mut samples = Vec::new();
    let start = Instant::now();
    let reports = runtime.block_on(async {
        let graph = Graph::start(graph_nodes);
        for k in 0..frames {
            if k % sample_every == 0 {
                let (rss_kib, hwm_kib) = memory_kib()?;
                samples.push(Sample {
                    frame: k,
                    rss_kib,
                    hwm_kib,
                    elapsed_s: start.elapsed().as_secs_f64(),
                });
            }
            graph.publish(topics::CAMERA, Msg::Image(frame(k)));
            graph.tick((T0 + k * PERIOD_NS) as i64);
            graph.settle().await;
        }
        anyhow::Ok(graph.stop().await)
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let (rss_kib, hwm_kib) = memory_kib()?;
    samples.push(Sample {
        frame: frames,
        rss_kib,
        hwm_kib,
        elapsed_s: seconds,
    });
    let writer = bag
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .context("the bag writer is gone")?;
    Ok(Soak {
        frames,
        samples,
        reports,
        bag: writer.finish()?,
        seconds,
    })
}

/// Checks the accounting: every published frame was handled or counted as dropped by every
/// stage, nothing failed, and the bag holds every refined map and alert status.
pub fn check_accounting(soak: &Soak) {
    let n = soak.frames;
    for report in &soak.reports {
        assert_eq!(report.errors, 0, "{}: errors", report.name);
    }
    for name in ["feature_node", "detector_node", "alert_node"] {
        let r = soak.stage(name);
        assert_eq!(r.handled + r.total_dropped(), n, "{name}: {r:?}");
    }
    // The temporal node takes frames, features and maps.
    let temporal = soak.stage("temporal_node");
    assert_eq!(
        temporal.handled + temporal.total_dropped(),
        3 * n,
        "{temporal:?}"
    );
    // Every message the recorder took is in the bag.
    assert_eq!(soak.stage("recorder").handled, soak.bag.message_count);
}
