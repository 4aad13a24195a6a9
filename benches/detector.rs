//! Detector latency on CPU (small preset: ViT-S features, 8 flow steps) and feature-cache
//! throughput, on a 320x180 frame (the `small` synthetic preset).
//!
//! ```text
//! cargo bench --bench detector
//! ```
//! The backbone has random weights: latency does not depend on the weights' values.
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image::{Rgb, RgbImage};
use stars::model::flowclas::{backbone, Config, FlowClas, FlowState};
use stars::train::cache::FeatureCache;

const FRAME: (u32, u32) = (320, 180);

fn frame(seed: u32) -> RgbImage {
    RgbImage::from_fn(FRAME.0, FRAME.1, |x, y| {
        let v = (x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed.wrapping_mul(7919)) % 256;
        Rgb([v as u8, (v / 2) as u8, 255 - v as u8])
    })
}

fn detector(c: &mut Criterion) {
    let dev = Device::Cpu;
    // all 12 blocks, as with pretrained weights (the random placeholder reads fewer)
    let extractor = backbone::open("vit_small", None, true, Some(12), &candle_core::Device::Cpu)
        .expect("random ViT-S");
    let cfg = Config::small();
    let mut state = FlowState::new(&cfg, 0);
    let vars = VarMap::new();
    let model = FlowClas::new(
        &cfg,
        &state,
        VarBuilder::from_varmap(&vars, DType::F32, &dev),
    )
    .unwrap();
    let embedded = extractor.embed(&frame(0)).unwrap();
    model
        .initialise_actnorm(&embedded.features, &mut state, &vars)
        .unwrap();

    let mut group = c.benchmark_group("detector_small_320x180");
    group.sample_size(10);
    group.bench_function("flow_and_map", |b| {
        b.iter(|| {
            model
                .anomaly_map(&embedded.features, embedded.padding)
                .unwrap()
        })
    });
    group.bench_function("frame_end_to_end", |b| {
        b.iter(|| {
            let e = extractor.embed(&frame(1)).unwrap();
            model.anomaly_map(&e.features, e.padding).unwrap()
        })
    });
    group.finish();

    let tmp = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(Some(tmp.path()));
    let mut group = c.benchmark_group("feature_cache_vit_small_320x180");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    let mut n = 0u32;
    group.bench_function("miss_embed_and_write", |b| {
        b.iter(|| {
            n += 1;
            let image = frame(n);
            cache
                .get_or_compute(&format!("bench {n}"), &dev, || {
                    let e = extractor.embed(&image)?;
                    let labels = Tensor::zeros(e.features.dims()[2..].to_vec(), DType::U8, &dev)?;
                    Ok((e.features.squeeze(0)?, labels))
                })
                .unwrap()
        })
    });
    group.bench_function("hit_read", |b| {
        b.iter(|| {
            cache
                .get_or_compute("bench 1", &dev, || unreachable!())
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, detector);
criterion_main!(benches);
