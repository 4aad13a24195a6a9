//! FlowCLAS flow: invertibility, exact log-det, ActNorm state, anomaly map, gradients, checkpoints.
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use stars::model::flowclas::{
    self, bilinear_matrix, CheckpointMeta, Config, FlowClas, FlowState, Padding,
};

fn tiny(channels: usize, steps: usize, dtype: DType) -> (FlowClas, VarMap, FlowState, Config) {
    let cfg = Config {
        channels,
        steps,
        proj_dim: 4,
        norm_eps: 1e-5,
    };
    let state = FlowState::new(&cfg, 7);
    let vars = VarMap::new();
    let model = FlowClas::new(
        &cfg,
        &state,
        VarBuilder::from_varmap(&vars, dtype, &Device::Cpu),
    )
    .unwrap();
    (model, vars, state, cfg)
}

/// Replaces every weight by a seeded random value so couplings are not the identity.
fn randomise(vars: &VarMap, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut names: Vec<String> = vars.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    let data = vars.data().lock().unwrap();
    for name in names {
        let var = &data[&name];
        let offset = if name.ends_with("norm.weight")
            || name.contains(".norm") && name.ends_with("weight")
        {
            1.0
        } else {
            0.0
        };
        let v: Vec<f64> = (0..var.elem_count())
            .map(|_| offset + rng.random_range(-0.5..0.5))
            .collect();
        let t = Tensor::from_vec(v, var.shape(), &Device::Cpu)
            .unwrap()
            .to_dtype(var.dtype())
            .unwrap();
        var.set(&t).unwrap();
    }
}

fn meta(cfg: &Config, state: &FlowState) -> CheckpointMeta {
    CheckpointMeta {
        config: cfg.clone(),
        state: state.clone(),
        backbone_arch: "tiny".into(),
        backbone_weights: "test".into(),
        backbone_blocks: Some(2),
        step: 3,
        epoch: 1,
        training: serde_json::Value::Null,
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn inverse_undoes_forward() {
    let (model, vars, mut state, _) = tiny(8, 3, DType::F32);
    randomise(&vars, 1);
    let x = Tensor::randn(0f32, 1.0, (2, 8, 5, 6), &Device::Cpu).unwrap();
    model.initialise_actnorm(&x, &mut state, &vars).unwrap();
    let x = model.normalise(&x).unwrap();
    let (z, _) = model.flow(&x).unwrap();
    assert!(
        max_abs_diff(&z, &x) > 0.1,
        "the flow should not be the identity"
    );
    let back = model.inverse(&z).unwrap();
    let err = max_abs_diff(&back, &x);
    assert!(err < 1e-4, "inverse error {err}");
}

/// log|det| of a square matrix by Gaussian elimination with partial pivoting.
fn log_abs_det(mut m: Vec<Vec<f64>>) -> f64 {
    let n = m.len();
    let mut acc = 0.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))
            .unwrap();
        m.swap(c, p);
        acc += m[c][c].abs().ln();
        let pivot = m[c].clone();
        for row in m.iter_mut().skip(c + 1) {
            let f = row[c] / pivot[c];
            for (v, p) in row.iter_mut().zip(&pivot).skip(c) {
                *v -= f * p;
            }
        }
    }
    acc
}

#[test]
fn log_det_matches_numerical_jacobian() {
    let c = 6;
    let (model, vars, mut state, _) = tiny(c, 3, DType::F64);
    randomise(&vars, 2);
    // fixed data: candle's randn cannot be seeded, and some draws left |log-det| < 0.1
    let init: Vec<f64> = (0..4 * c)
        .map(|k| 2.0 * (k as f64 * 1.3 + 0.4).sin())
        .collect();
    let init = Tensor::from_vec(init, (4, c, 1, 1), &Device::Cpu).unwrap();
    model.initialise_actnorm(&init, &mut state, &vars).unwrap();
    let x0: Vec<f64> = (0..c).map(|i| (i as f64 * 0.7).sin()).collect();
    let eval = |x: &[f64]| -> (Vec<f64>, f64) {
        let t = Tensor::from_slice(x, (1, c, 1, 1), &Device::Cpu).unwrap();
        let (z, ld) = model.flow(&t).unwrap();
        (
            z.flatten_all().unwrap().to_vec1().unwrap(),
            ld.flatten_all().unwrap().to_vec1::<f64>().unwrap()[0],
        )
    };
    let (_, logdet) = eval(&x0);
    let h = 1e-6;
    let mut jac = vec![vec![0.0; c]; c];
    for j in 0..c {
        let (mut xp, mut xm) = (x0.clone(), x0.clone());
        xp[j] += h;
        xm[j] -= h;
        let (zp, zm) = (eval(&xp).0, eval(&xm).0);
        for i in 0..c {
            jac[i][j] = (zp[i] - zm[i]) / (2.0 * h);
        }
    }
    let numeric = log_abs_det(jac);
    assert!(
        logdet.abs() > 0.1,
        "log-det {logdet} too small to be a meaningful check"
    );
    assert!(
        (numeric - logdet).abs() < 1e-5,
        "numerical {numeric} vs flow {logdet}"
    );
    eprintln!("log-det {logdet}, numerical {numeric}");
}

#[test]
fn actnorm_initialises_once_and_survives_save_load() {
    let (model, vars, mut state, cfg) = tiny(8, 2, DType::F32);
    let x = (Tensor::randn(0f32, 3.0, (2, 8, 4, 4), &Device::Cpu).unwrap() + 5.0).unwrap();
    assert!(model.initialise_actnorm(&x, &mut state, &vars).unwrap());
    // the first ActNorm now standardises the normalised batch: mean 0, std 1 per channel
    let actnorm = |vars: &VarMap, name: &str| {
        vars.data().lock().unwrap()[&format!("flow.0.actnorm.{name}")]
            .as_tensor()
            .clone()
    };
    let (loc, logscale) = (actnorm(&vars, "loc"), actnorm(&vars, "logscale"));
    let per_channel = model
        .normalise(&x)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .flatten_from(1)
        .unwrap();
    let mean = per_channel.mean(1).unwrap();
    assert!(max_abs_diff(&loc, &mean) < 1e-5);
    // log of the unbiased std over the 32 values of each channel
    let n = per_channel.dim(1).unwrap() as f64;
    let log_std = (per_channel
        .broadcast_sub(&mean.unsqueeze(1).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        / (n - 1.0))
        .unwrap()
        .sqrt()
        .unwrap()
        .log()
        .unwrap();
    assert!(max_abs_diff(&logscale, &log_std) < 1e-5);
    let other = (x.clone() * 10.0).unwrap();
    assert!(
        !model.initialise_actnorm(&other, &mut state, &vars).unwrap(),
        "second init must be a no-op"
    );
    let tmp = tempfile::tempdir().unwrap();
    flowclas::save(tmp.path(), &vars, &meta(&cfg, &state)).unwrap();
    let (loaded, loaded_vars, mut loaded_meta) = flowclas::load(tmp.path(), &Device::Cpu).unwrap();
    assert!(loaded_meta.state.actnorm_initialised);
    assert_eq!(loaded_meta.state.permutations, state.permutations);
    assert!(!loaded
        .initialise_actnorm(&other, &mut loaded_meta.state, &loaded_vars)
        .unwrap());
    for (name, before) in [("loc", &loc), ("logscale", &logscale)] {
        assert_eq!(
            actnorm(&loaded_vars, name).to_vec1::<f32>().unwrap(),
            before.to_vec1::<f32>().unwrap(),
            "{name} after save/load"
        );
    }
    let (z1, l1) = model.forward(&x).unwrap();
    let (z2, l2) = loaded.forward(&x).unwrap();
    assert_eq!(max_abs_diff(&z1, &z2), 0.0);
    assert_eq!(max_abs_diff(&l1, &l2), 0.0);
}

#[test]
fn bilinear_matrix_matches_pytorch_align_corners_false() {
    let m = bilinear_matrix(4, 2, &Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(
        m,
        vec![
            vec![1.0, 0.0],
            vec![0.75, 0.25],
            vec![0.25, 0.75],
            vec![0.0, 1.0]
        ]
    );
}

#[test]
fn anomaly_map_is_in_unit_range_with_the_frame_size() {
    let (model, vars, mut state, _) = tiny(8, 2, DType::F32);
    randomise(&vars, 3);
    let f = Tensor::randn(0f32, 1.0, (2, 8, 3, 5), &Device::Cpu).unwrap();
    model.initialise_actnorm(&f, &mut state, &vars).unwrap();
    let padding = Padding {
        top: 2,
        left: 3,
        height: 38,
        width: 64,
        patch: 14,
    };
    let map = model.anomaly_map(&f, padding).unwrap();
    assert_eq!(map.dims(), &[2, 38, 64]);
    let v: Vec<f32> = map.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(v.iter().any(|&p| p != v[0]), "map should vary");
    // one pixel against a direct evaluation of PyTorch's bilinear rule on p = exp(l)
    let (z, _) = model.forward(&f).unwrap();
    let p: Vec<Vec<Vec<f32>>> = model
        .patch_log_likelihood(&z)
        .unwrap()
        .exp()
        .unwrap()
        .to_vec3()
        .unwrap();
    let taps = |dst: usize, input: usize, output: usize| {
        let src = ((dst as f64 + 0.5) * input as f64 / output as f64 - 0.5).max(0.0);
        let i0 = src.floor() as usize;
        let frac = src - i0 as f64;
        [(i0, 1.0 - frac), ((i0 + 1).min(input - 1), frac)]
    };
    let (py, px) = (20, 34); // padded coordinates
    let mut up = 0.0;
    for (iy, wy) in taps(py, 3, 42) {
        for (ix, wx) in taps(px, 5, 70) {
            up += wy * wx * p[1][iy][ix] as f64;
        }
    }
    let direct = (1.0 - up).clamp(0.0, 1.0) as f32;
    let got = map.to_vec3::<f32>().unwrap()[1][py - 2][px - 3];
    assert!((got - direct).abs() < 1e-5, "{got} vs {direct}");
    let off_frame = Padding { top: 10, ..padding };
    assert!(model.anomaly_map(&f, off_frame).is_err());
    let wrong_grid = Padding::centred(100, 64, 14).unwrap();
    let err = model.anomaly_map(&f, wrong_grid).unwrap_err().to_string();
    assert!(err.contains("does not fit a 3x5 patch grid"), "{err}");
}

#[test]
fn every_trainable_tensor_receives_a_gradient() {
    let (model, vars, mut state, _) = tiny(8, 2, DType::F32);
    let f = Tensor::randn(0f32, 1.0, (4, 8, 3, 4), &Device::Cpu).unwrap();
    model.initialise_actnorm(&f, &mut state, &vars).unwrap();
    // zero-initialised output convs block gradients to the subnets' inner layers; give them weight
    for (name, var) in vars.data().lock().unwrap().iter() {
        if name.ends_with("out.weight") {
            var.set(&var.randn_like(0.0, 0.1).unwrap()).unwrap();
        }
    }
    // 2 mixed views then 2 source views: inliers, outliers, and source outliers in each
    let mut labels = vec![0u8; 4 * 12];
    for v in [1usize, 2, 14, 25, 26, 30, 38, 40] {
        labels[v] = 1;
    }
    labels[5] = 255;
    let labels = Tensor::from_vec(labels, (4, 3, 4), &Device::Cpu).unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let (loss, nll, con) =
        stars::train::detector::batch_loss(&model, &f, &labels, 2, 1e-3, &mut rng).unwrap();
    assert!(nll.is_finite() && con > 0.0);
    let grads = loss.backward().unwrap();
    let all: Vec<(String, Var)> = vars
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(all.len() > 20);
    for (name, var) in all {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0, "zero gradient for {name}");
    }
}

fn saved_checkpoint() -> (tempfile::TempDir, HashMap<String, Tensor>) {
    let (_, vars, state, cfg) = tiny(8, 2, DType::F32);
    let tmp = tempfile::tempdir().unwrap();
    flowclas::save(tmp.path(), &vars, &meta(&cfg, &state)).unwrap();
    let weights = tmp.path().join(flowclas::DETECTOR_WEIGHTS);
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    (tmp, tensors)
}

fn load_error(dir: &std::path::Path) -> String {
    format!(
        "{:#}",
        flowclas::load(dir, &Device::Cpu)
            .err()
            .expect("load must fail")
    )
}

#[test]
fn checkpoint_with_missing_tensor_is_a_clear_error() {
    let (tmp, mut tensors) = saved_checkpoint();
    tensors.remove("base.mu");
    candle_core::safetensors::save(&tensors, tmp.path().join(flowclas::DETECTOR_WEIGHTS)).unwrap();
    let err = load_error(tmp.path());
    assert!(err.contains("lacks tensor `base.mu`"), "{err}");
}

#[test]
fn checkpoint_with_wrong_shape_is_a_clear_error() {
    let (tmp, mut tensors) = saved_checkpoint();
    tensors.insert(
        "flow.1.subnet.conv1.weight".into(),
        Tensor::zeros((4, 4, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, tmp.path().join(flowclas::DETECTOR_WEIGHTS)).unwrap();
    let err = load_error(tmp.path());
    assert!(
        err.contains(
            "`flow.1.subnet.conv1.weight` is [4, 4, 1, 1] but the config needs [4, 4, 3, 3]"
        ),
        "{err}"
    );
}

#[test]
fn checkpoint_with_rein_adapters_is_refused_not_ignored() {
    let (tmp, mut tensors) = saved_checkpoint();
    tensors.insert(
        "rein.learnable_tokens".into(),
        Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, tmp.path().join(flowclas::DETECTOR_WEIGHTS)).unwrap();
    let err = load_error(tmp.path());
    assert!(err.contains("Rein adapters"), "{err}");
}

#[test]
fn corrupt_state_is_a_clear_error() {
    let (tmp, _) = saved_checkpoint();
    let json = tmp.path().join(flowclas::DETECTOR_JSON);
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    meta["state"]["permutations"][0][0] = serde_json::json!(99);
    std::fs::write(&json, meta.to_string()).unwrap();
    let err = load_error(tmp.path());
    assert!(err.contains("permutation 0 is not a permutation"), "{err}");
    let missing = load_error(&tmp.path().join("nope"));
    assert!(
        missing.contains("nope/detector.json (is ")
            && missing.contains("nope a detector checkpoint?)"),
        "missing dir must be explained: {missing}"
    );
}
