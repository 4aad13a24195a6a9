//! DINOv2 backbone against the references: transformers `Dinov2Model` /
//! `Dinov2WithRegistersModel` and the original facebookresearch/dinov2 code, on tiny random
//! models at a non-square, interpolated input (fixtures from
//! test/fixtures/make_dinov2_fixtures.py); PyTorch's bicubic `F.interpolate` in the three ways
//! the references call it; weights handling, the CLI, and bad input.
mod support;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use stars::model::dinov2::{resize_table, PosInterp};
use stars::model::weights::{
    load_dinov2, manifest::Manifest, LoadOptions, LoadedBackbone, Naming, WeightsSource,
};
use support::{assert_clean_error, repo, stars};

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    repo().join("test/fixtures/dinov2")
}

fn input() -> Tensor {
    Tensor::read_npy(fixtures().join("input.npy")).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn expected(model: &str, what: &str) -> Tensor {
    Tensor::read_npy(fixtures().join(model).join(format!("expected_{what}.npy"))).unwrap()
}

/// Loads fixture `model` and checks the final-norm, no-norm and block-0 tokens it has.
fn check_parity(model: &str, naming: Naming, interp: PosInterp) -> LoadedBackbone {
    let loaded = load_dinov2(
        &fixtures().join(model),
        &Device::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    match &loaded.source {
        WeightsSource::Checkpoint { naming: n, .. } => assert_eq!(*n, naming),
        other => panic!("unexpected source {other:?}"),
    }
    assert_eq!(loaded.model.config().interpolation, interp, "{model}");
    let x = input();
    for (what, final_norm) in [("final_norm", true), ("no_final_norm", false)] {
        let path = fixtures().join(model).join(format!("expected_{what}.npy"));
        if !path.exists() {
            continue;
        }
        let got = loaded.patch_tokens(&x, final_norm).unwrap();
        let diff = max_abs_diff(&got.squeeze(0).unwrap(), &expected(model, what));
        eprintln!("{model} {what}: max abs diff {diff:.1e}");
        assert!(diff < TOL, "{model} {what}: max abs diff {diff}");
    }
    let layer0 = fixtures().join(model).join("expected_layer0.npy");
    if layer0.exists() {
        let got = loaded.intermediate_layers(&x, &[0], false).unwrap();
        let diff = max_abs_diff(&got[0].squeeze(0).unwrap(), &expected(model, "layer0"));
        assert!(diff < TOL, "{model} layer0: max abs diff {diff}");
    }
    loaded
}

#[test]
fn matches_transformers_dinov2() {
    assert!(check_parity("hf", Naming::Hf, PosInterp::Transformers)
        .rein
        .is_none());
}

#[test]
fn matches_transformers_dinov2_swiglu() {
    assert!(
        check_parity("hf_swiglu", Naming::Hf, PosInterp::Transformers)
            .rein
            .is_none()
    );
}

#[test]
fn matches_transformers_dinov2_with_registers() {
    assert!(
        check_parity("hf_registers", Naming::Hf, PosInterp::Antialias)
            .rein
            .is_none()
    );
}

#[test]
fn matches_original_dinov2_torch_hub_naming() {
    assert!(check_parity("hub", Naming::TorchHub, PosInterp::Original)
        .rein
        .is_none());
}

/// FlowCLAS's LoRA Rein adapters (its own `reins.py`) after every block of the original model,
/// stored under `backbone.reins.` beside the DINOv2 tensors, with the query-head tensors Rein
/// keeps for segmentation (unused here).
#[test]
fn matches_flowclas_rein_adapters() {
    let loaded = check_parity("hub_rein", Naming::TorchHub, PosInterp::Original);
    let rein = loaded
        .rein
        .as_ref()
        .expect("the fixture carries Rein tensors");
    assert!(
        rein.describe().contains("2 blocks x 6 tokens, rank 4"),
        "{}",
        rein.describe()
    );
    assert!(loaded.describe().contains("Rein adapters"));
    // the adapters matter: the same backbone without them is far from the reference
    let plain = LoadedBackbone {
        rein: None,
        ..loaded.clone()
    };
    let got = plain
        .patch_tokens(&input(), false)
        .unwrap()
        .squeeze(0)
        .unwrap();
    assert!(max_abs_diff(&got, &expected("hub_rein", "no_final_norm")) > 1e-2);
}

/// Rein tensors with a wrong shape, a missing part or an unknown name are clear errors.
#[test]
fn bad_rein_tensors_are_clear_errors() {
    let dir = scratch();
    type Edit = fn(&mut std::collections::HashMap<String, Tensor>);
    let cases: [(&str, Edit); 3] = [
        ("expected [2, 4, 16]", |t| {
            t.insert(
                "backbone.reins.learnable_tokens_b".into(),
                Tensor::zeros((2, 4, 8), candle_core::DType::F32, &Device::Cpu).unwrap(),
            );
        }),
        ("missing `mlp_delta_f.bias`", |t| {
            t.remove("backbone.reins.mlp_delta_f.bias");
        }),
        ("unexpected tensor `extra`", |t| {
            t.insert(
                "backbone.reins.extra".into(),
                Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
            );
        }),
    ];
    for (i, (want, edit)) in cases.into_iter().enumerate() {
        let folder = edited_checkpoint(&dir.path().join(i.to_string()), "hub_rein", edit, true);
        let err = load_dinov2(&folder, &Device::Cpu, &LoadOptions::default()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("Rein") && msg.contains(want), "{msg}");
    }
}

#[test]
fn matches_original_dinov2_registers_swiglu_chunked_without_config() {
    assert!(
        check_parity("hub_registers", Naming::TorchHub, PosInterp::Antialias)
            .rein
            .is_none()
    );
}

#[test]
fn position_table_resize_matches_torch_interpolate() {
    let t = candle_core::safetensors::load(fixtures().join("interp.safetensors"), &Device::Cpu)
        .unwrap();
    let table = &t["table"];
    let mut checked = 0;
    for (key, want) in &t {
        let Some((mode, grid)) = key.split_once('_') else {
            continue;
        };
        let mode = match mode {
            "original" => PosInterp::Original,
            "transformers" => PosInterp::Transformers,
            "antialias" => PosInterp::Antialias,
            _ => continue,
        };
        let (h, w) = grid.split_once('x').unwrap();
        let got = resize_table(table, h.parse().unwrap(), w.parse().unwrap(), mode).unwrap();
        let diff = max_abs_diff(&got, want);
        eprintln!("{key}: max abs diff {diff:.1e}");
        assert!(diff < 1e-5, "{key}: max abs diff {diff}");
        checked += 1;
    }
    assert_eq!(checked, 13);
}

#[test]
fn interpolation_mode_matters() {
    // The same weights with the other formula miss the reference: the modes are not equivalent.
    let opts = LoadOptions {
        interpolation: Some(PosInterp::Original),
        ..Default::default()
    };
    let loaded = load_dinov2(&fixtures().join("hf"), &Device::Cpu, &opts).unwrap();
    let got = loaded
        .patch_tokens(&input(), true)
        .unwrap()
        .squeeze(0)
        .unwrap();
    assert!(max_abs_diff(&got, &expected("hf", "final_norm")) > 1e-2);
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn features(args: &[&str]) -> std::process::Output {
    stars(&[&["features"], args].concat())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_features_from_npy_matches_reference_and_labels_weights() {
    let dir = scratch();
    let out = dir.path().join("tokens.npy");
    let weights = fixtures().join("hub/model.safetensors");
    let input = fixtures().join("input.npy");
    let run = features(&[
        "--weights",
        s(&weights),
        "--input-npy",
        s(&input),
        "--out",
        s(&out),
        "--no-final-norm",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("torch-hub naming") && stderr.contains("original"),
        "{stderr}"
    );
    let got = Tensor::read_npy(&out).unwrap();
    assert!(max_abs_diff(&got, &expected("hub", "no_final_norm")) < TOL);
    let label: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(label["random_weights"], false);
    assert_eq!(label["shape"], serde_json::json!([4, 7, 16]));

    let run = features(&[
        "--weights",
        s(&fixtures().join("hf")),
        "--input-npy",
        s(&input),
        "--out",
        s(&out),
        "--layer",
        "0",
        "--no-final-norm",
    ]);
    support::assert_success(&run);
    assert!(max_abs_diff(&Tensor::read_npy(&out).unwrap(), &expected("hf", "layer0")) < TOL);
}

#[test]
fn cli_features_applies_rein_adapters_and_says_so() {
    let dir = scratch();
    let out = dir.path().join("tokens.npy");
    let run = features(&[
        "--weights",
        s(&fixtures().join("hub_rein")),
        "--input-npy",
        s(&fixtures().join("input.npy")),
        "--out",
        s(&out),
        "--layer",
        "0",
        "--no-final-norm",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("with Rein adapters (2 blocks"), "{stderr}");
    let got = Tensor::read_npy(&out).unwrap();
    assert!(max_abs_diff(&got, &expected("hub_rein", "layer0")) < TOL);
}

#[test]
fn cli_features_from_png_pads_without_resizing() {
    let dir = scratch();
    let png = dir.path().join("frame.png");
    image::RgbImage::from_fn(100, 60, |x, y| image::Rgb([x as u8, y as u8, 128]))
        .save(&png)
        .unwrap();
    let out = dir.path().join("tokens.npy");
    let run = features(&[
        "--weights",
        s(&fixtures().join("hf")),
        "--image",
        s(&png),
        "--out",
        s(&out),
    ]);
    support::assert_success(&run);
    // 60x100 -> padded 70x112 -> 5x8 patches of width 16
    assert_eq!(Tensor::read_npy(&out).unwrap().dims(), &[5, 8, 16]);
}

#[test]
fn cli_random_weights_only_when_asked_and_labelled() {
    let dir = scratch();
    let out = dir.path().join("tokens.npy");
    let input = fixtures().join("input.npy");
    let run = features(&["--input-npy", s(&input), "--out", s(&out)]);
    assert_clean_error(&run, "--random-weights");
    let run = features(&[
        "--random-weights",
        "--arch",
        "small",
        "--input-npy",
        s(&input),
        "--out",
        s(&out),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("RANDOM WEIGHTS"), "{stderr}");
    assert_eq!(Tensor::read_npy(&out).unwrap().dims(), &[4, 7, 384]);
    let label = std::fs::read_to_string(out.with_extension("json")).unwrap();
    assert!(label.contains("\"random_weights\": true") && label.contains("RANDOM WEIGHTS"));
}

#[test]
fn bad_inputs_are_clean_errors() {
    let dir = scratch();
    let out = dir.path().join("t.npy");
    let hf = fixtures().join("hf");
    // not a multiple of 14
    let odd = dir.path().join("odd.npy");
    Tensor::zeros((1, 3, 50, 98), candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .write_npy(&odd)
        .unwrap();
    assert_clean_error(
        &features(&[
            "--weights",
            s(&hf),
            "--input-npy",
            s(&odd),
            "--out",
            s(&out),
        ]),
        "multiples of 14",
    );
    // wrong rank
    let flat = dir.path().join("flat.npy");
    Tensor::zeros((3, 56, 98), candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .write_npy(&flat)
        .unwrap();
    assert_clean_error(
        &features(&[
            "--weights",
            s(&hf),
            "--input-npy",
            s(&flat),
            "--out",
            s(&out),
        ]),
        "(1, 3, H, W)",
    );
    // grey image
    let grey = dir.path().join("grey.png");
    image::GrayImage::new(28, 28).save(&grey).unwrap();
    assert_clean_error(
        &features(&["--weights", s(&hf), "--image", s(&grey), "--out", s(&out)]),
        "8-bit RGB",
    );
    // no such layer
    let input = fixtures().join("input.npy");
    assert_clean_error(
        &features(&[
            "--weights",
            s(&hf),
            "--input-npy",
            s(&input),
            "--out",
            s(&out),
            "--layer",
            "5",
        ]),
        "layer 5 does not exist",
    );
    // no weights there
    let missing = dir.path().join("nothing.safetensors");
    assert_clean_error(
        &features(&[
            "--weights",
            s(&missing),
            "--input-npy",
            s(&input),
            "--out",
            s(&out),
        ]),
        "no weights at",
    );
}

/// Writes a copy of fixture `model` with `edit` applied to its tensors into a new folder.
fn edited_checkpoint(
    dir: &Path,
    model: &str,
    edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>),
    with_config: bool,
) -> PathBuf {
    let src = fixtures().join(model);
    let mut t =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    edit(&mut t);
    let folder = dir.join(model);
    std::fs::create_dir_all(&folder).unwrap();
    candle_core::safetensors::save(&t, folder.join("model.safetensors")).unwrap();
    if with_config {
        std::fs::copy(src.join("config.json"), folder.join("config.json")).unwrap();
    }
    folder
}

#[test]
fn broken_checkpoints_are_clean_errors() {
    let dir = scratch();
    let out = dir.path().join("t.npy");
    let input = fixtures().join("input.npy");
    let run = |weights: &Path| {
        features(&[
            "--weights",
            s(weights),
            "--input-npy",
            s(&input),
            "--out",
            s(&out),
        ])
    };

    let missing = edited_checkpoint(
        dir.path(),
        "hf",
        |t| {
            t.remove("encoder.layer.1.mlp.fc2.weight");
        },
        true,
    );
    assert_clean_error(&run(&missing), "blocks.1.mlp.fc2.weight");

    let half_qkv = edited_checkpoint(
        &dir.path().join("b"),
        "hf",
        |t| {
            t.remove("encoder.layer.0.attention.attention.key.bias");
        },
        true,
    );
    assert_clean_error(&run(&half_qkv), "attn.k");

    let wrong_shape = edited_checkpoint(
        &dir.path().join("c"),
        "hub",
        |t| {
            t.insert(
                "pos_embed".into(),
                Tensor::zeros((1, 17, 16), candle_core::DType::F32, &Device::Cpu).unwrap(),
            );
        },
        true,
    );
    assert_clean_error(&run(&wrong_shape), "pos_embed");

    let no_config = edited_checkpoint(&dir.path().join("d"), "hf", |_| {}, false);
    assert_clean_error(&run(&no_config), "config.json");

    let unrelated = edited_checkpoint(
        &dir.path().join("e"),
        "hub",
        |t| {
            t.retain(|k, _| k.starts_with("blocks."));
        },
        false,
    );
    assert_clean_error(&run(&unrelated), "not a DINOv2 checkpoint");
}

#[test]
fn manifest_shapes_match_the_presets() {
    let manifest = Manifest::builtin().unwrap();
    assert_eq!(manifest.models.len(), 8);
    for e in &manifest.models {
        let cfg = e.config().unwrap();
        let c = cfg.hidden_size;
        let table = 1 + cfg.pos_grid * cfg.pos_grid;
        for (name, shape) in &e.shapes {
            let want = match name.as_str() {
                "embeddings.patch_embeddings.projection.weight" => vec![c, 3, 14, 14],
                "embeddings.position_embeddings" => vec![1, table, c],
                "embeddings.register_tokens" => vec![1, cfg.num_register_tokens, c],
                "encoder.layer.0.mlp.fc1.weight" => vec![cfg.mlp_hidden(), c],
                "encoder.layer.0.mlp.weights_in.weight" => vec![2 * cfg.mlp_hidden(), c],
                other => panic!("{}: unexpected key {other}", e.name),
            };
            assert_eq!(shape, &want, "{} {name}", e.name);
        }
        assert_eq!(
            e.shapes.contains_key("embeddings.register_tokens"),
            cfg.num_register_tokens > 0
        );
        assert!(
            e.sha256.as_deref().is_none_or(|h| h.len() == 64),
            "{}",
            e.name
        );
    }
}

/// A Hugging Face cache holding `weights` (+ the `hf` fixture's config.json) as
/// facebook/dinov2-small, laid out as hf-hub writes it: blobs named by sha256, snapshot
/// symlinks, refs/main. Returns the snapshot folder.
fn populated_cache(root: &Path, weights: &Path) -> PathBuf {
    let repo_dir = root.join("models--facebook--dinov2-small");
    let snapshot = repo_dir.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), "0123abcd").unwrap();
    let blob = repo_dir.join(format!("blobs/{}", "ab".repeat(32)));
    std::fs::copy(weights, &blob).unwrap();
    std::os::unix::fs::symlink(&blob, snapshot.join("model.safetensors")).unwrap();
    std::fs::copy(
        fixtures().join("hf/config.json"),
        snapshot.join("config.json"),
    )
    .unwrap();
    snapshot
}

#[test]
fn cached_checkpoint_is_found_offline() {
    let dir = scratch();
    let cache = dir.path().join("hub");
    let snapshot = populated_cache(&cache, &fixtures().join("hf/model.safetensors"));

    let list = stars(&["models", "list", "--cache", s(&cache)]);
    let listing = String::from_utf8_lossy(&list.stdout);
    let small = listing
        .lines()
        .find(|l| l.starts_with("dinov2-small "))
        .unwrap();
    assert!(small.contains(s(&snapshot)), "{listing}");
    let large = listing
        .lines()
        .find(|l| l.starts_with("dinov2-large "))
        .unwrap();
    assert!(large.trim_end().ends_with('-'), "{listing}");

    let out = dir.path().join("t.npy");
    let input = fixtures().join("input.npy");
    let run = features(&[
        "--weights",
        "dinov2-small",
        "--cache",
        s(&cache),
        "--input-npy",
        s(&input),
        "--out",
        s(&out),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("sha256 {}", "ab".repeat(32))),
        "{stderr}"
    );
    assert!(
        max_abs_diff(
            &Tensor::read_npy(&out).unwrap(),
            &expected("hf", "final_norm")
        ) < TOL
    );

    let run = features(&[
        "--weights",
        "dinov2-base",
        "--cache",
        s(&cache),
        "--input-npy",
        s(&input),
        "--out",
        s(&out),
    ]);
    assert_clean_error(&run, "stars models fetch dinov2-base");
    assert_clean_error(&stars(&["models", "fetch", "dinov2-huge"]), "unknown model");
}

#[test]
fn fetch_finds_the_cache_offline_and_checks_manifest_shapes() {
    let dir = scratch();
    // the tiny fixture posing as dinov2-small: found, but its shapes give it away
    let tiny = dir.path().join("tiny");
    populated_cache(&tiny, &fixtures().join("hf/model.safetensors"));
    let fetch = stars(&["models", "fetch", "dinov2-small", "--cache", s(&tiny)]);
    assert_clean_error(&fetch, "is not facebook/dinov2-small");

    // a file with dinov2-small's key tensors passes
    let entry = Manifest::builtin()
        .unwrap()
        .get("dinov2-small")
        .unwrap()
        .clone();
    let keys: std::collections::HashMap<String, Tensor> = entry
        .shapes
        .iter()
        .map(|(k, shape)| {
            (
                k.clone(),
                Tensor::zeros(shape.as_slice(), candle_core::DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let file = dir.path().join("keys.safetensors");
    candle_core::safetensors::save(&keys, &file).unwrap();
    let good = dir.path().join("good");
    let snapshot = populated_cache(&good, &file);
    let fetch = stars(&["models", "fetch", "dinov2-small", "--cache", s(&good)]);
    support::assert_success(&fetch);
    assert_eq!(String::from_utf8_lossy(&fetch.stdout).trim(), s(&snapshot));
}

#[test]
fn adapter_hook_sees_every_block_and_changes_what_follows() {
    let loaded = load_dinov2(
        &fixtures().join("hf"),
        &Device::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    let x = input();
    let mut seen = Vec::new();
    let mut record = |i: usize, t: Tensor| {
        // class token + 4x7 patches, width 16
        assert_eq!(t.dims(), &[1, 29, 16]);
        seen.push(i);
        Ok(t)
    };
    let same = loaded
        .model
        .intermediate_layers_with(&x, &[1], false, &mut record)
        .unwrap();
    assert_eq!(seen, [0, 1]);
    assert!(
        max_abs_diff(
            &same[0].squeeze(0).unwrap(),
            &expected("hf", "no_final_norm")
        ) < TOL
    );
    let mut scale = |i: usize, t: Tensor| if i == 0 { t * 2.0 } else { Ok(t) };
    let changed = loaded
        .model
        .intermediate_layers_with(&x, &[0, 1], false, &mut scale)
        .unwrap();
    let want0 = (expected("hf", "layer0") * 2.0).unwrap();
    assert!(max_abs_diff(&changed[0].squeeze(0).unwrap(), &want0) < TOL);
    assert!(
        max_abs_diff(
            &changed[1].squeeze(0).unwrap(),
            &expected("hf", "no_final_norm")
        ) > 1e-2
    );
}

#[test]
fn half_precision_weights_take_f32_input() {
    let opts = LoadOptions {
        dtype: candle_core::DType::F16,
        ..Default::default()
    };
    let loaded = load_dinov2(&fixtures().join("hf"), &Device::Cpu, &opts).unwrap();
    let got = loaded.patch_tokens(&input(), false).unwrap();
    assert_eq!(got.dtype(), candle_core::DType::F16);
    let got = got
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let diff = max_abs_diff(&got, &expected("hf", "no_final_norm"));
    assert!(diff < 5e-2, "f16 max abs diff {diff}");
}
