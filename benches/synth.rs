//! Render time of one synthetic frame (image + exact mask) at the `small` and `paper` sizes.
//!
//! `cargo bench --bench synth`; RAYON_NUM_THREADS=2 pins the thread count (numbers in docs/synth.md).
use criterion::{criterion_group, criterion_main, Criterion};
use stars::data::synth::{Preset, SynthConfig, World};

fn render_one_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("synth_frame");
    group.sample_size(10);
    for preset in [Preset::Small, Preset::Paper] {
        let cfg = SynthConfig::preset(preset, 0);
        let world = World::new(&cfg);
        // An anomalous train sequence (walk) and a test sequence (arc): both kinds of view.
        for split in ["train", "test"] {
            let plan = cfg
                .plan()
                .into_iter()
                .find(|p| p.split == split && p.anomalous)
                .expect("every preset has anomalous sequences in each split");
            let seq = world.sequence(&plan);
            group.bench_function(format!("{}_{split}", preset.name()), |b| {
                b.iter(|| seq.render_frame(5))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, render_one_frame);
criterion_main!(benches);
