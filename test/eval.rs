//! Evaluation metrics against independent references (scikit-learn, a threshold-by-threshold
//! AUPRO with scipy's labelling), hand-made cases with known answers, and the `eval` /
//! `calibrate` verbs end to end.
mod support;

use std::path::Path;

use candle_core::{Device, Tensor};
use image::{GrayImage, RgbImage};
use serde_json::Value;
use stars::eval::calibrate::Threshold;
use stars::eval::{evaluate_dirs, EvalConfig, Evaluator, Metrics};
use support::{assert_clean_error, run_python, stars};

/// SplitMix64: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn cfg(bins: usize, exact: bool) -> EvalConfig {
    EvalConfig {
        bins,
        exact,
        ..EvalConfig::default()
    }
}

fn evaluate(frames: &[(Vec<f32>, Vec<u8>)], width: usize, cfg: EvalConfig) -> Metrics {
    let mut eval = Evaluator::new(cfg).unwrap();
    for (scores, mask) in frames {
        eval.add_frame(scores, width, scores.len() / width, mask)
            .unwrap();
    }
    eval.finish()
}

fn write_npy_f32(path: &Path, values: &[f32], shape: &[usize]) {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .write_npy(path)
        .unwrap();
}

fn write_npy_u8(path: &Path, values: &[u8], shape: &[usize]) {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .write_npy(path)
        .unwrap();
}

fn assert_close(name: &str, ours: Option<f64>, reference: f64, tol: f64) {
    let ours = ours.unwrap_or_else(|| panic!("{name} is undefined"));
    assert!(
        (ours - reference).abs() <= tol,
        "{name}: ours {ours} vs reference {reference} (tolerance {tol})"
    );
}

/// Scores quantised to `levels` values (ties), anomalies likelier at high scores, a few
/// ignored pixels and NaNs that both sides must leave out.
fn tied_frame(rng: &mut Rng, n: usize, levels: usize) -> (Vec<f32>, Vec<u8>) {
    let mut scores = Vec::with_capacity(n);
    let mut mask = Vec::with_capacity(n);
    for _ in 0..n {
        let s = rng.below(levels) as f32 / (levels - 1) as f32;
        let anomalous = rng.uniform() < 0.15 + 0.6 * s;
        let ignored = rng.uniform() < 0.05;
        scores.push(if rng.uniform() < 0.01 { f32::NAN } else { s });
        mask.push(if ignored {
            255
        } else if anomalous {
            9
        } else {
            3
        });
    }
    (scores, mask)
}

#[test]
fn exact_mode_equals_scikit_learn_with_ties() {
    let Some(py) = support::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (seed, levels) in [(1u64, 7usize), (2, 40), (3, 1000)] {
        let mut rng = Rng(seed);
        let frames: Vec<_> = (0..3).map(|_| tied_frame(&mut rng, 4000, levels)).collect();
        let metrics = evaluate(&frames, 100, cfg(5000, true));
        // The same samples for sklearn: finite and not ignored.
        let (scores, labels): (Vec<f32>, Vec<u8>) = frames
            .iter()
            .flat_map(|(s, m)| s.iter().zip(m))
            .filter(|(s, &m)| s.is_finite() && m != 255)
            .map(|(&s, &m)| (s, u8::from(m == 9)))
            .unzip();
        let (sp, lp) = (tmp.path().join("s.npy"), tmp.path().join("l.npy"));
        write_npy_f32(&sp, &scores, &[scores.len()]);
        write_npy_u8(&lp, &labels, &[labels.len()]);
        let out = run_python(
            &py,
            "sklearn_metrics.py",
            &[sp.to_str().unwrap(), lp.to_str().unwrap()],
        );
        let reference: Value = serde_json::from_str(&out).unwrap();
        for (name, ours) in [
            ("auroc", metrics.auroc),
            ("ap", metrics.ap),
            ("fpr95", metrics.fpr95),
        ] {
            let r = reference[name].as_f64().unwrap();
            assert_close(&format!("{name} (levels {levels})"), ours, r, 1e-6);
        }
        assert!(metrics.counts.non_finite_pixels > 0);
    }
}

#[test]
fn binned_mode_equals_the_authors_recipe_including_scores_on_thresholds() {
    let Some(py) = support::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // 7 levels k/6 on 13 thresholds k/12: many scores sit exactly on a threshold (>= counts
    // them). Levels 0-2 are only normal and 5-6 only anomalous, so runs of thresholds share a
    // recall while precision changes, and the tie order of the PR points matters.
    for (seed, levels, bins) in [(4u64, 7usize, 13usize), (5, 200, 5000)] {
        let mut rng = Rng(seed);
        let mut frame = tied_frame(&mut rng, 6000, levels);
        for (s, m) in frame.0.iter().zip(frame.1.iter_mut()) {
            let level = (s * (levels - 1) as f32).round() as usize;
            if *m != 255 && levels == 7 && level != 3 && level != 4 {
                *m = if level >= 5 { 9 } else { 0 };
            }
        }
        let metrics = evaluate(std::slice::from_ref(&frame), 100, cfg(bins, false));
        let (scores, labels): (Vec<f32>, Vec<u8>) = frame
            .0
            .iter()
            .zip(&frame.1)
            .filter(|(s, &m)| s.is_finite() && m != 255)
            .map(|(&s, &m)| (s, u8::from(m == 9)))
            .unzip();
        let (sp, lp) = (tmp.path().join("s.npy"), tmp.path().join("l.npy"));
        write_npy_f32(&sp, &scores, &[scores.len()]);
        write_npy_u8(&lp, &labels, &[labels.len()]);
        let out = run_python(
            &py,
            "binned_reference.py",
            &[
                sp.to_str().unwrap(),
                lp.to_str().unwrap(),
                &bins.to_string(),
            ],
        );
        let reference: Value = serde_json::from_str(&out).unwrap();
        for (name, ours) in [
            ("auroc", metrics.auroc),
            ("ap", metrics.ap),
            ("fpr95", metrics.fpr95),
        ] {
            let r = reference[name].as_f64().unwrap();
            assert_close(&format!("{name} (bins {bins})"), ours, r, 1e-9);
        }
    }
}

#[test]
fn binned_mode_is_within_2e3_of_exact_on_continuous_scores() {
    let mut rng = Rng(7);
    let frames: Vec<_> = (0..4)
        .map(|_| {
            let mut scores = Vec::new();
            let mut mask = Vec::new();
            for _ in 0..20_000 {
                let anomalous = rng.uniform() < 0.1;
                // Overlapping score distributions: anomalies skew high.
                let u = rng.uniform();
                scores.push(if anomalous { u.sqrt() } else { u * u });
                mask.push(if anomalous { 9 } else { 0 });
            }
            (scores, mask)
        })
        .collect();
    let binned = evaluate(&frames, 200, cfg(5000, false));
    let exact = evaluate(&frames, 200, cfg(5000, true));
    for (name, b, e) in [
        ("auroc", binned.auroc, exact.auroc),
        ("ap", binned.ap, exact.ap),
        ("fpr95", binned.fpr95, exact.fpr95),
    ] {
        assert_close(name, b, e.unwrap(), 2e-3);
    }
    // Not trivially equal: the two modes really compute differently.
    assert_ne!(binned.ap, exact.ap);
}

/// Frames with several blobs each (some touching only diagonally), an ignored stripe, and
/// scores that cover regions partially.
fn region_frames(rng: &mut Rng, count: usize, w: usize, h: usize) -> Vec<(Vec<f32>, Vec<u8>)> {
    (0..count)
        .map(|f| {
            let mut mask = vec![0u8; w * h];
            for _ in 0..3 + rng.below(4) {
                let (bw, bh) = (2 + rng.below(10), 2 + rng.below(8));
                let (x0, y0) = (rng.below(w - bw), rng.below(h - bh));
                for y in y0..y0 + bh {
                    for x in x0..x0 + bw {
                        mask[y * w + x] = 9;
                    }
                }
            }
            // Two pixels touching only at a corner: one region under 8-connectivity.
            mask[(h - 3) * w + 2] = 9;
            mask[(h - 2) * w + 3] = 9;
            for x in 0..w {
                mask[(f % h) * w + x] = 255;
            }
            let scores = mask
                .iter()
                .map(|&m| {
                    let noise = rng.uniform();
                    if m == 9 {
                        0.25 + 0.75 * noise
                    } else {
                        0.7 * noise * noise
                    }
                })
                .collect();
            (scores, mask)
        })
        .collect()
}

#[test]
fn aupro_equals_the_threshold_by_threshold_reference() {
    let Some(py) = support::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (w, h, n, bins) = (64, 48, 6, 300);
    let frames = region_frames(&mut Rng(11), n, w, h);
    let metrics = evaluate(&frames, w, cfg(bins, false));
    let scores: Vec<f32> = frames.iter().flat_map(|f| f.0.clone()).collect();
    let masks: Vec<u8> = frames.iter().flat_map(|f| f.1.clone()).collect();
    let (sp, mp) = (tmp.path().join("s.npy"), tmp.path().join("m.npy"));
    write_npy_f32(&sp, &scores, &[n, h, w]);
    write_npy_u8(&mp, &masks, &[n, h, w]);
    let out = run_python(
        &py,
        "aupro_reference.py",
        &[
            sp.to_str().unwrap(),
            mp.to_str().unwrap(),
            &bins.to_string(),
            "0.3",
        ],
    );
    let reference: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        metrics.counts.regions,
        reference["regions"].as_u64().unwrap(),
        "region counts differ"
    );
    assert!(metrics.counts.regions >= 3 * n as u64);
    let r = reference["aupro"].as_f64().unwrap();
    assert!(
        r > 0.05 && r < 0.95,
        "reference AUPRO {r} is not informative"
    );
    assert_close("aupro", metrics.aupro, r, 1e-9);
}

/// A 2-frame split: blobs of anomaly (id 9) on normal ids, one frame without anomaly.
fn toy_frames(score: impl Fn(u8, usize) -> f32) -> Vec<(Vec<f32>, Vec<u8>)> {
    let mut anomalous = vec![1u8; 100];
    for i in [11, 12, 21, 22, 77, 78, 87] {
        anomalous[i] = 9;
    }
    let normal = vec![2u8; 100];
    [anomalous, normal]
        .into_iter()
        .map(|m| (m.iter().enumerate().map(|(i, &v)| score(v, i)).collect(), m))
        .collect()
}

#[test]
fn perfect_detector() {
    // Continuous scores, anomalies all above normals.
    let frames = toy_frames(|m, i| {
        if m == 9 {
            0.8 + 0.002 * i as f32
        } else {
            0.3 * (i as f32 / 100.0)
        }
    });
    for exact in [false, true] {
        let m = evaluate(&frames, 10, cfg(5000, exact));
        assert_eq!(m.auroc, Some(1.0), "exact={exact}");
        assert_eq!(m.fpr95, Some(0.0));
        assert_eq!(m.aupro, Some(1.0));
        assert_eq!(m.image_auroc, Some(1.0));
        assert_eq!(m.counts.regions, 2);
        assert_eq!(m.counts.anomalous_frames, 1);
        // Binned AP follows the authors' tie order: the last recall step (1/7 wide, one
        // anomaly pixel) ends at threshold 0, where precision is the prevalence 7/200, so
        // AP = 1 - (1/7) (1 - 7/200) / 2. Exact AP is 1.
        let binned_ap = 1.0 - (1.0 / 7.0) * (1.0 - 7.0 / 200.0) / 2.0;
        assert_close("ap", m.ap, if exact { 1.0 } else { binned_ap }, 1e-12);
    }
}

#[test]
fn inverted_detector() {
    let frames = toy_frames(|m, _| if m == 9 { 0.1 } else { 0.9 });
    for exact in [false, true] {
        let m = evaluate(&frames, 10, cfg(5000, exact));
        assert_eq!(m.auroc, Some(0.0), "exact={exact}");
        assert_eq!(m.fpr95, Some(1.0));
        assert_eq!(m.aupro, Some(0.0));
        // Both frames have normal pixels at 0.9, so their max scores tie.
        assert_eq!(m.image_auroc, Some(0.5));
    }
}

#[test]
fn constant_map() {
    let frames = toy_frames(|_, _| 0.5);
    let prevalence = 7.0 / 200.0;
    let exact = evaluate(&frames, 10, cfg(5000, true));
    assert_eq!(exact.auroc, Some(0.5));
    assert_close("exact ap", exact.ap, prevalence, 1e-12);
    assert_eq!(exact.fpr95, Some(1.0));
    let binned = evaluate(&frames, 10, cfg(5000, false));
    assert_eq!(binned.auroc, Some(0.5));
    assert_eq!(binned.fpr95, Some(1.0));
    // All-or-nothing PRO: the curve is the chord (0,0)-(1,1), so AUPRO to 0.3 is 0.15.
    assert_close("aupro", binned.aupro, 0.15, 1e-12);
    // Frame scores tie: image AUROC 0.5.
    assert_eq!(binned.image_auroc, Some(0.5));
}

#[test]
fn all_normal_split_reports_undefined_metrics() {
    let frames = toy_frames(|_, i| i as f32 / 100.0);
    let normal_only = vec![frames[1].clone(), frames[1].clone()];
    let m = evaluate(&normal_only, 10, cfg(100, false));
    assert_eq!(
        (m.auroc, m.ap, m.fpr95, m.aupro, m.image_auroc),
        (None, None, None, None, None)
    );
    assert!(m.notes.iter().any(|n| n.contains("no anomalous pixel")));
    assert!(m.operating_point.is_none());
}

// ---------- the verbs ----------

/// Writes a TALLO-layout ground truth of `frames` and the matching prediction tree.
fn write_tree(root: &Path, frames: &[(Vec<f32>, Vec<u8>)], w: u32, h: u32) {
    let seq = root.join("gt/cam01_seq000_anomalous");
    std::fs::create_dir_all(seq.join("frames")).unwrap();
    std::fs::create_dir_all(seq.join("masks")).unwrap();
    let pred = root.join("pred/cam01_seq000_anomalous/masks");
    std::fs::create_dir_all(&pred).unwrap();
    for (i, (scores, mask)) in frames.iter().enumerate() {
        RgbImage::new(w, h)
            .save(seq.join(format!("frames/{i:03}.png")))
            .unwrap();
        GrayImage::from_raw(w, h, mask.clone())
            .unwrap()
            .save(seq.join(format!("masks/{i:03}.png")))
            .unwrap();
        write_npy_f32(
            &pred.join(format!("{i:03}.npy")),
            scores,
            &[h as usize, w as usize],
        );
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn eval_verb_writes_json_table_and_plots_matching_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = region_frames(&mut Rng(5), 3, 32, 24);
    write_tree(tmp.path(), &frames, 32, 24);
    let (gt, pred, out) = (
        tmp.path().join("gt"),
        tmp.path().join("pred"),
        tmp.path().join("out"),
    );
    let run = stars(&[
        "eval",
        "--pred",
        s(&pred),
        "--gt",
        s(&gt),
        "--out",
        s(&out),
        "--bins",
        "500",
    ]);
    support::assert_success(&run);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let lib = evaluate_dirs(&pred, &gt, &cfg(500, false)).unwrap();
    for (key, value) in [
        ("auroc", lib.auroc),
        ("ap", lib.ap),
        ("fpr95", lib.fpr95),
        ("aupro", lib.aupro),
        ("image_auroc", lib.image_auroc),
    ] {
        assert_eq!(json[key].as_f64(), value, "{key}");
    }
    assert_eq!(json["curves"]["tpr"].as_array().unwrap().len(), 500);
    assert_eq!(json["counts"]["frames"], 3);
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(table.starts_with("| method | AUROC"), "{table}");
    assert!(
        table.contains(&format!("| pred | {:.4} |", lib.auroc.unwrap())),
        "{table}"
    );
    for plot in ["roc.png", "pr.png", "pro.png"] {
        let img = image::open(out.join(plot)).unwrap();
        assert_eq!((img.width(), img.height()), (800, 600), "{plot}");
    }
}

#[test]
fn eval_verb_compares_named_methods() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = region_frames(&mut Rng(6), 2, 32, 24);
    write_tree(tmp.path(), &frames, 32, 24);
    let inverted: Vec<_> = frames
        .iter()
        .map(|(s, m)| (s.iter().map(|v| 1.0 - v).collect(), m.clone()))
        .collect();
    let other = tempfile::tempdir().unwrap();
    write_tree(other.path(), &inverted, 32, 24);
    let out = tmp.path().join("out");
    let good = format!("good={}", s(&tmp.path().join("pred")));
    let bad = format!("bad={}", s(&other.path().join("pred")));
    let gt = tmp.path().join("gt");
    let run = stars(&[
        "eval",
        "--pred",
        &good,
        "--pred",
        &bad,
        "--gt",
        s(&gt),
        "--out",
        s(&out),
    ]);
    support::assert_success(&run);
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    let rows: Vec<&str> = table.lines().skip(2).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].starts_with("| good | **"), "{table}");
    assert!(rows[1].starts_with("| bad | 0."), "{table}");
    for name in ["good", "bad"] {
        assert!(out.join(name).join("metrics.json").is_file());
    }
}

#[test]
fn calibrate_writes_the_fpr95_operating_point() {
    let tmp = tempfile::tempdir().unwrap();
    // 20 anomalous pixels scored 0.05, 0.10, ..., 1.0; normals at 0.2.
    let mut mask = vec![0u8; 40];
    let mut scores = vec![0.2f32; 40];
    for i in 0..20 {
        mask[i] = 9;
        scores[i] = (i + 1) as f32 * 0.05;
    }
    write_tree(tmp.path(), &[(scores, mask)], 8, 5);
    let path = tmp.path().join("config/threshold.yaml");
    let run = stars(&[
        "calibrate",
        "--pred",
        s(&tmp.path().join("pred")),
        "--gt",
        s(&tmp.path().join("gt")),
        "--out",
        s(&path),
        "--bins",
        "101",
    ]);
    support::assert_success(&run);
    let t = Threshold::load(&path).unwrap();
    // TPR >= 0.95 needs 19 of 20 anomalies: threshold <= 0.10, the highest grid value is 0.10
    // (the anomaly scored 0.05 is missed); every normal pixel (0.2) is above it.
    assert!((t.threshold - 0.10).abs() < 1e-12, "{t:?}");
    assert_eq!((t.tpr, t.fpr, t.bins), (0.95, 1.0, 101));
    assert!(t.source.contains("calibrate"));
}

#[test]
fn bad_input_gets_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = toy_frames(|_, i| i as f32 / 100.0);
    write_tree(tmp.path(), &frames, 10, 10);
    let (gt, pred, out) = (
        tmp.path().join("gt"),
        tmp.path().join("pred"),
        tmp.path().join("out"),
    );
    let args = |extra: &[&str]| {
        let mut a = vec!["eval", "--pred", s(&pred), "--gt", s(&gt), "--out", s(&out)];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| stars(&a.iter().map(String::as_str).collect::<Vec<_>>());

    assert_clean_error(&run(args(&["--bins", "1"])), "--bins must be at least 2");
    let seq_pred = pred.join("cam01_seq000_anomalous/masks");

    // A map of the wrong shape.
    write_npy_f32(&seq_pred.join("001.npy"), &[0.5; 12], &[3, 4]);
    assert_clean_error(&run(args(&[])), "is 4x3 but its mask");

    // A header that claims 2^17 x 2^17 floats (64 GiB) in a 128-byte file: refused from the
    // header, before anything is allocated.
    let mut huge = b"\x93NUMPY\x01\x00".to_vec();
    let mut header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (131072, 131072), }".to_string();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    huge.extend_from_slice(&(header.len() as u16).to_le_bytes());
    huge.extend_from_slice(header.as_bytes());
    huge.resize(128, 0);
    std::fs::write(seq_pred.join("001.npy"), &huge).unwrap();
    assert_clean_error(&run(args(&[])), "announces shape [131072, 131072]");

    // A map of the mask's size whose header claims more data than the file holds.
    let mut short = huge[..128].to_vec();
    let h = String::from_utf8_lossy(&short[10..128]).replace("131072, 131072", "10, 10        ");
    short.splice(10..128, h.into_bytes());
    short.extend_from_slice(&[0u8; 100]);
    std::fs::write(seq_pred.join("001.npy"), &short).unwrap();
    assert_clean_error(&run(args(&[])), "but the file holds 100 bytes");

    // A missing prediction.
    std::fs::remove_file(seq_pred.join("001.npy")).unwrap();
    assert_clean_error(&run(args(&[])), "1 of 2 masks have no prediction");

    // NaN and out-of-range scores: evaluated, counted, reported.
    let mut odd: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
    odd[0] = f32::NAN;
    odd[1] = 1.5;
    write_npy_f32(&seq_pred.join("001.npy"), &odd, &[10, 10]);
    let ok = run(args(&[]));
    support::assert_success(&ok);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(stderr.contains("1 NaN/infinite scores"), "{stderr}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(json["counts"]["non_finite_pixels"], 1);
    assert_eq!(json["counts"]["clipped_pixels"], 1);

    // No anomaly with this id at all: eval reports nulls, calibrate refuses.
    let none = run(args(&["--anomaly-id", "7"]));
    assert!(none.status.success());
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(json["auroc"].is_null() && json["aupro"].is_null());
    let cal = stars(&[
        "calibrate",
        "--pred",
        s(&pred),
        "--gt",
        s(&gt),
        "--out",
        s(&tmp.path().join("t.yaml")),
        "--anomaly-id",
        "7",
    ]);
    assert_clean_error(&cal, "cannot calibrate: no anomalous pixel");

    // A prediction that is not a float map.
    write_npy_u8(&seq_pred.join("001.npy"), &[1; 100], &[10, 10]);
    assert_clean_error(&run(args(&[])), "expected float anomaly scores");
}

#[test]
fn eval_needs_masks_only_and_keeps_the_placeholder_label() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = region_frames(&mut Rng(8), 2, 32, 24);
    write_tree(tmp.path(), &frames, 32, 24);
    let (gt, pred, out) = (
        tmp.path().join("gt"),
        tmp.path().join("pred"),
        tmp.path().join("out"),
    );
    std::fs::remove_dir_all(gt.join("cam01_seq000_anomalous/frames")).unwrap();
    std::fs::write(
        pred.join("detect.json"),
        r#"{"random_backbone": true, "label": "PLACEHOLDER_RANDOM_BACKBONE"}"#,
    )
    .unwrap();
    let run = stars(&["eval", "--pred", s(&pred), "--gt", s(&gt), "--out", s(&out)]);
    support::assert_success(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("| pred (PLACEHOLDER_RANDOM_BACKBONE) | "),
        "{stdout}"
    );
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(table.contains("| pred (PLACEHOLDER_RANDOM_BACKBONE) | "));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(json["random_backbone"], true);
    assert_eq!(json["method"], "pred");
    assert_eq!(json["label"], "pred (PLACEHOLDER_RANDOM_BACKBONE)");
    let lib = evaluate_dirs(&pred, &gt, &EvalConfig::default()).unwrap();
    assert_eq!(json["ap"].as_f64(), lib.ap);

    // Real maps say so, and carry no label.
    std::fs::write(pred.join("detect.json"), r#"{"random_backbone": false}"#).unwrap();
    let run = stars(&["eval", "--pred", s(&pred), "--gt", s(&gt), "--out", s(&out)]);
    support::assert_success(&run);
    assert!(String::from_utf8_lossy(&run.stdout).contains("| pred | "));
    // A run description that is not JSON could hide the label: an error, not a guess.
    std::fs::write(pred.join("detect.json"), "{not json").unwrap();
    let run = stars(&["eval", "--pred", s(&pred), "--gt", s(&gt), "--out", s(&out)]);
    assert_clean_error(&run, "detect.json is not valid JSON");
}

#[test]
fn eval_and_calibrate_output_survives_a_full_disk_and_a_closed_pipe() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let frames = region_frames(&mut Rng(9), 1, 16, 12);
    write_tree(tmp.path(), &frames, 16, 12);
    let (gt, pred) = (tmp.path().join("gt"), tmp.path().join("pred"));
    let out = tmp.path().join("out");
    let threshold = tmp.path().join("t.yaml");
    let verbs: [Vec<&str>; 2] = [
        vec!["eval", "--pred", s(&pred), "--gt", s(&gt), "--out", s(&out)],
        vec![
            "calibrate",
            "--pred",
            s(&pred),
            "--gt",
            s(&gt),
            "--out",
            s(&threshold),
        ],
    ];
    for args in &verbs {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full exists on Linux");
        let run = Command::new(env!("CARGO_BIN_EXE_stars"))
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        assert_clean_error(&run, "writing to standard output");

        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let run = Command::new(env!("CARGO_BIN_EXE_stars"))
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(0), "{}: {stderr}", args[0]);
        // Notes about the data may go to stderr; an error line or a panic may not.
        assert!(
            !stderr.contains("stars: ") && !stderr.contains("panicked"),
            "{}: {stderr}",
            args[0]
        );
    }
}
