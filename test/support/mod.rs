//! Helpers shared by the integration tests: the `stars` binary, scratch folders, and the Python
//! reference tooling (rosbags, mcap, scikit-learn, scipy) installed by `scripts/test.sh`.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `stars` binary with `args` and returns its output.
pub fn stars(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stars"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the stars binary runs")
}

/// Asserts that `out` failed with exit code 2 and one `stars: ...` error line mentioning `needle`,
/// without a panic.
pub fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("stars: "))
        .unwrap_or_else(|| panic!("no `stars:` error line in: {stderr}"));
    assert!(
        line.contains(needle),
        "error line {line:?} does not mention {needle:?}"
    );
}

/// The Python interpreter of the test venv (`.venv/`, made by `scripts/test.sh`) or `$STARS_PYTHON`.
///
/// Returns `None` when there is none, so a plain `cargo test` on a machine without the venv
/// still runs the Rust-only tests; `scripts/test.sh` (and so CI) sets `STARS_REQUIRE_PYTHON=1`,
/// which turns a missing interpreter into a failure.
pub fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("STARS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    if candidate.exists() {
        return Some(candidate);
    }
    if std::env::var_os("STARS_REQUIRE_PYTHON").is_some() {
        panic!(
            "no Python test venv at {}: run scripts/test.sh",
            candidate.display()
        );
    }
    skip("no Python test venv; run scripts/test.sh");
    None
}

/// Reports the calling test as skipped: one `SKIPPED <test>: <why>` line written straight to
/// the process's stderr, so it shows in a plain `cargo test` (which captures `eprintln!` of
/// passing tests). The caller then returns early; libtest itself has no "skipped" outcome.
pub fn skip(why: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Runs `script` (a file under `test/fixtures/`) with the test venv's Python; panics with its
/// stderr if it fails. Returns stdout.
pub fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg(repo().join("test/fixtures").join(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Asserts that a command succeeded, showing its stderr when it did not.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True where a ROS 2 is sourced (`ros2` runs), so replay checks with `ros2 bag play` can run.
pub fn ros2_sourced() -> bool {
    std::env::var_os("AMENT_PREFIX_PATH").is_some_and(|p| !p.is_empty())
        && Command::new("ros2")
            .arg("--help")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// With ROS 2 sourced: `ros2 bag play` of `bag` into reliable rclpy subscribers (run by
/// `/usr/bin/python3`, see `test/fixtures/ros2_replay_check.py`); returns its JSON report, or
/// `None` (after reporting the skip) where no ROS 2 is sourced.
pub fn ros2_replay(bag: &Path) -> Option<serde_json::Value> {
    if !ros2_sourced() {
        skip("no ROS 2 sourced (source a ROS 2 Jazzy setup.bash to run it)");
        return None;
    }
    // A domain of its own, so other ROS 2 processes on this machine neither see nor feed it.
    let domain = 10 + std::process::id() % 90;
    let out = Command::new("/usr/bin/python3")
        .arg(repo().join("test/fixtures/ros2_replay_check.py"))
        .args([bag.to_str().expect("utf-8 path"), "60"])
        .env("ROS_DOMAIN_ID", domain.to_string())
        .output()
        .expect("/usr/bin/python3 runs");
    assert!(
        out.status.success(),
        "ros2_replay_check.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the replay check prints JSON"))
}

/// Saves a tiny FlowCLAS detector with random (untrained) weights in `dir`, on the tiny random
/// backbone's features at block 0: the cheapest real checkpoint `stars run` accepts.
pub fn random_detector_checkpoint(dir: &Path) {
    use stars::model::flowclas;
    let vars = candle_nn::VarMap::new();
    let cfg = flowclas::Config::tiny();
    let state = flowclas::FlowState::new(&cfg, 0);
    let vb = candle_nn::VarBuilder::from_varmap(
        &vars,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    flowclas::FlowClas::new(&cfg, &state, vb).expect("the tiny detector builds");
    let meta = flowclas::CheckpointMeta {
        config: cfg,
        state,
        backbone_arch: "tiny".into(),
        backbone_weights: "random (test)".into(),
        backbone_blocks: Some(0),
        step: 0,
        epoch: 0,
        training: serde_json::Value::Null,
    };
    flowclas::save(dir, &vars, &meta).expect("the checkpoint saves");
}

/// A bag at `dir` of `frames` `width` x `height` rgb8 camera frames, 100 ms apart from
/// 2026-01-01T00:00:00Z, each in a chunk of its own when `chunk_per_frame` (a 4.4 MB mask after
/// each frame closes the chunk).
pub fn camera_bag(dir: &Path, frames: u64, (width, height): (u32, u32), chunk_per_frame: bool) {
    use stars::bag::{BagWriter, Qos};
    use stars::msg::{Encoding, Header, Image, Message, Time};
    const T0: u64 = 1_767_225_600_000_000_000;
    let mut bag = BagWriter::create(dir).expect("the bag is created");
    bag.add_topic("/camera/image_raw", Image::TYPE, Qos::sensor_data())
        .expect("a topic");
    if chunk_per_frame {
        bag.add_topic("/tallo/gt_mask", Image::TYPE, Qos::sensor_data())
            .expect("a topic");
    }
    for k in 0..frames {
        let t = T0 + k * 100_000_000;
        let header = Header {
            stamp: Time::from_nanos(t),
            frame_id: "cam".into(),
        };
        let data = (0..width * height * 3)
            .map(|i| (i as u64 * 7 + k) as u8)
            .collect();
        let frame = Image::packed(header.clone(), width, height, Encoding::Rgb8, data);
        bag.write("/camera/image_raw", t, &frame).expect("a frame");
        if chunk_per_frame {
            let mask = Image::packed(header, 2100, 2100, Encoding::Mono8, vec![0; 2100 * 2100]);
            bag.write("/tallo/gt_mask", t + 1, &mask).expect("a mask");
        }
    }
    bag.finish().expect("the bag finishes");
}

/// Writes a threshold file for the alert node at `path`.
pub fn threshold_file(path: &Path, threshold: f64) {
    stars::eval::calibrate::Threshold {
        threshold,
        tpr: 0.95,
        fpr: 0.1,
        bins: 100,
        source: "test".into(),
    }
    .save(path)
    .expect("the threshold file saves");
}

/// Makes the first message record of the MCAP's last chunk claim a length that runs off the
/// chunk (the chunk is corrupt mid-file); returns that chunk's byte offset and the number of
/// chunks.
pub fn corrupt_last_chunk(mcap_path: &Path) -> (u64, usize) {
    let mut bytes = std::fs::read(mcap_path).unwrap();
    let summary = mcap::Summary::read(&bytes).unwrap().unwrap();
    let last = summary
        .chunk_indexes
        .iter()
        .max_by_key(|c| c.message_start_time)
        .unwrap();
    let records = last.compressed_data_offset().unwrap() as usize;
    bytes[records + 1..records + 9].fill(0xff);
    std::fs::write(mcap_path, bytes).unwrap();
    (last.chunk_start_offset, summary.chunk_indexes.len())
}
