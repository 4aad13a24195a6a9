//! Bag write and read throughput: 1920x1080 rgb8 frames (bytes/s), and small alert-status
//! messages (messages/s, where per-message overhead dominates).
//!
//! `cargo bench --bench bag` (or `--profile dev` to reuse the dev build's optimised
//! dependencies). The read bags are left in `target/bag-bench/{frames_1080p,alerts}` so
//! `bench/bag_read_rosbags.py` can time `rosbags` on the same files (see docs/bag.md).
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stars::bag::{BagReader, BagWriter, Qos};
use stars::msg::{DiagnosticArray, DiagnosticStatus, Header, Image, KeyValue, Message, Time};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;
const FRAMES: u64 = 30;
const TOPIC: &str = "/camera/image_raw";

fn frames() -> Vec<Image> {
    (0..FRAMES)
        .map(|k| {
            let data = (0..WIDTH as usize * HEIGHT as usize * 3)
                .map(|i| (i as u64 * 2_654_435_761 + k) as u8)
                .collect();
            let header = Header {
                stamp: Time::from_nanos(k * 100_000_000),
                frame_id: "camera".into(),
            };
            Image {
                header,
                height: HEIGHT,
                width: WIDTH,
                encoding: stars::msg::Encoding::Rgb8,
                is_bigendian: false,
                step: WIDTH * 3,
                data,
            }
        })
        .collect()
}

fn write_bag(dir: &Path, frames: &[Image]) {
    let mut bag = BagWriter::create_with(dir, true).unwrap();
    bag.add_topic(TOPIC, <Image as Message>::TYPE, Qos::sensor_data())
        .unwrap();
    for (k, f) in frames.iter().enumerate() {
        bag.write(TOPIC, k as u64 * 100_000_000, f).unwrap();
    }
    bag.finish().unwrap();
}

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bag-bench")
}

fn bag_throughput(c: &mut Criterion) {
    let frames = frames();
    let bytes = FRAMES * u64::from(WIDTH * HEIGHT * 3);
    let mut group = c.benchmark_group("bag_1080p_rgb8");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);

    let write_dir = bench_dir().join("write");
    group.bench_function("write", |b| b.iter(|| write_bag(&write_dir, &frames)));

    let read_dir = bench_dir().join("frames_1080p");
    write_bag(&read_dir, &frames);
    group.bench_function("read_decode", |b| {
        b.iter(|| {
            let bag = BagReader::open(&read_dir).unwrap();
            let mut messages = bag.messages(&[]).unwrap();
            let mut total = 0;
            while let Some(m) = messages.next_message() {
                let image: Image = m.unwrap().decode().unwrap();
                total += image.data.len();
            }
            assert_eq!(total as u64, bytes);
            black_box(total)
        })
    });
    group.bench_function("read_view", |b| {
        b.iter(|| {
            let bag = BagReader::open(&read_dir).unwrap();
            let mut messages = bag.messages(&[]).unwrap();
            let mut total = 0;
            while let Some(m) = messages.next_message() {
                let m = m.unwrap();
                total += m.image().unwrap().data.len();
            }
            assert_eq!(total as u64, bytes);
            black_box(total)
        })
    });
    group.bench_function("read_raw", |b| {
        b.iter(|| {
            let bag = BagReader::open(&read_dir).unwrap();
            let mut messages = bag.messages(&[]).unwrap();
            let mut total = 0;
            while let Some(m) = messages.next_message() {
                total += m.unwrap().data.len();
            }
            black_box(total)
        })
    });
    group.finish();
}

const ALERTS: u64 = 20_000;

/// An alert status as the alert node publishes it, one per frame.
fn alert(k: u64) -> DiagnosticArray {
    let kv = |key: &str, value: String| KeyValue {
        key: key.into(),
        value,
    };
    DiagnosticArray {
        header: Header {
            stamp: Time::from_nanos(k * 33_333_333),
            frame_id: "camera".into(),
        },
        status: vec![DiagnosticStatus {
            level: DiagnosticStatus::OK,
            name: "stars/alert".into(),
            message: "clear".into(),
            hardware_id: "camera".into(),
            values: vec![
                kv("score", format!("{:.4}", (k % 100) as f32 / 100.0)),
                kv("threshold", "0.5123".into()),
                kv("area_px", (k % 977).to_string()),
                kv("bbox", "0 0 0 0".into()),
            ],
        }],
    }
}

fn small_message_throughput(c: &mut Criterion) {
    let dir = bench_dir().join("alerts");
    let mut bag = BagWriter::create_with(&dir, true).unwrap();
    bag.add_topic(
        "/stars/alert/status",
        DiagnosticArray::TYPE,
        Qos::reliable(),
    )
    .unwrap();
    for k in 0..ALERTS {
        bag.write("/stars/alert/status", k * 33_333_333, &alert(k))
            .unwrap();
    }
    bag.finish().unwrap();

    let mut group = c.benchmark_group("bag_alert_status");
    group.throughput(Throughput::Elements(ALERTS));
    group.sample_size(10);
    group.bench_function("read_decode", |b| {
        b.iter(|| {
            let bag = BagReader::open(&dir).unwrap();
            let mut messages = bag.messages(&[]).unwrap();
            let mut n = 0;
            while let Some(m) = messages.next_message() {
                let status: DiagnosticArray = m.unwrap().decode().unwrap();
                n += status.status.len();
            }
            assert_eq!(n as u64, ALERTS);
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, bag_throughput, small_message_throughput);
criterion_main!(benches);
