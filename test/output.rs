//! How the `stars` command writes: a full disk or a closed pipe on stdout never panics, and an
//! error stays one line whatever RUST_BACKTRACE says.
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

#[test]
fn a_full_stdout_is_a_one_line_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let bag = small_bag(tmp.path());
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full exists on Linux");
    let out = Command::new(env!("CARGO_BIN_EXE_stars"))
        .args(["bag", "info", bag.to_str().unwrap()])
        .stdout(full)
        .output()
        .unwrap();
    support::assert_clean_error(&out, "writing to standard output");
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let bag = small_bag(tmp.path());
    // The reading end is closed before the command starts, so every write meets EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_stars"))
        .args(["bag", "info", bag.to_str().unwrap()])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.is_empty(), "a closed pipe is not an error: {stderr}");
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
