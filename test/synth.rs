//! `stars synth` end to end on the tiny preset: determinism, layout, exact masks, split camera
//! sets, anomaly placement, hard negatives, trajectories, and errors for bad input.
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use stars::data::meta::SequenceMeta;
use stars::data::synth::raycast::Hit;
use stars::data::synth::scene::ids;
use stars::data::synth::{Preset, SynthConfig, World};
use stars::data::tallo::{list_sequences, Sequence};
use support::{assert_clean_error, stars};

const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Runs `stars synth` with a rayon thread count (results must not depend on it).
fn synth(out: &Path, threads: usize, extra: &[&str]) {
    let out_s = out.to_str().unwrap();
    let mut args = vec!["synth", "--preset", "tiny", "--out", out_s];
    args.extend_from_slice(extra);
    let status = Command::new(env!("CARGO_BIN_EXE_stars"))
        .args(&args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .expect("stars runs");
    assert!(
        status.status.success(),
        "stars synth failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// The tiny preset, generated once for the tests that only read it.
fn tiny() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        synth(&dir.path().join("data"), 2, &[]);
        dir
    })
    .path()
}

fn sequences(split: &str) -> Vec<(Sequence, SequenceMeta)> {
    list_sequences(&tiny().join("data").join(split))
        .unwrap()
        .into_iter()
        .map(|s| {
            let meta = s.meta().unwrap().expect("every sequence has meta.json");
            (s, meta)
        })
        .collect()
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// World point -> (u, v, depth) in a frame of `meta` (rotation is camera-to-world, row-major).
fn project(meta: &SequenceMeta, k: usize, p: [f64; 3]) -> Option<(f64, f64, f64)> {
    let f = &meta.frames[k];
    let d: Vec<f64> = (0..3).map(|i| p[i] - f.position[i]).collect();
    // p_cam = R^T d
    let c: Vec<f64> = (0..3)
        .map(|j| (0..3).map(|i| f.rotation[i][j] * d[i]).sum())
        .collect();
    if c[2] <= 0.0 {
        return None;
    }
    let k = &meta.intrinsics;
    Some((k.fx * c[0] / c[2] + k.cx, k.fy * c[1] / c[2] + k.cy, c[2]))
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn same_seed_gives_byte_identical_files_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    synth(&a, 1, &["--seed", "5"]);
    synth(&b, 3, &["--seed", "5"]);
    synth(&c, 2, &["--seed", "6"]);
    let files = files_under(&a);
    assert_eq!(files, files_under(&b));
    assert_eq!(files.len(), 3 * 4 * (2 * 10 + 1));
    for f in &files {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{} differs between two runs with the same seed",
            f.display()
        );
    }
    // Another seed is another dataset.
    let frame = Path::new("test/cam00_seq000_clean/frames/000.png");
    assert_ne!(
        std::fs::read(a.join(frame)).unwrap(),
        std::fs::read(c.join(frame)).unwrap()
    );
}

#[test]
fn layout_is_tallo_with_ten_frames_and_masks_per_sequence() {
    for split in SPLITS {
        let seqs = sequences(split);
        assert_eq!(seqs.len(), 4, "{split}");
        assert_eq!(
            seqs.iter().filter(|(_, m)| m.anomaly.is_some()).count(),
            2,
            "{split}: half anomalous"
        );
        for (seq, meta) in &seqs {
            assert_eq!(seq.frames.len(), 10);
            assert_eq!(meta.frames.len(), 10);
            assert_eq!(meta.split, split);
            assert_eq!(meta.sequence_id, seq.id);
            for i in 0..10 {
                assert_eq!(seq.load_image(i).unwrap().dimensions(), (128, 72));
                let mask = seq.load_mask(i).unwrap();
                assert!(mask.pixels().all(|p| p.0[0] <= ids::HARD_NEGATIVE));
            }
        }
    }
}

#[test]
fn masks_are_the_labels_of_the_first_object_each_pixel_ray_hits() {
    // The renderer picks candidates per pixel from screen-space bounds; the mask must equal
    // an independent nearest-hit query through the BVH for every pixel of real station frames.
    let cfg = SynthConfig::preset(Preset::Tiny, 0);
    let world = World::new(&cfg);
    for plan in cfg.plan().iter().step_by(3) {
        let seq = world.sequence(plan);
        for k in [0, 9] {
            let (_, mask) = seq.render_frame(k);
            let cam = &seq.cameras[k];
            let mut station_pixels = 0;
            for (x, y, m) in mask.enumerate_pixels() {
                let ray = cam.ray(x as f64 + 0.5, y as f64 + 0.5);
                let expected = match seq.scene.intersect(&ray) {
                    None => ids::SPACE,
                    Some(Hit::Earth { .. }) => ids::EARTH,
                    Some(Hit::Object { index, .. }) => seq.scene.objects[index].label,
                };
                assert_eq!(
                    m.0[0],
                    expected,
                    "{} frame {k} pixel ({x},{y})",
                    plan.sequence_id()
                );
                station_pixels += usize::from((2..=8).contains(&expected));
            }
            assert!(station_pixels > 500, "the camera looks at the station");
        }
    }
}

#[test]
fn splits_use_disjoint_camera_positions() {
    let mut seen: Vec<(BTreeSet<u32>, Vec<[f64; 3]>)> = Vec::new();
    for split in SPLITS {
        let seqs = sequences(split);
        let cams: BTreeSet<u32> = seqs.iter().map(|(_, m)| m.camera_id).collect();
        let starts: Vec<[f64; 3]> = seqs.iter().map(|(_, m)| m.frames[0].position).collect();
        for (other_cams, other_starts) in &seen {
            assert!(cams.is_disjoint(other_cams), "{split} shares cameras");
            for a in &starts {
                for b in other_starts {
                    assert!(
                        dist(*a, *b) > 0.1,
                        "{split} starts where another split does"
                    );
                }
            }
        }
        seen.push((cams, starts));
    }
    // TALLO's test cameras come first.
    assert_eq!(seen[2].0, BTreeSet::from([0, 1]));
}

#[test]
fn anomalies_stay_put_and_show_where_projected_and_clean_masks_have_none() {
    let (mut frames_with_anomaly, mut anomalous_frames) = (0, 0);
    for split in SPLITS {
        for (seq, meta) in sequences(split) {
            let anomaly_pixels: Vec<Vec<(u32, u32)>> = (0..10)
                .map(|i| {
                    let mask = seq.load_mask(i).unwrap();
                    mask.enumerate_pixels()
                        .filter(|p| p.2 .0[0] == ids::ANOMALY)
                        .map(|p| (p.0, p.1))
                        .collect()
                })
                .collect();
            let Some(anomaly) = &meta.anomaly else {
                assert!(
                    anomaly_pixels.iter().all(Vec::is_empty),
                    "{}: clean sequence with anomaly pixels",
                    seq.id
                );
                continue;
            };
            assert!(["blanket", "cable", "tool", "satellite"].contains(&anomaly.class.as_str()));
            let mut shown = 0;
            for (k, pixels) in anomaly_pixels.iter().enumerate() {
                anomalous_frames += 1;
                if pixels.is_empty() {
                    continue;
                }
                shown += 1;
                // One world position for the whole sequence: its projection in each frame
                // lies within the projected bounding radius of the mask's centroid.
                let (u, v, depth) = project(&meta, k, anomaly.position).expect("in front");
                let n = pixels.len() as f64;
                let cu = pixels.iter().map(|p| p.0 as f64 + 0.5).sum::<f64>() / n;
                let cv = pixels.iter().map(|p| p.1 as f64 + 0.5).sum::<f64>() / n;
                let r = anomaly.radius * meta.intrinsics.fx / depth + 1.0;
                let off = ((cu - u).powi(2) + (cv - v).powi(2)).sqrt();
                assert!(off <= r, "{} frame {k}: mask centroid {off:.1} px from the projected centre (radius {r:.1})", seq.id);
            }
            frames_with_anomaly += shown;
            assert!(shown > 0, "{}: anomaly never visible", seq.id);
        }
    }
    assert!(
        frames_with_anomaly * 10 >= anomalous_frames * 7,
        "anomalies visible in only {frames_with_anomaly} of {anomalous_frames} frames"
    );
}

#[test]
fn hard_negatives_only_in_train_and_val_and_never_anomaly_classes() {
    let mut negatives = 0;
    for split in SPLITS {
        for (seq, meta) in sequences(split) {
            let labelled = (0..10).any(|i| {
                seq.load_mask(i)
                    .unwrap()
                    .pixels()
                    .any(|p| p.0[0] == ids::HARD_NEGATIVE)
            });
            if split == "test" {
                assert!(meta.hard_negatives.is_empty() && !labelled, "{}", seq.id);
            } else {
                negatives += meta.hard_negatives.len();
                // Placement keeps hard negatives in view: mask ids and meta.json agree.
                assert_eq!(labelled, !meta.hard_negatives.is_empty(), "{}", seq.id);
            }
            for h in &meta.hard_negatives {
                assert!(["box", "ellipsoid", "polyhedron"].contains(&h.class.as_str()));
                if let Some(a) = &meta.anomaly {
                    assert!(
                        dist(a.position, h.position) > a.radius + h.radius,
                        "{}",
                        seq.id
                    );
                }
            }
        }
    }
    assert!(
        negatives > 0,
        "the tiny preset has hard negatives somewhere"
    );
}

#[test]
fn walks_step_at_most_40cm_and_test_arcs_span_60_degrees_at_5m() {
    for split in SPLITS {
        for (seq, meta) in sequences(split) {
            let fixture = meta.fixture.expect("synthetic meta names its fixture");
            let ps: Vec<[f64; 3]> = meta.frames.iter().map(|f| f.position).collect();
            if split == "test" {
                assert!(meta.trajectory.starts_with("arc_"), "{}", seq.id);
                for p in &ps {
                    assert!((dist(*p, fixture) - 5.0).abs() < 1e-6, "{}", seq.id);
                }
                let a: Vec<f64> = (0..3).map(|i| ps[0][i] - fixture[i]).collect();
                let b: Vec<f64> = (0..3).map(|i| ps[9][i] - fixture[i]).collect();
                let cos = (0..3).map(|i| a[i] * b[i]).sum::<f64>() / 25.0;
                assert!((cos.acos().to_degrees() - 60.0).abs() < 1e-6, "{}", seq.id);
            } else {
                assert_eq!(meta.trajectory, "walk");
                for w in ps.windows(2) {
                    assert!(dist(w[0], w[1]) <= 0.4 + 1e-9, "{}", seq.id);
                }
                assert!(dist(ps[9], fixture) < dist(ps[0], fixture) + 1.0);
            }
            // The sun jitters from frame to frame (flicker), by a few degrees at most.
            for w in meta.frames.windows(2) {
                let cos: f64 = (0..3)
                    .map(|i| w[0].sun_direction[i] * w[1].sun_direction[i])
                    .sum();
                let deg = cos.min(1.0).acos().to_degrees();
                assert!(deg > 0.0 && deg < 15.0, "{}: sun moved {deg} deg", seq.id);
            }
        }
    }
}

#[test]
fn preview_is_a_contact_sheet_of_frames_and_masks() {
    let tmp = tempfile::tempdir().unwrap();
    // The preview's folder need not exist yet.
    let png = tmp.path().join("new/p.png");
    synth(
        &tmp.path().join("d"),
        2,
        &["--splits", "test", "--preview", png.to_str().unwrap()],
    );
    let sheet = image::open(&png).unwrap().to_rgb8();
    // Two test sequences, three frames each beside their masks: 160x90 tiles, 4 px gaps.
    assert_eq!(sheet.dimensions(), (6 * 164 + 4, 2 * (90 + 4) + 4));
    let fixture_colour = stars::viz::colormap::mask_colour(ids::GRAPPLE_FIXTURE);
    assert!(sheet.pixels().any(|p| *p == fixture_colour));
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    assert_clean_error(
        &stars(&["synth", "--preset", "huge", "--out", out]),
        "unknown preset \"huge\"",
    );
    assert_clean_error(
        &stars(&[
            "synth",
            "--preset",
            "tiny",
            "--splits",
            "train,tset",
            "--out",
            out,
        ]),
        "unknown split \"tset\"",
    );
    std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
    assert_clean_error(
        &stars(&["synth", "--preset", "tiny", "--out", out]),
        "is not empty",
    );
    // --force writes the splits and leaves other files alone.
    let ok = stars(&[
        "synth", "--preset", "tiny", "--splits", "val", "--out", out, "--force",
    ]);
    support::assert_success(&ok);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(list_sequences(&tmp.path().join("val")).unwrap().len(), 4);
}
