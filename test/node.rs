//! The nodes' logic driven by timed synthetic messages (no runtime), the in-process graph under
//! a slow stage, and `stars run` over a tiny synthetic bag checked by `rosbags`.
mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use stars::bag::{BagReader, BagWriter, Qos};
use stars::msg::{Bool, DiagnosticStatus, Encoding, Header, Image, Message, Time};
use stars::node::alert::{AlertNode, AlertParams};
use stars::node::inproc::Graph;
use stars::node::maps::{features_to_image, map_from_image, map_to_image};
use stars::node::temporal::{TemporalNode, TemporalParams};
use stars::node::{topics, Msg, Node, Publication};
use stars::temporal::{AnomalyMap, Frame, PatchFeatures, TemporalMethod};
use support::{assert_clean_error, python, run_python, stars};

const MS: i64 = 1_000_000;
/// 2026-01-01T00:00:00Z, so stamps look like a recorded bag's.
const T0: i64 = 1_767_225_600_000_000_000;

fn header(t: i64, frame_id: &str) -> Header {
    Header {
        stamp: Time::from_nanos(t as u64),
        frame_id: frame_id.into(),
    }
}

fn map_msg(t: i64, frame_id: &str, value: f32) -> Arc<Msg> {
    let map = AnomalyMap::filled(4, 3, value);
    Arc::new(Msg::Image(map_to_image(header(t, frame_id), &map)))
}

fn features_msg(t: i64, value: f32) -> Arc<Msg> {
    let f = PatchFeatures::new(2, 2, 2, vec![value; 8]).unwrap();
    Arc::new(Msg::Image(features_to_image(header(t, "cam"), &f)))
}

fn frame_msg(t: i64) -> Arc<Msg> {
    let data = vec![100u8; 4 * 3 * 3];
    Arc::new(Msg::Image(Image::packed(
        header(t, "cam"),
        4,
        3,
        Encoding::Rgb8,
        data,
    )))
}

/// The refined maps among `out` as (stamp in ms after T0, first value).
fn refined(out: &[Publication]) -> Vec<(i64, f32)> {
    out.iter()
        .filter(|p| p.topic == topics::REFINED_MAP)
        .map(|p| {
            let image = p.msg.image().unwrap();
            let map = map_from_image(image).unwrap();
            let t = image.header.stamp.to_nanos().unwrap() as i64;
            ((t - T0) / MS, map.data[0])
        })
        .collect()
}

fn diagnostics_levels(out: &[Publication], topic: &str) -> Vec<u8> {
    out.iter()
        .filter(|p| p.topic == topic)
        .map(|p| match &p.msg {
            Msg::Diagnostics(d) => d.status[0].level,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Needs features; its output is the features' first value, so a test sees which features
/// each map was paired with.
struct FeatureEcho;

impl TemporalMethod for FeatureEcho {
    fn name(&self) -> &str {
        "feature-echo"
    }
    fn needs_features(&self) -> bool {
        true
    }
    fn reset(&mut self) {}
    fn step(&mut self, frame: &Frame) -> anyhow::Result<AnomalyMap> {
        let f = frame.features.as_ref().unwrap();
        Ok(AnomalyMap::filled(
            frame.map.width,
            frame.map.height,
            f.data[0],
        ))
    }
}

/// Outputs (frames in the current window) / 10, so a test sees every restart.
#[derive(Default)]
struct WindowCount(u32);

impl TemporalMethod for WindowCount {
    fn name(&self) -> &str {
        "window-count"
    }
    fn reset(&mut self) {
        self.0 = 0;
    }
    fn step(&mut self, frame: &Frame) -> anyhow::Result<AnomalyMap> {
        self.0 += 1;
        Ok(AnomalyMap::filled(
            frame.map.width,
            frame.map.height,
            self.0 as f32 / 10.0,
        ))
    }
}

fn temporal(method: Box<dyn TemporalMethod>) -> TemporalNode {
    TemporalNode::new(TemporalParams::default(), method).unwrap()
}

#[test]
fn stamp_pairing_survives_drops_and_reordering() {
    let mut node = temporal(Box::new(FeatureEcho));
    let mut out = Vec::new();
    let mut feed = |topic: &str, msg: Arc<Msg>| out.extend(node.handle(topic, msg).unwrap());
    let t = |k: i64| T0 + k * 100 * MS;
    // 1: features first; 2: map first; 3: features dropped; 5: map dropped; 2 again: late.
    feed(topics::CAMERA, frame_msg(t(1)));
    feed(topics::FEATURES, features_msg(t(1), 0.1));
    feed(topics::DETECTOR_MAP, map_msg(t(1), "cam", 0.9));
    feed(topics::DETECTOR_MAP, map_msg(t(2), "cam", 0.9));
    feed(topics::FEATURES, features_msg(t(2), 0.2));
    feed(topics::DETECTOR_MAP, map_msg(t(3), "cam", 0.9));
    feed(topics::FEATURES, features_msg(t(4), 0.4));
    feed(topics::DETECTOR_MAP, map_msg(t(4), "cam", 0.9));
    feed(topics::FEATURES, features_msg(t(5), 0.5));
    feed(topics::FEATURES, features_msg(t(6), 0.6));
    feed(topics::DETECTOR_MAP, map_msg(t(6), "cam", 0.9));
    feed(topics::DETECTOR_MAP, map_msg(t(2), "cam", 0.9));
    assert_eq!(
        refined(&out),
        [(100, 0.1), (200, 0.2), (300, 0.9), (400, 0.4), (600, 0.6)],
        "each map refined with its own stamp's features, the one without passed through"
    );
    let c = node.stats();
    assert_eq!(
        (c.refined, c.passed_through, c.unmatched_features, c.late),
        (5, 1, 1, 1)
    );
    // Only stamp 1 had a frame: one overlay, of the frame's size and encoding.
    let overlays: Vec<&Image> = out
        .iter()
        .filter(|p| p.topic == topics::REFINED_OVERLAY)
        .map(|p| p.msg.image().unwrap())
        .collect();
    assert_eq!(overlays.len(), 1);
    assert_eq!(
        (overlays[0].encoding, overlays[0].width, overlays[0].height),
        (Encoding::Rgb8, 4, 3)
    );
    assert_eq!(c.no_overlay, 4);
    // A single dropped feature is not a stopped stream.
    assert!(diagnostics_levels(&out, topics::DIAGNOSTICS).is_empty());
}

#[test]
fn window_restarts_on_gaps_and_new_sequences() {
    let mut node = temporal(Box::<WindowCount>::default());
    let mut out = Vec::new();
    // 0-200 ms one window; 2 s (gap > max_gap_s 0.5) restarts; a new frame_id restarts; a
    // stamp far back (replay restarted) restarts.
    let inputs = [
        (0, "cam"),
        (100, "cam"),
        (200, "cam"),
        (2000, "cam"),
        (2100, "cam"),
        (2200, "cam2"),
        (2300, "cam2"),
        (10, "cam2"),
    ];
    for (ms, id) in inputs {
        out.extend(
            node.handle(topics::DETECTOR_MAP, map_msg(T0 + ms * MS, id, 0.5))
                .unwrap(),
        );
    }
    let windows: Vec<f32> = refined(&out).iter().map(|r| r.1).collect();
    assert_eq!(windows, [0.1, 0.2, 0.3, 0.1, 0.2, 0.1, 0.2, 0.1]);
    assert_eq!(node.stats().restarts, 3);
}

#[test]
fn stopped_feature_stream_warns_and_output_continues() {
    let mut node = temporal(Box::new(FeatureEcho));
    let mut out = Vec::new();
    let t = |k: i64| T0 + k * 100 * MS;
    let mut maps = 0;
    for k in 0..20 {
        if !(5..15).contains(&k) {
            out.extend(
                node.handle(topics::FEATURES, features_msg(t(k), 0.25))
                    .unwrap(),
            );
        }
        out.extend(
            node.handle(topics::DETECTOR_MAP, map_msg(t(k), "cam", 0.75))
                .unwrap(),
        );
        out.extend(node.on_clock(t(k)));
        maps += 1;
    }
    let r = refined(&out);
    // Every map came out, in order; frames 5..15 passed through.
    assert_eq!(r.len(), maps);
    assert!(r.windows(2).all(|w| w[0].0 < w[1].0));
    for (ms, v) in &r {
        let k = ms / 100;
        let expect = if (5..15).contains(&k) { 0.75 } else { 0.25 };
        assert_eq!(*v, expect, "frame {k}");
    }
    // One WARN when the stream stopped, one OK when it came back.
    assert_eq!(
        diagnostics_levels(&out, topics::DIAGNOSTICS),
        [DiagnosticStatus::WARN, DiagnosticStatus::OK]
    );
    // While waiting, a map is held at most feature_timeout_s (0.5 s) of input time: the map of
    // frame 5 is out by the tick of frame 11.
    let mut node = temporal(Box::new(FeatureEcho));
    node.handle(topics::FEATURES, features_msg(t(0), 0.25))
        .unwrap();
    node.handle(topics::DETECTOR_MAP, map_msg(t(0), "cam", 0.75))
        .unwrap();
    assert!(node
        .handle(topics::DETECTOR_MAP, map_msg(t(1), "cam", 0.75))
        .unwrap()
        .is_empty());
    assert!(refined(&node.on_clock(t(6))).is_empty());
    let late = node.on_clock(t(6) + 1);
    assert_eq!(refined(&late), [(100, 0.75)]);
    assert!(node.degraded());
}

fn alert(k: u32, n: u32) -> AlertNode {
    let params = AlertParams {
        min_area_px: 3,
        k,
        n,
        ..AlertParams::default()
    };
    AlertNode::with_threshold(params, 0.5).unwrap()
}

/// A 4x3 refined map with `hot` pixels at 0.9, the rest 0.1.
fn refined_msg(t: i64, hot: usize) -> Arc<Msg> {
    let mut data = vec![0.1f32; 12];
    data[..hot].iter_mut().for_each(|v| *v = 0.9);
    let map = AnomalyMap::new(4, 3, data).unwrap();
    Arc::new(Msg::Image(map_to_image(header(t, "cam"), &map)))
}

fn active_values(out: &[Publication]) -> Vec<bool> {
    out.iter()
        .filter_map(|p| match &p.msg {
            Msg::Bool(Bool { data }) => Some(*data),
            _ => None,
        })
        .collect()
}

#[test]
fn hysteresis_ignores_one_noisy_frame_and_clears_after_n_clean() {
    let mut node = alert(3, 5);
    let mut active = Vec::new();
    // hot pixels per frame: a lone anomalous frame, a small blob (2 < min_area 3), then three
    // anomalous frames within five, then clean frames.
    let hot = [0, 12, 0, 0, 2, 2, 0, 12, 0, 12, 12, 0, 0, 0, 0, 0, 0];
    for (k, h) in hot.iter().enumerate() {
        let out = node
            .handle(
                topics::REFINED_MAP,
                refined_msg(T0 + k as i64 * 100 * MS, *h),
            )
            .unwrap();
        active.extend(active_values(&out));
    }
    let expect = [
        false, false, false, false, false, false, false, false, false, false, true, true, true,
        true, true, false, false,
    ];
    assert_eq!(active, expect);
    assert_eq!(node.stats().transitions, 2);
    // The status carries the score, threshold, area and bbox of the last anomalous frame.
    let out = node
        .handle(topics::REFINED_MAP, refined_msg(T0 + 2 * 1_000 * MS, 6))
        .unwrap();
    let Msg::Diagnostics(d) = &out[1].msg else {
        panic!()
    };
    let get = |k: &str| {
        d.status[0]
            .values
            .iter()
            .find(|v| v.key == k)
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(
        (get("area"), get("bbox"), get("threshold")),
        ("6".into(), "0 0 3 1".into(), "0.5".into())
    );
    assert_eq!(get("score"), "0.9");
    assert_eq!(get("stamp"), "1767225602.000000000");
}

#[test]
fn nan_maps_are_errors_that_count_as_anomalous() {
    let mut node = alert(1, 2);
    let map = AnomalyMap::new(4, 3, vec![f32::NAN; 12]).unwrap();
    let msg = Arc::new(Msg::Image(map_to_image(header(T0, "cam"), &map)));
    let out = node.handle(topics::REFINED_MAP, msg).unwrap();
    assert_eq!(active_values(&out), [true]);
    assert_eq!(
        diagnostics_levels(&out, topics::ALERT_STATUS),
        [DiagnosticStatus::ERROR]
    );
    // The temporal node passes such a map through unchanged rather than refining it to clear.
    let mut t = temporal(Box::<WindowCount>::default());
    let msg = Arc::new(Msg::Image(map_to_image(header(T0, "cam"), &map)));
    let out = t.handle(topics::DETECTOR_MAP, msg).unwrap();
    assert!(refined(&out)[0].1.is_nan());
    assert_eq!(t.stats().nonfinite_maps, 1);
}

#[test]
fn silent_input_goes_stale_and_raises_within_stale_after() {
    let mut node = alert(3, 5);
    let mut out = Vec::new();
    for k in 0..5 {
        let t = T0 + k * 100 * MS;
        out.extend(node.handle(topics::REFINED_MAP, refined_msg(t, 0)).unwrap());
        out.extend(node.on_clock(t));
    }
    assert!(!node.active());
    // The input stops at 400 ms; the clock ticks every 50 ms of input time.
    let mut stale_at = None;
    for k in 0..60 {
        let now = T0 + 400 * MS + k * 50 * MS;
        let o = node.on_clock(now);
        if !o.is_empty() && stale_at.is_none() {
            stale_at = Some(now);
            assert_eq!(active_values(&o), [true]);
            assert_eq!(
                diagnostics_levels(&o, topics::ALERT_STATUS),
                [DiagnosticStatus::STALE]
            );
        } else {
            assert!(o.is_empty(), "STALE is published once");
        }
    }
    let silence = stale_at.expect("went stale") - (T0 + 400 * MS);
    assert!(
        silence > 1_000 * MS && silence <= 1_050 * MS,
        "STALE after {silence} ns"
    );
    assert!(node.active());
    // Input resumes: clean frames keep the alert up until n = 5 of them in a row.
    let mut active = Vec::new();
    for k in 0..6 {
        let out = node
            .handle(
                topics::REFINED_MAP,
                refined_msg(T0 + 5_000 * MS + k * 100 * MS, 0),
            )
            .unwrap();
        active.extend(active_values(&out));
    }
    assert_eq!(active, [true, true, true, true, false, false]);
    // No input at all from the start goes stale too.
    let mut fresh = alert(3, 5);
    assert!(fresh.on_clock(T0).is_empty());
    assert_eq!(active_values(&fresh.on_clock(T0 + 1_001 * MS)), [true]);
}

/// Records the stamps it handled, sleeping `delay` per message.
struct Slow {
    topic: &'static str,
    delay: Duration,
    seen: Arc<Mutex<Vec<i64>>>,
}

impl Node for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn subscriptions(&self) -> Vec<&'static str> {
        vec![self.topic]
    }
    fn publications(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn handle(&mut self, _: &str, msg: Arc<Msg>) -> anyhow::Result<Vec<Publication>> {
        std::thread::sleep(self.delay);
        let t = stars::node::stamp_ns(&msg.image()?.header);
        self.seen.lock().unwrap().push(t);
        Ok(Vec::new())
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[test]
fn slow_stage_drops_oldest_with_bounded_queues() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let slow_seen = Arc::new(Mutex::new(Vec::new()));
    let fast_seen = Arc::new(Mutex::new(Vec::new()));
    let nodes: Vec<(Box<dyn Node>, usize)> = vec![
        (
            Box::new(Slow {
                topic: topics::CAMERA,
                delay: Duration::from_millis(20),
                seen: slow_seen.clone(),
            }),
            2,
        ),
        (
            Box::new(Slow {
                topic: topics::CAMERA,
                delay: Duration::ZERO,
                seen: fast_seen.clone(),
            }),
            64,
        ),
    ];
    let reports = runtime.block_on(async {
        let graph = Graph::start(nodes);
        for k in 0..40 {
            graph.publish(topics::CAMERA, frame_msg(k).as_ref().clone());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        graph.settle().await;
        graph.stop().await
    });
    let (slow, fast) = (&reports[0], &reports[1]);
    assert_eq!(fast.handled, 40);
    assert_eq!(fast.total_dropped(), 0);
    assert_eq!(slow.handled + slow.total_dropped(), 40);
    assert!(slow.total_dropped() >= 20, "{slow:?}");
    assert!(slow.high_water <= 2, "queue grew to {}", slow.high_water);
    // Oldest dropped: the newest frame is always handled, and order is kept.
    let seen = slow_seen.lock().unwrap();
    assert_eq!(*seen.last().unwrap(), 39);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // Lossless replay (settle after each input) drops nothing through the same slow stage.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let nodes: Vec<(Box<dyn Node>, usize)> = vec![(
        Box::new(Slow {
            topic: topics::CAMERA,
            delay: Duration::from_millis(5),
            seen: seen.clone(),
        }),
        1,
    )];
    let reports = runtime.block_on(async {
        let graph = Graph::start(nodes);
        for k in 0..10 {
            graph.publish(topics::CAMERA, frame_msg(k).as_ref().clone());
            graph.settle().await;
        }
        graph.stop().await
    });
    assert_eq!((reports[0].handled, reports[0].total_dropped()), (10, 0));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A threshold file for the alert node in `dir`.
fn threshold_file(dir: &Path, threshold: f64) -> std::path::PathBuf {
    let path = dir.join("threshold.yaml");
    support::threshold_file(&path, threshold);
    path
}

#[test]
fn run_rejects_bad_input_at_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good_threshold = threshold_file(dir, 0.5);
    let config = support::repo().join("config/stars.yaml");
    // A bag without /camera/image_raw, and one whose frames are mono16.
    let no_camera = dir.join("no_camera");
    let mut bag = BagWriter::create(&no_camera).unwrap();
    bag.add_topic("/other", Bool::TYPE, Qos::reliable())
        .unwrap();
    bag.write("/other", 1, &Bool { data: true }).unwrap();
    bag.finish().unwrap();
    let mono16 = dir.join("mono16");
    let mut bag = BagWriter::create(&mono16).unwrap();
    bag.add_topic(topics::CAMERA, Image::TYPE, Qos::sensor_data())
        .unwrap();
    let image = Image::packed(header(T0, "cam"), 2, 2, Encoding::Mono16, vec![0; 8]);
    bag.write(topics::CAMERA, T0 as u64, &image).unwrap();
    bag.finish().unwrap();
    let bad_yaml = dir.join("bad.yaml");
    std::fs::write(&bad_yaml, "threshold: [1, 2]\n").unwrap();
    let unknown_key = dir.join("unknown.yaml");
    std::fs::write(
        &unknown_key,
        "alert_node:\n  ros__parameters:\n    min_area: 3\n",
    )
    .unwrap();
    let wrong_type = dir.join("wrong.yaml");
    std::fs::write(
        &wrong_type,
        "temporal_node:\n  ros__parameters:\n    buffer_size: many\n",
    )
    .unwrap();

    let run = |bag: &Path, threshold: &Path, config: &Path| {
        let out = dir.join("out");
        stars(&[
            "run",
            "--bag",
            s(bag),
            "--out",
            s(&out),
            "--detector",
            s(&dir.join("no_ckpt")),
            "--random-weights",
            "--threshold",
            s(threshold),
            "--config",
            s(config),
            "--rate",
            "max",
        ])
    };
    assert_clean_error(
        &run(&no_camera, &good_threshold, &config),
        "has no /camera/image_raw",
    );
    assert_clean_error(
        &run(&mono16, &good_threshold, &config),
        "encoding mono16, unsupported",
    );
    assert_clean_error(
        &run(&mono16, &dir.join("missing.yaml"), &config),
        "missing.yaml",
    );
    assert_clean_error(&run(&mono16, &bad_yaml, &config), "bad.yaml");
    assert_clean_error(
        &run(&mono16, &good_threshold, &unknown_key),
        "unknown field `min_area`",
    );
    assert_clean_error(&run(&mono16, &good_threshold, &wrong_type), "wrong.yaml");
    // Nothing was written for any of them.
    assert!(!dir.join("out").join("metadata.yaml").exists());
}

#[test]
fn run_over_a_tiny_bag_writes_every_topic_checked_by_rosbags() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data, ckpt) = tiny_detector(dir, "train,test", "2", "3");
    let (bag, out) = (dir.join("bag"), dir.join("out"));
    support::assert_success(&stars(&[
        "bag",
        "from-tallo",
        s(&data.join("test")),
        "--out",
        s(&bag),
    ]));
    let threshold = threshold_file(dir, 0.5);
    let run = stars(&[
        "run",
        "--bag",
        s(&bag),
        "--out",
        s(&out),
        "--detector",
        s(&ckpt),
        "--random-weights",
        "--threshold",
        s(&threshold),
        "--rate",
        "max",
        "--gif",
        s(&dir.join("overlays.gif")),
    ]);
    support::assert_success(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("PLACEHOLDER_RANDOM_BACKBONE"), "{stdout}");
    let gif = std::fs::read(dir.join("overlays.gif")).unwrap();
    assert!(gif.starts_with(b"GIF89a"), "--gif wrote no GIF");
    // Where ROS 2 is sourced, the output bag replays: every recorded message reaches a reliable
    // subscriber, and `ros2 bag info` counts them all.
    if let Some(replay) = support::ros2_replay(&out) {
        let output = replay["player_output"].as_str().unwrap_or_default();
        assert_eq!(replay["player_rc"], 0, "ros2 bag play failed:\n{output}");
        let info = BagReader::open(&out).unwrap().info().clone();
        let total: u64 = info
            .topics_with_message_count
            .iter()
            .map(|t| t.message_count)
            .sum();
        assert_eq!(
            replay["info_messages"], total,
            "ros2 bag info vs the metadata"
        );
        for t in &info.topics_with_message_count {
            let name = &t.topic_metadata.name;
            let got = replay["received"][name].as_array().map_or(0, Vec::len) as u64;
            assert_eq!(
                got, t.message_count,
                "{name} as received; player:\n{output}"
            );
        }
    }
    let Some(py) = python() else { return };
    let report: Value =
        serde_json::from_str(&run_python(&py, "node_run_check.py", &[s(&bag), s(&out)])).unwrap();
    let topic = |name: &str| &report["topics"][name];
    let frames = topic(topics::CAMERA)["count"].as_u64().unwrap();
    assert!(frames >= 4, "{report}");
    let input_stamps = &report["input_stamps"];
    assert_eq!(&topic(topics::CAMERA)["stamps"], input_stamps);
    for name in [
        topics::DETECTOR_MAP,
        topics::REFINED_MAP,
        topics::REFINED_OVERLAY,
        topics::FEATURES,
    ] {
        let t = topic(name);
        assert_eq!(t["count"].as_u64(), Some(frames), "{name}: {t}");
        assert_eq!(
            &t["stamps"], input_stamps,
            "{name}: stamps differ from the input's"
        );
    }
    for name in [topics::DETECTOR_MAP, topics::REFINED_MAP] {
        let t = topic(name);
        assert_eq!(t["encodings"], serde_json::json!(["32FC1"]), "{name}");
        assert!(
            t["min"].as_f64().unwrap() >= 0.0 && t["max"].as_f64().unwrap() <= 1.0,
            "{name}: {t}"
        );
        assert_eq!(t["sizes"], report["input_sizes"], "{name}");
    }
    let overlay = topic(topics::REFINED_OVERLAY);
    assert_eq!(overlay["encodings"], serde_json::json!(["rgb8"]));
    assert_eq!(overlay["sizes"], report["input_sizes"]);
    assert_eq!(
        topic(topics::FEATURES)["sizes"],
        serde_json::json!([[16, 16]])
    );
    assert!(topic(topics::ALERT_STATUS)["count"].as_u64().unwrap() >= frames);
    assert_eq!(topic(topics::GT_MASK)["count"].as_u64(), Some(frames));
}

/// Synthetic tiny `splits` (at most `sequences` each, seed `seed`) in DIR/synth and a tiny
/// detector trained on their train split for one epoch on a random backbone, in DIR/ckpt.
fn tiny_detector(
    dir: &Path,
    splits: &str,
    sequences: &str,
    seed: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (data, ckpt) = (dir.join("synth"), dir.join("ckpt"));
    support::assert_success(&stars(&[
        "synth",
        "--preset",
        "tiny",
        "--splits",
        splits,
        "--max-sequences",
        sequences,
        "--out",
        s(&data),
        "--seed",
        seed,
    ]));
    support::assert_success(&stars(&[
        "train",
        "detector",
        "--data",
        s(&data.join("train")),
        "--out",
        s(&ckpt),
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--random-weights",
    ]));
    (data, ckpt)
}

#[test]
fn run_over_a_damaged_bag_keeps_what_was_processed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, ckpt) = tiny_detector(dir, "train", "1", "4");
    // Five frames, each followed by a mask big enough (4.4 MB) to close the bag's chunk, so
    // every frame sits in its own chunk; then the last chunk is damaged.
    let bag_dir = dir.join("bag");
    let mut bag = BagWriter::create(&bag_dir).unwrap();
    bag.add_topic(topics::CAMERA, Image::TYPE, Qos::sensor_data())
        .unwrap();
    bag.add_topic(topics::GT_MASK, Image::TYPE, Qos::sensor_data())
        .unwrap();
    for k in 0..5i64 {
        let t = T0 + k * 100 * MS;
        let data = (0..32 * 24 * 3).map(|i| (i as i64 * 7 + k) as u8).collect();
        let frame = Image::packed(header(t, "cam"), 32, 24, Encoding::Rgb8, data);
        bag.write(topics::CAMERA, t as u64, &frame).unwrap();
        let mask = Image::packed(
            header(t, "cam"),
            2100,
            2100,
            Encoding::Mono8,
            vec![0; 2100 * 2100],
        );
        bag.write(topics::GT_MASK, t as u64 + 1, &mask).unwrap();
    }
    bag.finish().unwrap();
    let (_, chunks) = support::corrupt_last_chunk(&bag_dir.join("bag_0.mcap"));
    assert_eq!(chunks, 5, "one chunk per frame");

    let out = dir.join("out");
    let threshold = threshold_file(dir, 0.5);
    let run = stars(&[
        "run",
        "--bag",
        s(&bag_dir),
        "--out",
        s(&out),
        "--detector",
        s(&ckpt),
        "--random-weights",
        "--threshold",
        s(&threshold),
        "--rate",
        "max",
    ]);
    assert_clean_error(&run, "the input stopped after 4 frames");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("holds what was processed"), "{stderr}");
    // The output is a valid bag with the four frames' maps.
    let reader = stars::bag::BagReader::open(&out).unwrap();
    let count = |name: &str| {
        reader
            .info()
            .topics_with_message_count
            .iter()
            .find(|t| t.topic_metadata.name == name)
            .unwrap()
            .message_count
    };
    assert_eq!(
        (
            count(topics::CAMERA),
            count(topics::REFINED_MAP),
            count(topics::REFINED_OVERLAY)
        ),
        (4, 4, 4)
    );
}

/// Publishes on `topic` a map (or features) stamped like each camera frame, after `delay`.
struct Stub {
    name: &'static str,
    topic: &'static str,
    delay: Duration,
}

impl Node for Stub {
    fn name(&self) -> &'static str {
        self.name
    }
    fn subscriptions(&self) -> Vec<&'static str> {
        vec![topics::CAMERA]
    }
    fn publications(&self) -> Vec<&'static str> {
        vec![self.topic]
    }
    fn handle(&mut self, _: &str, msg: Arc<Msg>) -> anyhow::Result<Vec<Publication>> {
        std::thread::sleep(self.delay);
        let t = stars::node::stamp_ns(&msg.image()?.header);
        // Features carry the frame index / 100, so pairing is visible in the refined map.
        let k = ((t - T0) / (100 * MS)) as f32 / 100.0;
        let out = match self.topic {
            topics::FEATURES => features_msg(t, k),
            _ => map_msg(t, "cam", 0.9),
        };
        Ok(vec![Publication {
            topic: self.topic,
            msg: out.as_ref().clone(),
        }])
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[test]
fn lossless_graph_pairs_every_frame_with_its_features() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector(seen.clone());
    // The feature stage is the slower one, so maps wait for their features.
    let nodes: Vec<(Box<dyn Node>, usize)> = vec![
        (
            Box::new(Stub {
                name: "features",
                topic: topics::FEATURES,
                delay: Duration::from_millis(3),
            }),
            2,
        ),
        (
            Box::new(Stub {
                name: "detector",
                topic: topics::DETECTOR_MAP,
                delay: Duration::ZERO,
            }),
            2,
        ),
        (Box::new(temporal(Box::new(FeatureEcho))), 4),
        (Box::new(alert(3, 5)), 4),
        (Box::new(collector), 64),
    ];
    let reports = runtime.block_on(async {
        let graph = Graph::start(nodes);
        for k in 0..12 {
            let t = T0 + k * 100 * MS;
            graph.publish(topics::CAMERA, frame_msg(t).as_ref().clone());
            graph.tick(t);
            graph.settle().await;
        }
        graph.stop().await
    });
    let seen = seen.lock().unwrap();
    let refined: Vec<(i64, f32)> = seen
        .iter()
        .filter(|(topic, _)| topic == topics::REFINED_MAP)
        .map(|(_, v)| *v)
        .collect();
    let expect: Vec<(i64, f32)> = (0..12).map(|k| (k * 100, k as f32 / 100.0)).collect();
    assert_eq!(refined, expect);
    assert_eq!(
        seen.iter()
            .filter(|(topic, _)| topic == topics::ALERT_STATUS)
            .count(),
        12
    );
    assert!(
        reports
            .iter()
            .all(|r| r.total_dropped() == 0 && r.errors == 0),
        "{reports:?}"
    );
}

/// Keeps (topic, (ms after T0, first value of a 32FC1 map)) of everything it receives.
struct Collector(Arc<Mutex<Vec<Received>>>);

/// What the collector keeps of one message.
type Received = (String, (i64, f32));

impl Node for Collector {
    fn name(&self) -> &'static str {
        "collector"
    }
    fn subscriptions(&self) -> Vec<&'static str> {
        vec![topics::REFINED_MAP, topics::ALERT_STATUS]
    }
    fn publications(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn handle(&mut self, topic: &str, msg: Arc<Msg>) -> anyhow::Result<Vec<Publication>> {
        let value = match msg.as_ref() {
            Msg::Image(image) => {
                let t = stars::node::stamp_ns(&image.header);
                ((t - T0) / MS, map_from_image(image)?.data[0])
            }
            _ => (0, 0.0),
        };
        self.0.lock().unwrap().push((topic.to_string(), value));
        Ok(Vec::new())
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
