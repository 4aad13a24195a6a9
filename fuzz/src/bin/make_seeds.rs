//! Writes the seed corpora `fuzz/seeds/<target>/` from small valid files the library makes
//! (and the DINOv2 test fixtures): `cargo run --manifest-path fuzz/Cargo.toml --bin make-seeds`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use stars::bag::sequences::{SequenceSpan, SEQUENCES_KEY};
use stars::bag::{BagWriter, Qos};
use stars::eval::calibrate::Threshold;
use stars::model::{flowclas, stars as refiner};
use stars::msg::{
    Bool, DiagnosticArray, DiagnosticStatus, Encoding, Header, Image, KeyValue, Message, Time,
};
use stars::node::maps::{features_to_image, map_to_image};
use stars::temporal::{AnomalyMap, PatchFeatures};
use stars_fuzz::{join, CHECKPOINT_KINDS};

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = root.join("seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes).with_context(|| format!("{target}/{name}"))
    };
    for (name, bytes) in messages() {
        write("cdr", &name, &bytes)?;
    }
    let tmp = tempfile::tempdir()?;
    for (name, (yaml, mcap)) in bags(tmp.path())? {
        write("bag", &name, &join(&[&yaml, &mcap]))?;
    }
    for (name, kind, files) in checkpoints(tmp.path(), &root.join("../test/fixtures/dinov2"))? {
        let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        let mut input = vec![kind as u8];
        input.extend(join(&parts));
        write("checkpoint", &name, &input)?;
    }
    write(
        "yaml",
        "stars.yaml",
        &std::fs::read(root.join("../config/stars.yaml"))?,
    )?;
    let threshold = tmp.path().join("threshold.yaml");
    Threshold {
        threshold: 0.42,
        tpr: 0.95,
        fpr: 0.1,
        bins: 1000,
        source: "seed".into(),
    }
    .save(&threshold)?;
    write("yaml", "threshold.yaml", &std::fs::read(threshold)?)?;
    Ok(())
}

fn header(t: u64) -> Header {
    Header {
        stamp: Time::from_nanos(t),
        frame_id: "camera".into(),
    }
}

fn status() -> DiagnosticArray {
    DiagnosticArray {
        header: header(7),
        status: vec![DiagnosticStatus {
            level: DiagnosticStatus::WARN,
            name: "stars/alert".into(),
            message: "anomaly".into(),
            hardware_id: "camera".into(),
            values: vec![KeyValue {
                key: "area_px".into(),
                value: "51".into(),
            }],
        }],
    }
}

fn messages() -> Vec<(String, Vec<u8>)> {
    let rgb = Image::packed(header(1), 4, 3, Encoding::Rgb8, (0..36).collect());
    let mut padded = Image::packed(header(2), 2, 2, Encoding::Bgr8, vec![9; 16]);
    padded.step = 8;
    let mono = Image::packed(header(3), 3, 2, Encoding::Mono8, vec![1, 2, 3, 4, 5, 6]);
    let map = AnomalyMap::new(3, 2, vec![0.0, 0.5, 1.0, 0.25, 0.75, 0.1]).expect("3x2 values");
    let features =
        PatchFeatures::new(2, 2, 2, (0..8).map(|v| v as f32).collect()).expect("2x2x2 values");
    vec![
        ("image_rgb8".into(), rgb.encode()),
        ("image_bgr8_padded".into(), padded.encode()),
        ("image_mono8".into(), mono.encode()),
        ("map_32fc1".into(), map_to_image(header(4), &map).encode()),
        (
            "features_32fc2".into(),
            features_to_image(header(5), &features).encode(),
        ),
        ("bool".into(), Bool { data: true }.encode()),
        ("diagnostics".into(), status().encode()),
    ]
}

/// A bag's `metadata.yaml` and MCAP bytes.
type BagFiles = (Vec<u8>, Vec<u8>);

/// (seed name, (metadata.yaml, MCAP)) of: a bag as `stars run` writes one (frames, alerts, an attachment,
/// a sequence table), and the same metadata over zstd and lz4 chunks that overlap in time.
fn bags(tmp: &Path) -> Result<Vec<(String, BagFiles)>> {
    let dir = tmp.join("bag");
    let mut bag = BagWriter::create(&dir)?;
    bag.add_topic("/camera/image_raw", Image::TYPE, Qos::sensor_data())?;
    bag.add_topic("/stars/alert/active", Bool::TYPE, Qos::latched())?;
    bag.add_topic(
        "/stars/alert/status",
        DiagnosticArray::TYPE,
        Qos::reliable(),
    )?;
    for t in [10, 20] {
        let frame = Image::packed(header(t), 2, 2, Encoding::Rgb8, vec![t as u8; 12]);
        bag.write("/camera/image_raw", t, &frame)?;
    }
    bag.write("/stars/alert/active", 15, &Bool { data: true })?;
    bag.write("/stars/alert/status", 25, &status())?;
    bag.attach("seq/meta.json", "application/json", b"{}", 10)?;
    let spans = [SequenceSpan {
        id: "seq".into(),
        start_ns: 10,
        period_ns: 10,
        frames: vec![0, 1],
    }];
    bag.set_custom_data(SEQUENCES_KEY, serde_json::to_string(&spans)?);
    bag.finish()?;
    let read = |name: &str| std::fs::read(dir.join(name)).with_context(|| name.to_string());
    let mut out = vec![(
        "run_output".to_string(),
        (read("metadata.yaml")?, read("bag_0.mcap")?),
    )];

    // Five Bools on /b in one bag, for its metadata; the MCAP is then replaced.
    let dir = tmp.join("bag");
    std::fs::remove_dir_all(&dir)?;
    let mut bag = BagWriter::create(&dir)?;
    bag.add_topic("/b", Bool::TYPE, Qos::reliable())?;
    for t in 1..=5 {
        bag.write("/b", t, &Bool { data: t % 2 == 0 })?;
    }
    bag.finish()?;
    let yaml = read("metadata.yaml")?;
    for (name, compression) in [
        ("overlapping_zstd", mcap::Compression::Zstd),
        ("overlapping_lz4", mcap::Compression::Lz4),
    ] {
        out.push((
            name.into(),
            (yaml.clone(), overlapping_chunks(compression)?),
        ));
    }
    Ok(out)
}

/// An MCAP of five Bools on /b in three compressed chunks whose time ranges overlap.
fn overlapping_chunks(compression: mcap::Compression) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = mcap::WriteOptions::new()
        .profile("ros2")
        .compression(Some(compression))
        .chunk_size(None)
        .create(&mut buf)?;
    let schema = w.add_schema(Bool::TYPE.name, "ros2msg", Bool::TYPE.definition.as_bytes())?;
    let channel = w.add_channel(schema, "/b", "cdr", &BTreeMap::new())?;
    let mut sequence = 0;
    for chunk in [&[5u64][..], &[1, 4], &[2, 3]] {
        for &t in chunk {
            let header = mcap::records::MessageHeader {
                channel_id: channel,
                sequence,
                log_time: t,
                publish_time: t,
            };
            w.write_to_known_channel(&header, &Bool { data: t % 2 == 0 }.encode())?;
            sequence += 1;
        }
        w.flush()?;
    }
    w.finish()?;
    drop(w);
    Ok(buf.into_inner())
}

/// A checkpoint seed: its name, its kind (an index into CHECKPOINT_KINDS) and the bytes of the
/// kind's files in order.
type CheckpointSeed = (String, usize, Vec<Vec<u8>>);

fn checkpoints(tmp: &Path, dinov2: &Path) -> Result<Vec<CheckpointSeed>> {
    let read_all = |dir: &Path, kind: usize| -> Result<Vec<Vec<u8>>> {
        CHECKPOINT_KINDS[kind]
            .1
            .iter()
            .map(|f| std::fs::read(dir.join(f)).with_context(|| f.to_string()))
            .collect()
    };
    let device = Device::Cpu;
    let vars = VarMap::new();
    let cfg = flowclas::Config::tiny();
    let state = flowclas::FlowState::new(&cfg, 0);
    flowclas::FlowClas::new(
        &cfg,
        &state,
        VarBuilder::from_varmap(&vars, DType::F32, &device),
    )?;
    let detector = tmp.join("detector");
    flowclas::save(
        &detector,
        &vars,
        &flowclas::CheckpointMeta {
            config: cfg,
            state,
            backbone_arch: "tiny".into(),
            backbone_weights: "seed".into(),
            backbone_blocks: Some(0),
            step: 0,
            epoch: 0,
            training: serde_json::Value::Null,
        },
    )?;
    let vars = VarMap::new();
    let cfg = refiner::Config::tiny();
    refiner::StarsRefiner::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &device))?;
    let stars_dir = tmp.join("refiner");
    refiner::save(
        &stars_dir,
        &vars,
        &refiner::RefinerMeta {
            config: cfg,
            backbone_arch: "tiny".into(),
            backbone_weights: "seed".into(),
            random_backbone: true,
            detector: "seed".into(),
            step: 0,
            epoch: 0,
            training: serde_json::Value::Null,
        },
    )?;
    Ok(vec![
        ("detector_tiny".into(), 0, read_all(&detector, 0)?),
        ("refiner_tiny".into(), 1, read_all(&stars_dir, 1)?),
        ("dinov2_hub".into(), 2, read_all(&dinov2.join("hub"), 2)?),
        (
            "dinov2_hub_rein".into(),
            2,
            read_all(&dinov2.join("hub_rein"), 2)?,
        ),
        ("dinov2_hf".into(), 3, read_all(&dinov2.join("hf"), 3)?),
    ])
}
