//! Hostile inputs: declared lengths and sizes beyond the bytes present or beyond our limits are
//! errors found before anything of that size is allocated (a test that allocated a terabyte
//! would abort, not fail), and every input the fuzzers found (test/fixtures/regressions/) stays
//! a clean error. The table in docs/reliability.md lists these tests.
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use stars::bag::{BagReader, BagWriter, Qos};
use stars::eval::calibrate::Threshold;
use stars::model::weights::{load_dinov2, LoadOptions};
use stars::model::{flowclas, stars as refiner};
use stars::msg::sensor_msgs::{MAX_IMAGE_BYTES, MAX_IMAGE_DIMENSION};
use stars::msg::{
    Bool, Cdr, CdrWriter, DiagnosticArray, Encoding, Header, Image, Message, MessageType,
};
use stars::node::config::GraphConfig;
use stars::node::maps::{features_from_image, map_from_image};

const TB: u64 = 1 << 40;
const GIB: u64 = 1 << 30;

fn error<T>(result: anyhow::Result<T>) -> String {
    match result {
        Ok(_) => panic!("a hostile input was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_error<T>(result: anyhow::Result<T>, needle: &str) {
    let e = error(result);
    assert!(e.contains(needle), "{e:?} does not mention {needle:?}");
}

/// A CDR buffer: the encapsulation header, then whatever `body` writes.
fn cdr(body: impl FnOnce(&mut CdrWriter)) -> Vec<u8> {
    let mut buf = Vec::new();
    body(&mut CdrWriter::new(&mut buf, 0));
    buf
}

#[test]
fn cdr_sequences_and_strings_claiming_u32_max_are_errors() {
    let statuses = cdr(|w| {
        Header::default().write(w);
        w.sequence_len(u32::MAX as usize);
    });
    assert_error(DiagnosticArray::decode(&statuses), "does not fit");
    let frame_id = cdr(|w| {
        w.i32(0);
        w.u32(0);
        w.u32(u32::MAX);
    });
    assert_error(DiagnosticArray::decode(&frame_id), "truncated");
    let pixels = cdr(|w| {
        Header::default().write(w);
        w.u32(1);
        w.u32(1);
        w.string("mono8");
        w.u8(0);
        w.u32(1);
        w.u32(u32::MAX);
    });
    assert_error(Image::decode(&pixels), "truncated");
}

/// An image message declaring `width` x `height` and `step`, carrying `data` bytes.
fn image_claiming(width: u32, height: u32, encoding: &str, step: u32, data: &[u8]) -> Vec<u8> {
    cdr(|w| {
        Header::default().write(w);
        w.u32(height);
        w.u32(width);
        w.string(encoding);
        w.u8(0);
        w.u32(step);
        w.bytes(data);
    })
}

#[test]
fn images_claiming_more_than_the_limits_are_errors() {
    let huge = image_claiming(100_000, 100_000, "rgb8", 300_000, &[0; 12]);
    assert_error(Image::decode(&huge), "32768-pixel dimension limit");
    assert_error(Image::decode_ref(&huge), "32768-pixel dimension limit");
    let side = MAX_IMAGE_DIMENSION;
    let over_bytes = image_claiming(side, side, "rgb8", 3 * side, &[0; 12]);
    assert_error(
        Image::decode(&over_bytes),
        &format!("{MAX_IMAGE_BYTES}-byte limit"),
    );
    // A step whose product with the height passes u32 but not the byte limit.
    let tall_step = image_claiming(1, side, "mono8", u32::MAX, &[0; 12]);
    assert_error(Image::decode(&tall_step), "byte limit");
    let channels = image_claiming(1, 1, "32FC4294967296", 4, &[0; 4]);
    assert_error(Image::decode(&channels), "unknown image encoding");
    // Within the limits, but more than the bytes present.
    let short = image_claiming(64, 64, "32FC1", 256, &[0; 16]);
    assert_error(Image::decode(&short), "image data is 16 bytes");
}

#[test]
fn maps_and_features_of_the_wrong_shape_are_errors() {
    let rgb = Image::packed(Header::default(), 2, 2, Encoding::Rgb8, vec![0; 12]);
    assert!(map_from_image(&rgb).is_err());
    assert!(features_from_image(&rgb).is_err());
    let mut map = Image::packed(
        Header::default(),
        2,
        2,
        Encoding::Float32 { channels: 1 },
        vec![0; 16],
    );
    map.data.truncate(8);
    assert!(map_from_image(&map).is_err());
}

/// Writes a bag of `/b` Bools whose MCAP holds `chunks` (log times per chunk) compressed
/// with `compression`; metadata.yaml comes from a `BagWriter` bag with the same messages.
fn compressed_bag(dir: &Path, chunks: &[&[u64]], compression: mcap::Compression) -> PathBuf {
    let mut bag = BagWriter::create(dir).unwrap();
    bag.add_topic("/b", Bool::TYPE, Qos::reliable()).unwrap();
    for &t in chunks.iter().flat_map(|c| c.iter()) {
        bag.write("/b", t, &Bool { data: true }).unwrap();
    }
    bag.finish().unwrap();
    let path = dir.join(format!(
        "{}_0.mcap",
        dir.file_name().unwrap().to_str().unwrap()
    ));
    let mut w = mcap::WriteOptions::new()
        .profile("ros2")
        .compression(Some(compression))
        .chunk_size(None)
        .create(std::io::BufWriter::new(
            std::fs::File::create(&path).unwrap(),
        ))
        .unwrap();
    let ty: MessageType = Bool::TYPE;
    let schema = w
        .add_schema(ty.name, "ros2msg", ty.definition.as_bytes())
        .unwrap();
    let channel = w
        .add_channel(schema, "/b", "cdr", &BTreeMap::new())
        .unwrap();
    for chunk in chunks {
        for &t in *chunk {
            let header = mcap::records::MessageHeader {
                channel_id: channel,
                sequence: 0,
                log_time: t,
                publish_time: t,
            };
            w.write_to_known_channel(&header, &Bool { data: true }.encode())
                .unwrap();
        }
        w.flush().unwrap();
    }
    w.finish().unwrap();
    path
}

/// Rewrites the `uncompressed_size` of the chunk indexes in the MCAP summary (in file order)
/// to `claims`, leaving the chunks themselves alone.
fn claim_uncompressed(path: &Path, claims: &[u64]) {
    let mut bytes = std::fs::read(path).unwrap();
    let summary = mcap::Summary::read(&bytes).unwrap().unwrap();
    let mut indexes = summary.chunk_indexes.clone();
    indexes.sort_by_key(|c| c.chunk_start_offset);
    let mut from = 0;
    for (index, &claim) in indexes.iter().zip(claims) {
        // A chunk index ends with: compression (u32 length + text), compressed, uncompressed.
        let mut tail = (index.compression.len() as u32).to_le_bytes().to_vec();
        tail.extend_from_slice(index.compression.as_bytes());
        tail.extend_from_slice(&index.compressed_size.to_le_bytes());
        tail.extend_from_slice(&index.uncompressed_size.to_le_bytes());
        // Chunk records hold the compressed data after these fields, so only indexes match.
        let at = from
            + bytes[from..]
                .windows(tail.len())
                .position(|w| w == tail)
                .expect("the chunk index is in the summary");
        let size = at + tail.len() - 8;
        bytes[size..size + 8].copy_from_slice(&claim.to_le_bytes());
        from = at + tail.len();
    }
    std::fs::write(path, bytes).unwrap();
    let patched = mcap::Summary::read(&std::fs::read(path).unwrap())
        .unwrap()
        .unwrap();
    let mut got: Vec<_> = patched.chunk_indexes.iter().collect();
    got.sort_by_key(|c| c.chunk_start_offset);
    let got: Vec<u64> = got.iter().map(|c| c.uncompressed_size).collect();
    assert_eq!(&got[..claims.len()], claims, "the claims were written");
}

/// Reads every message of the bag at `dir`, returning the first error.
fn read_bag(dir: &Path) -> anyhow::Result<usize> {
    let bag = BagReader::open(dir)?;
    let mut messages = bag.messages(&[])?;
    let mut n = 0;
    while let Some(m) = messages.next_message() {
        m?.decode::<Bool>()?;
        n += 1;
    }
    Ok(n)
}

#[test]
fn mcap_chunks_claiming_huge_inflated_sizes_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // Chunks apart in time: each is its own batch.
    let apart: &[&[u64]] = &[&[1, 2], &[3, 4], &[5]];
    let dir = tmp.path().join("apart");
    let path = compressed_bag(&dir, apart, mcap::Compression::Zstd);
    assert_eq!(read_bag(&dir).unwrap(), 5);
    claim_uncompressed(&path, &[5 * GIB]);
    assert_error(read_bag(&dir), "claims 5368709120 bytes inflated");
    claim_uncompressed(&path, &[TB]);
    assert_error(read_bag(&dir), "above the 8589934592-byte limit");

    // Three chunks that overlap in time, each under the 4 GiB per-chunk cap, together above
    // the 8 GiB a batch may hold.
    let overlapping: &[&[u64]] = &[&[3], &[1, 5], &[2, 4]];
    let dir = tmp.path().join("overlapping");
    let path = compressed_bag(&dir, overlapping, mcap::Compression::Lz4);
    assert_eq!(read_bag(&dir).unwrap(), 5);
    claim_uncompressed(&path, &[3 * GIB, 3 * GIB, 3 * GIB]);
    assert_error(read_bag(&dir), "overlap in time and would hold");
}

#[test]
fn mcap_chunk_beyond_the_end_of_the_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let mut bag = BagWriter::create(&dir).unwrap();
    bag.add_topic("/b", Bool::TYPE, Qos::reliable()).unwrap();
    bag.write("/b", 1, &Bool { data: true }).unwrap();
    bag.finish().unwrap();
    let path = dir.join("b_0.mcap");
    let mut bytes = std::fs::read(&path).unwrap();
    let summary = mcap::Summary::read(&bytes).unwrap().unwrap();
    let index = &summary.chunk_indexes[0];
    let mut tail = 0u32.to_le_bytes().to_vec();
    tail.extend_from_slice(&index.compressed_size.to_le_bytes());
    tail.extend_from_slice(&index.uncompressed_size.to_le_bytes());
    let at = bytes.windows(tail.len()).rposition(|w| w == tail).unwrap();
    let past = 2 * bytes.len() as u64;
    bytes[at + 4..at + 20].copy_from_slice(&[past.to_le_bytes(), past.to_le_bytes()].concat());
    std::fs::write(&path, bytes).unwrap();
    assert_error(read_bag(&dir), "lies beyond the end of the file");
}

/// A safetensors file whose header is `header` (JSON text) followed by `data`.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A tiny detector checkpoint (random weights) in a new folder.
fn detector_checkpoint() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    support::random_detector_checkpoint(tmp.path());
    tmp
}

/// A tiny refiner checkpoint (random weights) in a new folder.
fn refiner_checkpoint() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let vars = VarMap::new();
    let cfg = refiner::Config::tiny();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    refiner::StarsRefiner::new(&cfg, vb).unwrap();
    let meta = refiner::RefinerMeta {
        config: cfg,
        backbone_arch: "tiny".into(),
        backbone_weights: "test".into(),
        random_backbone: true,
        detector: "test".into(),
        step: 0,
        epoch: 0,
        training: serde_json::Value::Null,
    };
    refiner::save(tmp.path(), &vars, &meta).unwrap();
    tmp
}

/// Sets `key` of the JSON file at `path` (a JSON pointer to an object member) to `value`.
fn set_json(path: &Path, key: &str, value: serde_json::Value) {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (parent, name) = key.rsplit_once('/').unwrap();
    json.pointer_mut(parent)
        .and_then(|p| p.as_object_mut())
        .unwrap()
        .insert(name.to_string(), value);
    std::fs::write(path, json.to_string()).unwrap();
}

#[test]
fn safetensors_claiming_a_terabyte_or_overflowing_shapes_are_errors() {
    let ckpt = detector_checkpoint();
    let weights = ckpt.path().join(flowclas::DETECTOR_WEIGHTS);
    let mut terabyte_header = TB.to_le_bytes().to_vec();
    terabyte_header.extend_from_slice(b"{}");
    std::fs::write(&weights, &terabyte_header).unwrap();
    assert_error(
        flowclas::load(ckpt.path(), &Device::Cpu),
        "detector.safetensors",
    );
    let overflow = safetensors(
        r#"{"norm.weight":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    std::fs::write(&weights, &overflow).unwrap();
    assert_error(
        flowclas::load(ckpt.path(), &Device::Cpu),
        "detector.safetensors",
    );
    // The same files as a DINOv2 backbone.
    let backbone = ckpt.path().join("model.safetensors");
    for bytes in [terabyte_header, overflow] {
        std::fs::write(&backbone, bytes).unwrap();
        assert_error(
            load_dinov2(&backbone, &Device::Cpu, &LoadOptions::default()),
            "model.safetensors",
        );
    }
}

#[test]
fn checkpoint_configs_declaring_huge_widths_are_errors_before_allocating() {
    let ckpt = detector_checkpoint();
    let json = ckpt.path().join(flowclas::DETECTOR_JSON);
    set_json(&json, "/config/channels", serde_json::json!(TB));
    set_json(&json, "/config/steps", serde_json::json!(0));
    set_json(&json, "/state/permutations", serde_json::json!([]));
    assert_error(
        flowclas::load(ckpt.path(), &Device::Cpu),
        "`norm.weight` is [32] but the config needs [1099511627776]",
    );
    let ckpt = detector_checkpoint();
    let json = ckpt.path().join(flowclas::DETECTOR_JSON);
    set_json(&json, "/config/channels", serde_json::json!(TB));
    assert_error(
        flowclas::load(ckpt.path(), &Device::Cpu),
        "permutation 0 has 32 entries, expected 1099511627776",
    );

    for (key, value) in [
        ("/config/feature_channels", TB),
        ("/config/fusion_hidden", TB),
        ("/config/temporal_hidden", TB),
        ("/config/resolution", TB),
        ("/config/fusion_kernel", 1 << 20),
    ] {
        let ckpt = refiner_checkpoint();
        set_json(
            &ckpt.path().join(refiner::REFINER_JSON),
            key,
            serde_json::json!(value),
        );
        let result = refiner::load(ckpt.path(), &Device::Cpu);
        assert!(result.is_err(), "{key} = {value} was accepted");
        let e = error(result);
        assert!(e.contains("refiner.json"), "{key}: {e}");
    }
}

#[test]
fn dinov2_configs_declaring_huge_sizes_are_errors() {
    let fixture = support::repo().join("test/fixtures/dinov2/hf");
    let cases: [&[(&str, u64)]; 6] = [
        &[("/hidden_size", TB)],
        &[("/num_hidden_layers", 1 << 32)],
        &[("/num_register_tokens", TB)],
        &[("/num_attention_heads", 0)],
        &[("/image_size", 1 << 40)],
        // A 2^33 x 2^33 position table: its size overflows usize.
        &[("/image_size", 1 << 33), ("/patch_size", 1)],
    ];
    for case in cases {
        let tmp = tempfile::tempdir().unwrap();
        for file in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture.join(file), tmp.path().join(file)).unwrap();
        }
        for &(key, value) in case {
            set_json(
                &tmp.path().join("config.json"),
                key,
                serde_json::json!(value),
            );
        }
        let e = error(load_dinov2(
            tmp.path(),
            &Device::Cpu,
            &LoadOptions::default(),
        ));
        assert!(
            e.contains("model.safetensors") || e.contains("config.json"),
            "{case:?}: {e}"
        );
    }
}

#[test]
fn yaml_alias_bombs_are_errors() {
    // Nine levels of nine aliases: 9^9 (387 million) nodes if expanded.
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
        .windows(2)
        .map(|w| (w[0], w[1]))
    {
        let refs = vec![format!("*{prev}"); 9].join(", ");
        text.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    assert!(GraphConfig::parse(&text, "bomb").is_err());
    assert!(Threshold::parse(&format!("threshold: 0.5\n{text}"), "bomb").is_err());
}

/// The loaders each fuzz target drives, over one regression input (a file for `cdr` and
/// `yaml`, a folder of files for `bag` and `checkpoint`): a clean error or a value, never a
/// panic.
fn replay(target: &str, input: &Path) -> anyhow::Result<()> {
    let text = || std::fs::read_to_string(input);
    match target {
        "cdr" => {
            let bytes = std::fs::read(input)?;
            let _ = Bool::decode(&bytes);
            let _ = DiagnosticArray::decode(&bytes);
            let image = Image::decode(&bytes)?;
            let _ = map_from_image(&image);
            features_from_image(&image).map(drop)
        }
        "bag" => read_all_messages(input),
        "checkpoint" => match input.file_name().and_then(|n| n.to_str()) {
            Some(n) if n.starts_with("detector") => flowclas::load(input, &Device::Cpu).map(drop),
            Some(n) if n.starts_with("refiner") => refiner::load(input, &Device::Cpu).map(drop),
            _ => load_dinov2(input, &Device::Cpu, &LoadOptions::default()).map(drop),
        },
        "yaml" => {
            let _ = Threshold::parse(&text()?, "regression");
            GraphConfig::parse(&text()?, "regression").map(drop)
        }
        other => panic!("no fuzz target {other}"),
    }
}

fn read_all_messages(dir: &Path) -> anyhow::Result<()> {
    let bag = BagReader::open(dir)?;
    let mut messages = bag.messages(&[])?;
    while let Some(m) = messages.next_message() {
        let m = m?;
        let _ = m.image();
    }
    Ok(())
}

#[test]
fn fuzz_regressions_stay_fixed() {
    let root = support::repo().join("test/fixtures/regressions");
    let mut replayed = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap().path();
        if !target.is_dir() {
            continue; // the README
        }
        let name = target.file_name().unwrap().to_str().unwrap().to_string();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            // Each was a crash (a panic or an allocation blow-up); now it is an error or a value.
            let outcome =
                std::panic::catch_unwind(|| replay(&name, &input).map_err(|e| e.to_string()));
            assert!(outcome.is_ok(), "{} panics", input.display());
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no regression inputs under {}",
        root.display()
    );
}

#[test]
fn tensor_names_match_between_a_saved_and_a_loaded_checkpoint() {
    // The loader hands out the stored tensors themselves: loading keeps every value exactly.
    let ckpt = detector_checkpoint();
    let weights = ckpt.path().join(flowclas::DETECTOR_WEIGHTS);
    let stored = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let (_, vars, _) = flowclas::load(ckpt.path(), &Device::Cpu).unwrap();
    let data = vars.data().lock().unwrap();
    assert_eq!(data.len(), stored.len());
    for (name, t) in &stored {
        let loaded: &Tensor = data[name].as_tensor();
        let diff = (loaded - t).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }
}
