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

/// Every reference output a fixture carries (`expected_<what>.npy`).
const ALL_OUTPUTS: [&str; 3] = ["final_norm", "no_final_norm", "layer0"];

/// Loads fixture `model` and checks each reference output named in `outputs` (final-norm and
/// no-norm last-block tokens, block-0 tokens); a missing reference file fails the test.
fn check_parity(
    model: &str,
    naming: Naming,
    interp: PosInterp,
    outputs: &[&str],
) -> LoadedBackbone {
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
    for &what in outputs {
        let path = fixtures().join(model).join(format!("expected_{what}.npy"));
        assert!(
            path.is_file(),
            "{model}: reference {} is missing",
            path.display()
        );
        let got = match what {
            "final_norm" => loaded.patch_tokens(&x, true).unwrap(),
            "no_final_norm" => loaded.patch_tokens(&x, false).unwrap(),
            "layer0" => loaded
                .intermediate_layers(&x, &[0], false)
                .unwrap()
                .remove(0),
            other => panic!("no reference output called {other}"),
        };
        let diff = max_abs_diff(&got.squeeze(0).unwrap(), &expected(model, what));
        eprintln!("{model} {what}: max abs diff {diff:.1e}");
        assert!(diff < TOL, "{model} {what}: max abs diff {diff}");
    }
    loaded
}

#[test]
fn matches_transformers_dinov2() {
    assert!(
        check_parity("hf", Naming::Hf, PosInterp::Transformers, &ALL_OUTPUTS)
            .rein
            .is_none()
    );
}

#[test]
fn matches_transformers_dinov2_swiglu() {
    assert!(check_parity(
        "hf_swiglu",
        Naming::Hf,
        PosInterp::Transformers,
        &ALL_OUTPUTS
    )
    .rein
    .is_none());
}

#[test]
fn matches_transformers_dinov2_with_registers() {
    assert!(check_parity(
        "hf_registers",
        Naming::Hf,
        PosInterp::Antialias,
        &ALL_OUTPUTS
    )
    .rein
    .is_none());
}

#[test]
fn matches_original_dinov2_torch_hub_naming() {
    assert!(
        check_parity("hub", Naming::TorchHub, PosInterp::Original, &ALL_OUTPUTS)
            .rein
            .is_none()
    );
}

/// FlowCLAS's LoRA Rein adapters (its own `reins.py`) after every block of the original model,
/// stored under `backbone.reins.` beside the DINOv2 tensors, with the query-head tensors Rein
/// keeps for segmentation (unused here).
#[test]
fn matches_flowclas_rein_adapters() {
    let loaded = check_parity(
        "hub_rein",
        Naming::TorchHub,
        PosInterp::Original,
        &["no_final_norm", "layer0"],
    );
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
    assert!(check_parity(
        "hub_registers",
        Naming::TorchHub,
        PosInterp::Antialias,
        &["final_norm", "no_final_norm"]
    )
    .rein
    .is_none());
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

    type Edit = fn(&mut std::collections::HashMap<String, Tensor>);
    // (fixture, edit, keep config.json, what the error names)
    let cases: [(&str, Edit, bool, &str); 5] = [
        (
            "hf",
            |t| drop(t.remove("encoder.layer.1.mlp.fc2.weight")),
            true,
            "blocks.1.mlp.fc2.weight",
        ),
        (
            "hf",
            |t| drop(t.remove("encoder.layer.0.attention.attention.key.bias")),
            true,
            "attn.k",
        ),
        (
            "hub",
            |t| {
                let wrong = Tensor::zeros((1, 17, 16), candle_core::DType::F32, &Device::Cpu);
                t.insert("pos_embed".into(), wrong.unwrap());
            },
            true,
            "pos_embed",
        ),
        ("hf", |_| {}, false, "config.json"),
        (
            "hub",
            |t| t.retain(|k, _| k.starts_with("blocks.")),
            false,
            "not a DINOv2 checkpoint",
        ),
    ];
    for (i, (model, edit, with_config, want)) in cases.into_iter().enumerate() {
        let folder = edited_checkpoint(&dir.path().join(i.to_string()), model, edit, with_config);
        assert_clean_error(&run(&folder), want);
    }
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

/// The `hub` fixture's tensors renamed into Hugging Face naming (q/k/v split, LayerScale and
/// embedding names) with a `config.json`, in a new folder: the same model, HF-named.
fn hub_in_hf_naming(dir: &Path) -> PathBuf {
    let src = fixtures().join("hub");
    let hub = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut hf = std::collections::HashMap::new();
    for (name, t) in hub {
        let renamed = match name.as_str() {
            "cls_token" => "embeddings.cls_token".to_string(),
            "mask_token" => "embeddings.mask_token".to_string(),
            "pos_embed" => "embeddings.position_embeddings".to_string(),
            "norm.weight" => "layernorm.weight".to_string(),
            "norm.bias" => "layernorm.bias".to_string(),
            n if n.starts_with("patch_embed.proj.") => n.replace(
                "patch_embed.proj.",
                "embeddings.patch_embeddings.projection.",
            ),
            n => {
                let rest = n.strip_prefix("blocks.").expect("a block tensor");
                let (i, part) = rest.split_once('.').unwrap();
                let layer = format!("encoder.layer.{i}");
                if let Some(kind) = part.strip_prefix("attn.qkv.") {
                    let c = t.dim(0).unwrap() / 3;
                    for (k, role) in ["query", "key", "value"].iter().enumerate() {
                        let piece = t.narrow(0, k * c, c).unwrap();
                        hf.insert(format!("{layer}.attention.attention.{role}.{kind}"), piece);
                    }
                    continue;
                }
                let part = part
                    .replace("attn.proj.", "attention.output.dense.")
                    .replace("ls1.gamma", "layer_scale1.lambda1")
                    .replace("ls2.gamma", "layer_scale2.lambda1");
                format!("{layer}.{part}")
            }
        };
        hf.insert(renamed, t);
    }
    let folder = dir.join("hub_hf_named");
    std::fs::create_dir_all(&folder).unwrap();
    candle_core::safetensors::save(&hf, folder.join("model.safetensors")).unwrap();
    std::fs::copy(src.join("config.json"), folder.join("config.json")).unwrap();
    folder
}

/// FlowCLAS resizes the position table with the original DINOv2 formula; Hugging Face
/// checkpoints default to transformers' formula, so the detector must ask for the original one
/// whatever the naming (issue 8, item 1). The check: an HF-named copy of the `hub` model
/// reaching the detector gives the tokens of the `hub` model itself, which the original dinov2
/// code produced (`matches_original_dinov2_torch_hub_naming`).
#[test]
fn detector_backbone_uses_the_original_interpolation_for_hf_named_weights() {
    use stars::model::flowclas::backbone;

    let dir = scratch();
    let hf_named = hub_in_hf_naming(dir.path());
    let plain = load_dinov2(&hf_named, &Device::Cpu, &LoadOptions::default()).unwrap();
    assert_eq!(plain.model.config().interpolation, PosInterp::Transformers);
    // the renaming is faithful: with the original formula the HF-named copy meets the reference
    let original = load_dinov2(&hf_named, &Device::Cpu, &backbone::detector_load_options())
        .unwrap()
        .patch_tokens(&input(), false)
        .unwrap();
    assert!(
        max_abs_diff(
            &original.squeeze(0).unwrap(),
            &expected("hub", "no_final_norm")
        ) < TOL
    );

    let extractor = backbone::open(
        "tiny",
        Some(&hf_named),
        false,
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(
        extractor
            .describe()
            .contains("original position interpolation"),
        "{}",
        extractor.describe()
    );
    // a 98x56 frame: a 7x4 grid, so the 5x5 table is resized
    let frame = image::RgbImage::from_fn(98, 56, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 4) as u8, ((x + y) % 256) as u8])
    });
    let got = extractor.embed(&frame).unwrap().features; // (1, C, Hp, Wp)
    let (x, _) = stars::model::dinov2::preprocess(&frame, 14, &Device::Cpu).unwrap();
    let reference = load_dinov2(
        &fixtures().join("hub"),
        &Device::Cpu,
        &LoadOptions::default(),
    )
    .unwrap()
    .patch_tokens(&x, false)
    .unwrap()
    .permute((0, 3, 1, 2))
    .unwrap();
    let diff = max_abs_diff(&got, &reference);
    assert!(
        diff < TOL,
        "detector tokens differ from the original formula's by {diff}"
    );
    // and the check can fail: transformers' formula gives other tokens on this frame
    let transformers = plain
        .patch_tokens(&x, false)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap();
    assert!(max_abs_diff(&transformers, &reference) > 1e-3);
}

/// Hostile tensor shapes in a torch-hub checkpoint (no config.json, so the architecture is read
/// from the shapes) are one-line errors from the loader and from `stars features`, never a
/// panic (issue 8, item 4: a rank-0 `fc1` indexed out of bounds; a 0x0 patch divided by zero).
#[test]
fn hostile_tensor_shapes_are_one_line_errors() {
    let dir = scratch();
    let input = fixtures().join("input.npy");
    let png = dir.path().join("frame.png");
    image::RgbImage::from_pixel(30, 20, image::Rgb([9, 99, 199]))
        .save(&png)
        .unwrap();
    let zeros =
        |shape: &[usize]| Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap();
    let cases: [(&str, Tensor, &str); 5] = [
        (
            "blocks.0.mlp.fc1.weight",
            Tensor::new(1f32, &Device::Cpu).unwrap(),
            "blocks.0.mlp.fc1.weight has shape []",
        ),
        (
            "patch_embed.proj.weight",
            zeros(&[16, 3, 0, 0]),
            "patch_embed.proj.weight has shape [16, 3, 0, 0]",
        ),
        (
            "patch_embed.proj.weight",
            zeros(&[16, 3, 14, 7]),
            "patch_embed.proj.weight has shape [16, 3, 14, 7]",
        ),
        (
            "pos_embed",
            zeros(&[1, 1, 16]),
            "pos_embed has shape [1, 1, 16]",
        ),
        (
            "register_tokens",
            zeros(&[4]),
            "register_tokens has shape [4]",
        ),
    ];
    for (i, (name, tensor, want)) in cases.into_iter().enumerate() {
        let folder = edited_checkpoint(
            &dir.path().join(i.to_string()),
            "hub",
            |t| {
                t.insert(name.to_string(), tensor);
            },
            false,
        );
        let err = load_dinov2(&folder, &Device::Cpu, &LoadOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains(want), "{err:#}");
        for source in [["--input-npy", s(&input)], ["--image", s(&png)]] {
            let out = dir.path().join("t.npy");
            let run = features(&[
                "--weights",
                s(&folder),
                source[0],
                source[1],
                "--out",
                s(&out),
            ]);
            assert_clean_error(&run, want);
            assert_eq!(
                String::from_utf8_lossy(&run.stderr)
                    .trim_end()
                    .lines()
                    .count(),
                1
            );
        }
    }
    // an HF config with patch_size 0
    let folder = edited_checkpoint(&dir.path().join("hf0"), "hf", |_| {}, true);
    let config = folder.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"patch_size\": 14", "\"patch_size\": 0"),
    )
    .unwrap();
    let run = features(&[
        "--weights",
        s(&folder),
        "--image",
        s(&png),
        "--out",
        s(&dir.path().join("t.npy")),
    ]);
    assert_clean_error(&run, "patch_size 0");
}

/// The patch side comes from the loaded backbone, not a constant 14 (issue 8, item 3): a
/// patch-7 model pads a 100x60 frame to 105x63 (a 15x9 grid), in `stars features` and in the
/// detector's feature extractor alike.
#[test]
fn frames_are_padded_to_the_backbones_patch_size() {
    let dir = scratch();
    let folder = edited_checkpoint(
        dir.path(),
        "hub",
        |t| {
            let proj = Tensor::randn(0f32, 0.1, (16, 3, 7, 7), &Device::Cpu).unwrap();
            t.insert("patch_embed.proj.weight".into(), proj);
        },
        false,
    );
    let png = dir.path().join("frame.png");
    let frame = image::RgbImage::from_fn(100, 60, |x, y| image::Rgb([x as u8, y as u8, 7]));
    frame.save(&png).unwrap();
    let out = dir.path().join("tokens.npy");
    let run = features(&[
        "--weights",
        s(&folder),
        "--image",
        s(&png),
        "--out",
        s(&out),
    ]);
    support::assert_success(&run);
    assert!(String::from_utf8_lossy(&run.stderr).contains("ViT-16x2/7"));
    assert_eq!(Tensor::read_npy(&out).unwrap().dims(), &[9, 15, 16]);

    let extractor = stars::model::flowclas::backbone::open(
        "tiny",
        Some(&folder),
        false,
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let embedded = extractor.embed(&frame).unwrap();
    assert_eq!(embedded.features.dims(), &[1, 16, 9, 15]);
    let padding = embedded.padding;
    assert_eq!(
        (
            padding.patch,
            padding.padded_height(),
            padding.padded_width()
        ),
        (7, 63, 105)
    );
    assert_eq!((padding.top, padding.left), (1, 2));
}

/// The random placeholder's default tokens are the patch embedding alone (a random linear
/// projection of each patch, see docs/detector.md), in `stars features` and the detector, and
/// stay labelled; `--layer` still picks a block.
#[test]
fn random_placeholder_reads_the_patch_embedding_and_stays_labelled() {
    use stars::model::flowclas::backbone;

    let dir = scratch();
    let input_npy = fixtures().join("input.npy");
    let out = dir.path().join("tokens.npy");
    let run = features(&[
        "--random-weights",
        "--arch",
        "small",
        "--input-npy",
        s(&input_npy),
        "--out",
        s(&out),
    ]);
    support::assert_success(&run);
    let label: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(label["random_weights"], true);
    assert_eq!(label["layer"], serde_json::Value::Null);
    let embedding = Tensor::read_npy(&out).unwrap();
    // the same as the patch convolution alone, computed here from the random model
    let model = stars::model::weights::random_dinov2(
        &stars::model::dinov2::Config::vit_small(),
        0,
        &Device::Cpu,
    )
    .unwrap();
    let direct = model
        .model
        .patch_embeddings(&input())
        .unwrap()
        .squeeze(0)
        .unwrap();
    assert!(max_abs_diff(&embedding, &direct) < 1e-5);
    let run = features(&[
        "--random-weights",
        "--arch",
        "small",
        "--input-npy",
        s(&input_npy),
        "--out",
        s(&out),
        "--layer",
        "11",
    ]);
    support::assert_success(&run);
    assert!(max_abs_diff(&Tensor::read_npy(&out).unwrap(), &embedding) > 1e-2);

    let placeholder =
        backbone::open("vit_small", None, true, None, &candle_core::Device::Cpu).unwrap();
    assert!(placeholder.is_random());
    assert_eq!(placeholder.blocks(), Some(0));
    assert!(placeholder.describe().contains("RANDOM WEIGHTS"));
    assert!(placeholder.describe().contains("patch embedding only"));
    let whole =
        backbone::open("vit_small", None, true, Some(12), &candle_core::Device::Cpu).unwrap();
    assert_ne!(
        whole.describe(),
        placeholder.describe(),
        "the cache key must tell them apart"
    );
    let err = backbone::open("vit_small", None, true, Some(13), &candle_core::Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("--backbone-blocks 13"), "{err}");
}
