//! STARS refiner latency per frame on CPU at the `small` preset (ViT-S features, 64x64 fused)
//! on a 320x180 map (the `small` synthetic preset), streamed through the `TemporalMethod`
//! (one frame encoding + one temporal window per frame), and the window forward alone.
//!
//! ```text
//! cargo bench --bench refiner
//! ```
//! Weights are seeded random: latency does not depend on their values.
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use stars::model::stars::{seeded_init, Config, StarsRefiner, WINDOW};
use stars::temporal::stars::Stars;
use stars::temporal::{AnomalyMap, Frame, PatchFeatures, TemporalMethod};

const FRAME: (usize, usize) = (180, 320);

fn refiner(c: &mut Criterion) {
    let dev = Device::Cpu;
    let cfg = Config::small();
    let vars = VarMap::new();
    let model = StarsRefiner::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev)).unwrap();
    seeded_init(&vars, 0).unwrap();
    let (h, w) = FRAME;
    let (gh, gw) = (h.div_ceil(14), w.div_ceil(14));
    let maps = Tensor::rand(0f32, 1f32, (1, WINDOW, h, w), &dev).unwrap();
    let feats = Tensor::randn(0f32, 1f32, (1, WINDOW, cfg.feature_channels, gh, gw), &dev).unwrap();

    let mut group = c.benchmark_group("refiner_small_320x180");
    group.sample_size(10);
    group.bench_function("window_forward_3_encodings", |b| {
        b.iter(|| model.forward_t(&maps, Some(&feats), false).unwrap())
    });
    let mut method = Stars::new(model.clone());
    let map: Vec<f32> = maps
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let features: Vec<f32> = feats
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let frame = Frame {
        stamp_ns: 0,
        map: AnomalyMap::new(w, h, map).unwrap(),
        features: Some(PatchFeatures::new(cfg.feature_channels, gh, gw, features).unwrap()),
    };
    group.bench_function("streamed_frame", |b| {
        b.iter(|| method.step(&frame).unwrap())
    });
    group.finish();
}

criterion_group!(benches, refiner);
criterion_main!(benches);
