//! How the `stars` command writes: a full disk or a closed pipe on stdout never panics (one
//! line and exit 2, or a quiet exit 0), and an error stays one line whatever RUST_BACKTRACE says.
mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use image::{Rgb, RgbImage};

/// A one-sequence bag with three frames, made by `stars bag from-tallo`.
fn small_bag(root: &Path) -> std::path::PathBuf {
    let seq = root.join("test/cam00_seq000/frames");
    std::fs::create_dir_all(&seq).unwrap();
    for i in 0..3u32 {
        RgbImage::from_fn(16, 8, |x, y| {
            Rgb([(x * 9) as u8, (y * 20) as u8, (i * 50) as u8])
        })
        .save(seq.join(format!("{i:03}.png")))
        .unwrap();
    }
    let bag = root.join("bag");
    let split = root.join("test");
    support::assert_success(&support::stars(&[
        "bag",
        "from-tallo",
        split.to_str().unwrap(),
        "--out",
        bag.to_str().unwrap(),
    ]));
    bag
}

/// A one-frame training split with a hard-negative square (mask id 10), for the detector verbs.
fn small_split(root: &Path) -> std::path::PathBuf {
    let seq = root.join("train/seq00");
    for sub in ["frames", "masks"] {
        std::fs::create_dir_all(seq.join(sub)).unwrap();
    }
    let inside = |x: u32, y: u32| (4..12).contains(&x) && (4..12).contains(&y);
    RgbImage::from_fn(28, 28, |x, y| match inside(x, y) {
        true => Rgb([200, 30, 90]),
        false => Rgb([(x * 5) as u8, (y * 5) as u8, 60]),
    })
    .save(seq.join("frames/000.png"))
    .unwrap();
    image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([if inside(x, y) { 10 } else { 0 }])
    })
    .save(seq.join("masks/000.png"))
    .unwrap();
    root.join("train")
}

/// Runs `stars ARGS` with stdout on `stdout`.
fn run_into(args: &[&str], stdout: impl Into<Stdio>) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stars"))
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// `stars ARGS > /dev/full` is a one-line error with exit 2; with a closed pipe on stdout the
/// command ends quietly with exit 0.
fn check_stdout_handling(args: &[&str]) {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full exists on Linux");
    let out = run_into(args, full);
    support::assert_clean_error(&out, "writing to standard output");
    // The reading end is closed before the command starts, so every write meets EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = run_into(args, writer);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    assert!(
        !stderr.contains("stars:") && !stderr.contains("panicked"),
        "{args:?}: a closed pipe is not an error: {stderr}"
    );
}

#[test]
fn bag_info_on_a_full_disk_or_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let bag = small_bag(tmp.path());
    check_stdout_handling(&["bag", "info", bag.to_str().unwrap()]);
}

#[test]
fn models_list_on_a_full_disk_or_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    check_stdout_handling(&["models", "list", "--cache", tmp.path().to_str().unwrap()]);
}

#[test]
fn train_and_detect_on_a_full_disk_or_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let split = small_split(tmp.path());
    let (split, ckpt, pred) = (
        split.to_str().unwrap(),
        tmp.path().join("ckpt"),
        tmp.path().join("pred"),
    );
    let (ckpt, pred) = (ckpt.to_str().unwrap(), pred.to_str().unwrap());
    let train = [
        "train",
        "detector",
        "--data",
        split,
        "--out",
        ckpt,
        "--preset",
        "tiny",
        "--epochs",
        "0",
        "--random-weights",
    ];
    check_stdout_handling(&train);
    let detect = [
        "detect",
        "--checkpoint",
        ckpt,
        "--data",
        split,
        "--out",
        pred,
        "--random-weights",
    ];
    check_stdout_handling(&detect);
}

#[test]
fn an_error_stays_one_line_with_rust_backtrace_set() {
    let tmp = tempfile::tempdir().unwrap();
    // Not a safetensors file: candle's loader fails, and candle attaches a backtrace to its
    // errors when RUST_BACKTRACE is set.
    let weights = tmp.path().join("model.safetensors");
    std::fs::write(&weights, b"this is not a safetensors file").unwrap();
    let image = tmp.path().join("frame.png");
    RgbImage::from_pixel(28, 28, Rgb([1, 2, 3]))
        .save(&image)
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stars"))
        .args([
            "features",
            "--image",
            image.to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
            "--out",
            tmp.path().join("f.npy").to_str().unwrap(),
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    support::assert_clean_error(&out, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
}
