//! Throughput of the evaluation accumulator on 1920x1080 maps.
//!
//! `cargo bench --bench eval` measures, in pixels per second:
//! - `histogram`: the binned pass behind AUROC / AP / FPR@95 (one frame, T = 5000);
//! - `add_frame_with_aupro`: a whole `Evaluator::add_frame` on a frame with anomaly regions
//!   (histogram + 8-connected labelling of the anomaly bounding box + per-region pass);
//! - `add_frame_normal`: the same on a frame without anomaly (AUPRO has nothing to do).
//!
//! Memory: `STARS_EVAL_MEMORY_FRAMES=N cargo bench --bench eval` instead streams N frames
//! through one `Evaluator` and prints the process's peak RSS (VmHWM), so runs with 10 and 100
//! frames show whether memory grows with the number of frames (see bench/eval_memory.sh).
use criterion::{criterion_group, Criterion, Throughput};
use stars::eval::binned::{scan_frame, ClassTable, Histogram};
use stars::eval::{EvalConfig, Evaluator};

const W: usize = 1920;
const H: usize = 1080;
const BINS: usize = 5000;

/// xorshift64*: fast deterministic scores.
fn scores(seed: u64) -> Vec<f32> {
    let mut x = seed.max(1);
    (0..W * H)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// A mask with a few anomaly blobs (about 1% of the frame, TALLO-like) and an ignored border.
fn anomalous_mask() -> Vec<u8> {
    let mut mask = vec![3u8; W * H];
    for (cx, cy, r) in [
        (400, 300, 60),
        (520, 360, 40),
        (1500, 800, 80),
        (1000, 200, 25),
    ] {
        for y in cy - r..cy + r {
            for x in cx - r..cx + r {
                if (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r {
                    mask[y as usize * W + x as usize] = 9;
                }
            }
        }
    }
    for x in 0..W {
        mask[x] = 255;
        mask[(H - 1) * W + x] = 255;
    }
    mask
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn memory_run(frames: usize) {
    let mask = anomalous_mask();
    let mut eval = Evaluator::new(EvalConfig::default()).expect("default config is valid");
    let mut map = scores(1);
    for f in 0..frames {
        // New content per frame without keeping old frames alive.
        map.iter_mut()
            .step_by(97)
            .for_each(|s| *s = (*s + 0.37 * f as f32).fract());
        eval.add_frame(&map, W, H, &mask).expect("shapes match");
    }
    let m = eval.finish();
    println!(
        "frames {frames}: pixels {}, auroc {:.4}, aupro {:.4}, peak RSS {} KiB",
        m.counts.positive_pixels + m.counts.negative_pixels,
        m.auroc.unwrap_or(f64::NAN),
        m.aupro.unwrap_or(f64::NAN),
        peak_rss_kib().map_or("?".into(), |k| k.to_string())
    );
}

fn bench_eval(c: &mut Criterion) {
    let map = scores(7);
    let mask = anomalous_mask();
    let normal = vec![3u8; W * H];
    let classes = ClassTable::new(BINS, 9, 255);
    let mut group = c.benchmark_group("eval_1920x1080");
    group.throughput(Throughput::Elements((W * H) as u64));
    group.sample_size(20);
    group.bench_function("histogram", |b| {
        let mut hist = Histogram::new(BINS);
        b.iter(|| hist.add(&scan_frame(&map, &mask, BINS, &classes)))
    });
    group.bench_function("add_frame_with_aupro", |b| {
        let mut eval = Evaluator::new(EvalConfig::default()).expect("valid");
        b.iter(|| eval.add_frame(&map, W, H, &mask).expect("shapes match"))
    });
    group.bench_function("add_frame_normal", |b| {
        let mut eval = Evaluator::new(EvalConfig::default()).expect("valid");
        b.iter(|| eval.add_frame(&map, W, H, &normal).expect("shapes match"))
    });
    group.finish();
    let mut eval = Evaluator::new(EvalConfig::default()).expect("valid");
    eval.add_frame(&map, W, H, &mask).expect("shapes match");
    c.bench_function("finish_T5000", |b| b.iter(|| eval.finish()));
}

criterion_group!(benches, bench_eval);

fn main() {
    if let Some(frames) = std::env::var("STARS_EVAL_MEMORY_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        memory_run(frames);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
