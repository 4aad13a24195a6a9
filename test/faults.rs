//! Fault injection, each with its expected outcome (the fault table in docs/reliability.md).
//! Faults already covered elsewhere are referenced there, not repeated: a stopped feature
//! stream (`node::stopped_feature_stream_warns_and_output_continues`), a silent camera
//! (`node::silent_input_goes_stale_and_raises_within_stale_after`), reordered and dropped
//! inputs (`node::stamp_pairing_survives_drops_and_reordering`), NaN maps
//! (`node::nan_maps_are_errors_that_count_as_anomalous`), a stamp far back
//! (`node::window_restarts_on_gaps_and_new_sequences`).
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use stars::bag::BagReader;
use stars::msg::{DiagnosticStatus, Header, Time};
use stars::node::alert::{AlertNode, AlertParams};
use stars::node::maps::{map_from_image, map_to_image};
use stars::node::temporal::{PassThrough, TemporalNode, TemporalParams};
use stars::node::{topics, Msg, Node, Publication};
use stars::temporal::AnomalyMap;
use support::{assert_clean_error, stars};

const MS: i64 = 1_000_000;
const T0: i64 = 1_767_225_600_000_000_000;

fn map_msg(t: i64, value: f32) -> Arc<Msg> {
    let header = Header {
        stamp: Time::from_nanos(t as u64),
        frame_id: "cam".into(),
    };
    let map = AnomalyMap::filled(4, 3, value);
    Arc::new(Msg::Image(map_to_image(header, &map)))
}

/// Stamps (ms after T0) and first values of the refined maps among `out`.
fn refined(out: &[Publication]) -> Vec<(i64, f32)> {
    out.iter()
        .filter(|p| p.topic == topics::REFINED_MAP)
        .map(|p| {
            let image = p.msg.image().unwrap();
            let t = stars::node::stamp_ns(&image.header);
            ((t - T0) / MS, map_from_image(image).unwrap().data[0])
        })
        .collect()
}

fn alert_levels(out: &[Publication]) -> Vec<(u8, Option<bool>)> {
    let mut active = None;
    let mut levels = Vec::new();
    for p in out {
        match &p.msg {
            Msg::Bool(b) => active = Some(b.data),
            Msg::Diagnostics(d) if p.topic == topics::ALERT_STATUS => {
                levels.push((d.status[0].level, active))
            }
            _ => {}
        }
    }
    levels
}

fn alert_node() -> AlertNode {
    let params = AlertParams {
        min_area_px: 3,
        k: 1,
        n: 2,
        ..AlertParams::default()
    };
    AlertNode::with_threshold(params, 0.5).unwrap()
}

/// Duplicated maps and a stamp going backwards within `max_gap_s` are late (counted and
/// ignored); one refined map per stamp comes out, in stamp order.
#[test]
fn duplicated_and_backward_stamps_are_counted_as_late() {
    let mut node = TemporalNode::new(TemporalParams::default(), Box::new(PassThrough)).unwrap();
    let mut out = Vec::new();
    for ms in [0, 100, 100, 200, 150, 50, 300] {
        out.extend(
            node.handle(topics::DETECTOR_MAP, map_msg(T0 + ms * MS, 0.2))
                .unwrap(),
        );
    }
    let stamps: Vec<i64> = refined(&out).iter().map(|r| r.0).collect();
    assert_eq!(stamps, [0, 100, 200, 300]);
    let stats = node.stats();
    assert_eq!((stats.late, stats.restarts), (3, 0), "{stats:?}");
    // The alert node takes each refined map it is given, a duplicate included: a duplicate
    // is one more frame of evidence, never a reason to clear.
    let mut alert = alert_node();
    let mut levels = Vec::new();
    for ms in [0, 0, 100] {
        let hot = map_msg(T0 + ms * MS, 0.9);
        levels.extend(alert_levels(
            &alert.handle(topics::REFINED_MAP, hot).unwrap(),
        ));
    }
    assert_eq!(
        levels,
        [DiagnosticStatus::WARN; 3].map(|l| (l, Some(true))),
        "every hot frame reports WARN with the alert raised"
    );
}

/// +Inf and -Inf maps are handled as NaN ones: the temporal node publishes them unchanged and
/// counts them, the alert node reports ERROR and raises the alert (never a silent clear).
#[test]
fn infinite_maps_are_counted_and_never_clear() {
    for bad in [f32::INFINITY, f32::NEG_INFINITY] {
        let mut node = TemporalNode::new(TemporalParams::default(), Box::new(PassThrough)).unwrap();
        let out = node.handle(topics::DETECTOR_MAP, map_msg(T0, bad)).unwrap();
        assert_eq!(refined(&out), [(0, bad)]);
        assert_eq!(node.stats().nonfinite_maps, 1);
        let mut alert = alert_node();
        let out = alert.handle(topics::REFINED_MAP, map_msg(T0, bad)).unwrap();
        assert_eq!(
            alert_levels(&out),
            [(DiagnosticStatus::ERROR, Some(true))],
            "{bad}"
        );
    }
}

/// The input bag is truncated while it is being read: the messages read so far are intact,
/// then one error names the chunk's byte offset, and the stream ends.
#[test]
fn input_bag_truncated_mid_read_names_the_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bag");
    support::camera_bag(&dir, 5, (8, 6), true);
    let bag = BagReader::open(&dir).unwrap();
    let mut messages = bag.messages(&["/camera/image_raw"]).unwrap();
    for _ in 0..2 {
        messages.next_message().unwrap().unwrap().image().unwrap();
    }
    let mcap = dir.join("bag_0.mcap");
    let summary = mcap::Summary::read(&std::fs::read(&mcap).unwrap())
        .unwrap()
        .unwrap();
    let mut starts: Vec<u64> = summary
        .chunk_indexes
        .iter()
        .map(|c| c.chunk_start_offset)
        .collect();
    starts.sort();
    let cut = starts[3] + 100;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&mcap)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let mut read = 0;
    let error = loop {
        match messages.next_message() {
            Some(Ok(m)) => {
                m.image().unwrap();
                read += 1;
            }
            Some(Err(e)) => break format!("{e:#}"),
            None => panic!("a truncated bag read to its end"),
        }
    };
    assert_eq!(read, 1, "the third chunk was whole");
    assert!(
        error.contains(&format!("reading the chunk at byte {}", starts[3])),
        "{error}"
    );
    assert!(messages.next_message().is_none(), "the stream ends");
}

/// A random tiny detector, a threshold file and `stars run` arguments around them.
struct RunSetup {
    tmp: tempfile::TempDir,
}

impl RunSetup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        support::random_detector_checkpoint(&tmp.path().join("ckpt"));
        support::threshold_file(&tmp.path().join("threshold.yaml"), 0.5);
        Self { tmp }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.tmp.path().join(name)
    }

    /// `stars run` arguments over `bag` into `out` with `detector`.
    fn args(&self, bag: &Path, out: &Path, detector: &Path) -> Vec<String> {
        let config = support::repo().join("config/stars.yaml");
        [
            "run",
            "--bag",
            s(bag),
            "--out",
            s(out),
            "--detector",
            s(detector),
            "--random-weights",
            "--threshold",
            s(&self.path("threshold.yaml")),
            "--config",
            s(&config),
            "--rate",
            "max",
        ]
        .map(String::from)
        .to_vec()
    }

    fn run(&self, bag: &Path, out: &Path, detector: &Path) -> Output {
        let args = self.args(bag, out, detector);
        stars(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Topic message counts of the bag at `dir` as its metadata states them, after checking that
/// the MCAP holds exactly that many readable messages.
fn readable_counts(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let bag = BagReader::open(dir).unwrap();
    let mut messages = bag.messages(&[]).unwrap();
    let mut read = 0;
    while let Some(m) = messages.next_message() {
        m.unwrap();
        read += 1;
    }
    assert_eq!(read, bag.info().message_count, "metadata vs MCAP");
    bag.info()
        .topics_with_message_count
        .iter()
        .map(|t| (t.topic_metadata.name.clone(), t.message_count))
        .collect()
}

/// A chunk of the input bag is corrupt mid-run: everything before it is processed and in a
/// valid, readable output bag; the one error line names the chunk's byte offset.
#[test]
fn corrupt_input_chunk_mid_run_keeps_the_output_and_names_the_offset() {
    let setup = RunSetup::new();
    let bag = setup.path("bag");
    support::camera_bag(&bag, 5, (32, 24), true);
    let (chunk_offset, _) = support::corrupt_last_chunk(&bag.join("bag_0.mcap"));
    let out = setup.path("out");
    let run = setup.run(&bag, &out, &setup.path("ckpt"));
    assert_clean_error(&run, &format!("reading the chunk at byte {chunk_offset}"));
    let counts = readable_counts(&out);
    for topic in [
        topics::CAMERA,
        topics::DETECTOR_MAP,
        topics::REFINED_MAP,
        topics::REFINED_OVERLAY,
    ] {
        assert_eq!(counts[topic], 4, "{topic}");
    }
    // rosbags reads the output too (the output stands in for the input, which is corrupt).
    if let Some(py) = support::python() {
        let report = support::run_python(&py, "node_run_check.py", &[s(&out), s(&out)]);
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(report["topics"][topics::REFINED_MAP]["count"], 4);
    }
}

/// The output disk fills up (the process may write only `limit` bytes per file; SIGXFSZ is
/// ignored so a write past it fails with EFBIG, as on a full disk): the replay stops at the
/// first failed write with one error line saying how far it got, and no metadata.yaml claims
/// messages the MCAP does not hold.
#[test]
fn output_disk_full_is_a_clear_error_without_lying_metadata() {
    let setup = RunSetup::new();
    let bag = setup.path("bag");
    // Frames large enough that the output passes the limit within the first few frames.
    let frames = 40;
    support::camera_bag(&bag, frames, (160, 120), false);
    let out = setup.path("out");
    let limit_kib = 256;
    let run = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_stars"))
        .args(setup.args(&bag, &out, &setup.path("ckpt")))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_clean_error(&run, "File too large");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let line = stderr.lines().find(|l| l.starts_with("stars: ")).unwrap();
    assert!(line.contains("no metadata.yaml was written"), "{line}");
    // "the replay stopped after F of 40 frames": it stopped at the failure, not at the end.
    let fed: u64 = line
        .split("the replay stopped after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in {line:?}"));
    assert!(
        fed > 0 && fed < frames,
        "{fed} of {frames} frames fed: {line}"
    );
    // Once as the recorder's stage warning, once in the error line; not once per message.
    assert!(
        stderr.matches("File too large").count() <= 2,
        "the failure is reported once: {stderr}"
    );
    let mcap_len = std::fs::metadata(out.join("out_0.mcap")).unwrap().len();
    assert!(mcap_len <= limit_kib * 1024, "{mcap_len} bytes");
    assert!(
        !out.join("metadata.yaml").exists(),
        "an unfinished MCAP has no metadata claiming its messages"
    );
}

/// A checkpoint missing at start-up, or weights replaced by garbage: one error line before
/// any frame is consumed (no output bag is started).
#[test]
fn missing_or_garbage_weights_fail_before_any_frame() {
    let setup = RunSetup::new();
    let bag = setup.path("bag");
    support::camera_bag(&bag, 2, (32, 24), false);
    let out = setup.path("out");
    assert_clean_error(
        &setup.run(&bag, &out, &setup.path("no_such_checkpoint")),
        "no_such_checkpoint",
    );
    assert!(!out.exists());

    let garbage = setup.path("garbage");
    support::random_detector_checkpoint(&garbage);
    std::fs::write(
        garbage.join(stars::model::flowclas::DETECTOR_WEIGHTS),
        b"\x10\x00\x00\x00\x00\x00\x00\x00not safetensors at all",
    )
    .unwrap();
    assert_clean_error(&setup.run(&bag, &out, &garbage), "detector.safetensors");
    assert!(!out.exists());

    let backbone = setup.path("backbone.safetensors");
    std::fs::write(&backbone, vec![0xa5u8; 4096]).unwrap();
    let mut args = setup.args(&bag, &out, &setup.path("ckpt"));
    args.retain(|a| a != "--random-weights");
    args.extend(["--backbone-weights".into(), s(&backbone).into()]);
    let run = stars(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_clean_error(&run, "backbone.safetensors");
    assert!(!out.exists());
}
