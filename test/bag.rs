//! rosbag2 I/O as users and other tools meet it: our bags read by `rosbags` and `mcap` +
//! `mcap-ros2-support`, bags written by `rosbags` read by us, TALLO <-> bag conversion, and
//! corrupt input.
mod support;

use std::path::{Path, PathBuf};

use image::{GrayImage, Rgb, RgbImage};
use serde_json::{json, Value};
use stars::bag::{BagReader, BagWriter, Qos};
use stars::msg::{
    Bool, Cdr, CdrReader, CdrWriter, DiagnosticArray, DiagnosticStatus, Encoding, Header, Image,
    KeyValue, Message, MessageType, Time,
};
use support::{assert_clean_error, python, run_python, stars};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn header_json(h: &Header) -> Value {
    json!({"stamp": [h.stamp.sec, h.stamp.nanosec], "frame_id": h.frame_id})
}

/// A message as the fixture scripts print it (test/fixtures/bag_common.py).
fn message_json(type_name: &str, data: &[u8]) -> Value {
    match type_name {
        "sensor_msgs/msg/Image" => {
            let m = Image::decode(data).unwrap();
            json!({
                "header": header_json(&m.header),
                "height": m.height, "width": m.width,
                "encoding": m.encoding.to_string(),
                "is_bigendian": u8::from(m.is_bigendian),
                "step": m.step,
                "data_hex": hex(&m.data),
            })
        }
        "std_msgs/msg/Bool" => json!({"data": Bool::decode(data).unwrap().data}),
        "diagnostic_msgs/msg/DiagnosticArray" => {
            let m = DiagnosticArray::decode(data).unwrap();
            let status: Vec<Value> = m
                .status
                .iter()
                .map(|s| {
                    json!({
                        "level": s.level, "name": s.name, "message": s.message,
                        "hardware_id": s.hardware_id,
                        "values": s.values.iter().map(|kv| json!([kv.key, kv.value])).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"header": header_json(&m.header), "status": status})
        }
        other => panic!("unexpected type {other}"),
    }
}

/// Every message of `dir` as our reader decodes it, in the fixture scripts' JSON shape.
fn our_messages(dir: &Path) -> Vec<Value> {
    let bag = BagReader::open(dir).unwrap();
    let mut out = Vec::new();
    let mut it = bag.messages(&[]).unwrap();
    while let Some(m) = it.next_message() {
        let m = m.unwrap();
        out.push(json!({"topic": m.topic, "log_time": m.log_time, "msg": message_json(m.type_name, m.data)}));
    }
    out
}

fn header(stamp_ns: u64, frame_id: &str) -> Header {
    Header {
        stamp: Time::from_nanos(stamp_ns),
        frame_id: frame_id.into(),
    }
}

fn alert_status(stamp_ns: u64) -> DiagnosticArray {
    DiagnosticArray {
        header: header(stamp_ns, "camera"),
        status: vec![
            DiagnosticStatus {
                level: DiagnosticStatus::WARN,
                name: "stars/alert".into(),
                message: "anomaly".into(),
                hardware_id: "cam0".into(),
                values: vec![
                    KeyValue {
                        key: "score".into(),
                        value: "0.93".into(),
                    },
                    KeyValue {
                        key: "area".into(),
                        value: "12".into(),
                    },
                ],
            },
            DiagnosticStatus {
                level: DiagnosticStatus::STALE,
                name: "stale".into(),
                ..Default::default()
            },
        ],
    }
}

#[test]
fn cdr_matches_rosbags_byte_for_byte_and_big_endian_decodes() {
    let Some(py) = python() else { return };
    let reference: Value = serde_json::from_str(&run_python(&py, "cdr_rosbags.py", &[])).unwrap();
    let h = Header {
        stamp: Time {
            sec: 7,
            nanosec: 123,
        },
        frame_id: "camera".into(),
    };
    let image = Image::packed(h.clone(), 3, 2, Encoding::Rgb8, (0..18).collect());
    let mut diag = alert_status(0);
    diag.header = h.clone();
    diag.status[1].level = 3;

    fn check<M: Message + PartialEq + std::fmt::Debug>(reference: &Value, msg: &M) {
        let r = &reference[M::TYPE.name];
        assert_eq!(
            hex(&msg.encode()),
            r["le"].as_str().unwrap(),
            "{}",
            M::TYPE.name
        );
        let be = unhex(r["be"].as_str().unwrap());
        assert_eq!(&M::decode(&be).unwrap(), msg, "{} big-endian", M::TYPE.name);
    }
    check(&reference, &image);
    check(&reference, &Bool { data: true });
    check(&reference, &diag);
    check(&reference, &h);
}

/// A bag with every message type we publish, written through the library.
fn write_our_bag(dir: &Path) {
    let mut bag = BagWriter::create(dir).unwrap();
    bag.add_topic("/camera/image_raw", Image::TYPE, Qos::sensor_data())
        .unwrap();
    bag.add_topic(
        "/stars/refined/anomaly_map",
        Image::TYPE,
        Qos::sensor_data(),
    )
    .unwrap();
    bag.add_topic("/stars/alert/active", Bool::TYPE, Qos::latched())
        .unwrap();
    bag.add_topic(
        "/stars/alert/status",
        DiagnosticArray::TYPE,
        Qos::reliable(),
    )
    .unwrap();
    for k in 0..3u64 {
        let t = 1_767_225_600_000_000_000 + k * 100_000_000;
        let rgb = RgbImage::from_fn(33, 17, |x, y| Rgb([x as u8, y as u8, (k * 40) as u8]));
        bag.write(
            "/camera/image_raw",
            t,
            &Image::from_rgb8(header(t, "camera"), &rgb),
        )
        .unwrap();
        let map: Vec<u8> = (0..33 * 17)
            .flat_map(|i| (i as f32 / 561.0).to_le_bytes())
            .collect();
        let map = Image::packed(
            header(t, "camera"),
            33,
            17,
            Encoding::Float32 { channels: 1 },
            map,
        );
        bag.write("/stars/refined/anomaly_map", t, &map).unwrap();
        bag.write("/stars/alert/active", t, &Bool { data: k == 2 })
            .unwrap();
        bag.write("/stars/alert/status", t, &alert_status(t))
            .unwrap();
    }
    bag.finish().unwrap();
}

#[test]
fn our_bags_are_read_field_for_field_by_rosbags_and_mcap_ros2() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ours");
    write_our_bag(&dir);
    let ours = our_messages(&dir);
    assert_eq!(ours.len(), 12);

    let rb: Value =
        serde_json::from_str(&run_python(&py, "bag_read_rosbags.py", &[path_str(&dir)])).unwrap();
    assert_eq!(rb["distro"], "jazzy");
    assert_eq!(rb["message_count"], 12);
    assert_eq!(rb["messages"].as_array().unwrap(), &ours);
    for c in rb["connections"].as_array().unwrap() {
        assert_eq!(c["definition_matches_typestore"], true, "{c}");
        assert_eq!(c["hash_matches_typestore"], true, "{c}");
        assert_eq!(c["serialization_format"], "cdr");
        assert_eq!(c["count"], 3);
        let q = &c["qos"][0];
        let expected = match c["topic"].as_str().unwrap() {
            "/stars/alert/active" => ("reliable", "transient_local", 1),
            "/stars/alert/status" => ("reliable", "volatile", 10),
            _ => ("reliable", "volatile", 5),
        };
        assert_eq!(
            (
                q["reliability"].as_str().unwrap(),
                q["durability"].as_str().unwrap(),
                q["depth"].as_u64().unwrap()
            ),
            expected,
            "{c}"
        );
    }

    let mcap = dir.join("ours_0.mcap");
    let mr: Value =
        serde_json::from_str(&run_python(&py, "bag_read_mcap.py", &[path_str(&mcap)])).unwrap();
    assert_eq!(mr["profile"], "ros2");
    assert_eq!(mr["message_count"], 12);
    assert!(mr["chunk_count"].as_u64().unwrap() >= 1, "indexed chunks");
    assert_eq!(mr["messages"].as_array().unwrap(), &ours);
    for c in mr["channels"].as_array().unwrap() {
        assert_eq!(c["message_encoding"], "cdr");
        assert_eq!(c["schema_encoding"], "ros2msg");
        assert_eq!(
            c["metadata_keys"],
            json!(["offered_qos_profiles", "topic_type_hash"])
        );
    }
    assert_eq!(
        mr["rosbag2_metadata_keys"],
        json!(["ros_distro", "serialized_metadata"])
    );
}

/// Pixel (x, y), channel c of frame k in test/fixtures/bag_write_rosbags.py.
fn pattern(x: u32, y: u32, c: u32, k: u32) -> u8 {
    ((7 * x + 13 * y + 29 * c + 31 * k) % 256) as u8
}

#[test]
fn rosbags_written_bags_are_read_and_converted_to_tallo_exactly() {
    let Some(py) = python() else { return };
    for args in [&["8"][..], &["9"], &["8", "zstd"]] {
        let version = args.join(" ");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("foreign");
        let script_args: Vec<&str> = [path_str(&dir)]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        run_python(&py, "bag_write_rosbags.py", &script_args);

        // Field for field what rosbags itself reads back.
        let rb: Value =
            serde_json::from_str(&run_python(&py, "bag_read_rosbags.py", &[path_str(&dir)]))
                .unwrap();
        assert_eq!(
            rb["messages"].as_array().unwrap(),
            &our_messages(&dir),
            "v{version}"
        );

        let out = stars(&["bag", "info", path_str(&dir)]);
        support::assert_success(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Messages:          10"), "{text}");
        assert!(
            text.contains("Topic: /camera/image_raw | Type: sensor_msgs/msg/Image | Count: 5"),
            "{text}"
        );

        let tallo = tmp.path().join("tallo");
        let out = stars(&["bag", "to-tallo", path_str(&dir), "--out", path_str(&tallo)]);
        support::assert_success(&out);
        let seq = tallo.join("foreign");
        // (encoding's channel order as RGB indices into the stored channels)
        let orders: [&[u32]; 5] = [&[0, 1, 2], &[2, 1, 0], &[0, 0, 0], &[0, 1, 2], &[0, 1, 2]];
        for (k, order) in orders.iter().enumerate() {
            let k = k as u32;
            let frame = image::open(seq.join(format!("frames/{k:03}.png")))
                .unwrap()
                .to_rgb8();
            assert_eq!(frame.dimensions(), (33, 17));
            for (x, y, p) in frame.enumerate_pixels() {
                let want = [0, 1, 2].map(|c| pattern(x, y, order[c], k));
                assert_eq!(p.0, want, "v{version} frame {k} at {x},{y}");
            }
            let mask = image::open(seq.join(format!("masks/{k:03}.png"))).unwrap();
            let mask = mask.as_luma8().expect("8-bit grey mask");
            for (x, y, p) in mask.enumerate_pixels() {
                assert_eq!(p.0[0], ((x + y + k) % 11) as u8);
            }
        }
    }
}

/// Writes a TALLO sequence: frames `indices` of `w`x`h` with a seed-dependent pattern and masks.
fn write_sequence(dir: &Path, indices: &[u32], (w, h): (u32, u32), seed: u32) {
    std::fs::create_dir_all(dir.join("frames")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    for &i in indices {
        let v = |x: u32, y: u32, c: u32| {
            ((x * 31 + y * 17 + c * 71 + i * 13 + seed * 101) ^ (x * y)) as u8
        };
        RgbImage::from_fn(w, h, |x, y| Rgb([v(x, y, 0), v(x, y, 1), v(x, y, 2)]))
            .save(dir.join(format!("frames/{i:03}.png")))
            .unwrap();
        GrayImage::from_fn(w, h, |x, y| image::Luma([((x / 4 + y / 4 + i) % 12) as u8]))
            .save(dir.join(format!("masks/{i:03}.png")))
            .unwrap();
    }
}

fn png_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for seq in std::fs::read_dir(root).unwrap() {
        for sub in ["frames", "masks"] {
            for f in std::fs::read_dir(seq.as_ref().unwrap().path().join(sub)).unwrap() {
                out.push(f.unwrap().path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Runs `stars bag from-tallo SPLIT --out BAG EXTRA...`.
fn from_tallo(split: &Path, bag: &Path, extra: &[&str]) -> std::process::Output {
    let args = ["bag", "from-tallo", path_str(split), "--out", path_str(bag)];
    stars(&[&args[..], extra].concat())
}

/// Two sequences in `split`: 3 frames of 33x17 and 4 frames of 20x10, with masks.
fn two_sequences(split: &Path) {
    write_sequence(&split.join("cam00_seq000"), &[0, 1, 2], (33, 17), 1);
    write_sequence(&split.join("cam01_seq001"), &[5, 6, 7, 8], (20, 10), 2);
}

#[test]
fn from_tallo_then_to_tallo_is_pixel_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let split = tmp.path().join("test");
    two_sequences(&split);
    let meta = r#"{"sequence_id": "cam01_seq001", "seed": 7}"#;
    std::fs::write(split.join("cam01_seq001/meta.json"), meta).unwrap();
    let bag = tmp.path().join("bag");
    let out = from_tallo(&split, &bag, &["--fps", "5", "--frame-id", "optical"]);
    support::assert_success(&out);

    let reader = BagReader::open(&bag).unwrap();
    assert_eq!(reader.info().message_count, 14);
    // Stamps advance at 5 fps, with the 1 s gap between sequences.
    let mut stamps = Vec::new();
    let mut it = reader.messages(&["/camera/image_raw"]).unwrap();
    while let Some(m) = it.next_message() {
        let img: Image = m.unwrap().decode().unwrap();
        assert_eq!(
            (img.encoding, img.header.frame_id.as_str()),
            (Encoding::Rgb8, "optical")
        );
        stamps.push(img.header.stamp.to_nanos().unwrap() - 1_767_225_600_000_000_000);
    }
    let ms: Vec<u64> = stamps.iter().map(|s| s / 1_000_000).collect();
    assert_eq!(ms, [0, 200, 400, 1600, 1800, 2000, 2200]);

    let out = stars(&["bag", "info", path_str(&bag)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Duration:          2.200000000s"), "{text}");
    assert!(
        text.contains("Start:             2026-01-01 00:00:00.000000000 UTC"),
        "{text}"
    );
    assert!(text.contains("TALLO sequences:   2"), "{text}");

    let back = tmp.path().join("back");
    let out = stars(&["bag", "to-tallo", path_str(&bag), "--out", path_str(&back)]);
    support::assert_success(&out);
    let files = png_files(&split);
    assert_eq!(png_files(&back), files);
    assert_eq!(
        std::fs::read_to_string(back.join("cam01_seq001/meta.json")).unwrap(),
        meta
    );
    assert!(!back.join("cam00_seq000/meta.json").exists());
    for f in &files {
        let a = image::open(split.join(f)).unwrap();
        let b = image::open(back.join(f)).unwrap();
        assert_eq!(a.color(), b.color(), "{}", f.display());
        assert_eq!(a.as_bytes(), b.as_bytes(), "{}", f.display());
    }

    // rosbags sees the sequence table and the messages.
    if let Some(py) = python() {
        let rb: Value =
            serde_json::from_str(&run_python(&py, "bag_read_rosbags.py", &[path_str(&bag)]))
                .unwrap();
        assert_eq!(rb["message_count"], 14);
        let table: Value =
            serde_json::from_str(rb["custom_data"]["stars/tallo_sequences"].as_str().unwrap())
                .unwrap();
        assert_eq!(table[1]["id"], "cam01_seq001");
        assert_eq!(table[1]["frames"], json!([5, 6, 7, 8]));
        // The meta.json attachment does not disturb either reader.
        let ours = our_messages(&bag);
        assert_eq!(rb["messages"].as_array().unwrap(), &ours);
        let mcap = bag.join("bag_0.mcap");
        let mr: Value =
            serde_json::from_str(&run_python(&py, "bag_read_mcap.py", &[path_str(&mcap)])).unwrap();
        assert_eq!(mr["messages"].as_array().unwrap(), &ours);
    }
}

#[test]
fn output_directories_are_not_overwritten_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("seq");
    write_sequence(&seq, &[0], (8, 6), 0);
    let bag = tmp.path().join("bag");
    assert!(from_tallo(&seq, &bag, &[]).status.success());
    assert_clean_error(&from_tallo(&seq, &bag, &[]), "not empty (use --force");
    assert!(from_tallo(&seq, &bag, &["--force"]).status.success());
    let out = from_tallo(&seq, &tmp.path().join("b2"), &["--fps", "0"]);
    assert_clean_error(&out, "--fps must be between");
    // --force never deletes a directory that is not a bag.
    assert_clean_error(
        &from_tallo(&seq, &seq, &["--force"]),
        "not a rosbag2 directory",
    );
    assert!(seq.join("frames/000.png").exists());
}

#[test]
fn wrong_size_png_stops_with_a_clean_error_and_keeps_the_bag_so_far() {
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("seq");
    write_sequence(&seq, &[0, 1, 2, 3], (12, 8), 0);
    RgbImage::new(10, 8)
        .save(seq.join("frames/002.png"))
        .unwrap();
    let bag = tmp.path().join("bag");
    let out = from_tallo(&seq, &bag, &[]);
    assert_clean_error(&out, "002.png is 10x8 but the first frame of seq is 12x8");
    assert_clean_error(&out, "keeps the 4 messages written before this error");

    // The two frames and masks before the bad one are a valid bag, for us and for rosbags.
    let reader = BagReader::open(&bag).unwrap();
    assert_eq!(reader.info().message_count, 4);
    if let Some(py) = python() {
        let rb: Value =
            serde_json::from_str(&run_python(&py, "bag_read_rosbags.py", &[path_str(&bag)]))
                .unwrap();
        assert_eq!(rb["messages"].as_array().unwrap().len(), 4);
    }
    let back = tmp.path().join("back");
    assert!(
        stars(&["bag", "to-tallo", path_str(&bag), "--out", path_str(&back)])
            .status
            .success()
    );
    assert!(back.join("seq/frames/001.png").exists());
    assert!(!back.join("seq/frames/002.png").exists());
}

#[test]
fn truncated_mcap_and_missing_metadata_are_clean_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ours");
    write_our_bag(&dir);
    let mcap = dir.join("ours_0.mcap");
    let bytes = std::fs::read(&mcap).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 10] {
        std::fs::write(&mcap, &bytes[..cut]).unwrap();
        assert_clean_error(
            &stars(&["bag", "info", path_str(&dir)]),
            "truncated or corrupt MCAP",
        );
        let out = tmp.path().join(format!("out{cut}"));
        assert_clean_error(
            &stars(&["bag", "to-tallo", path_str(&dir), "--out", path_str(&out)]),
            "truncated or corrupt MCAP",
        );
    }
    std::fs::remove_file(dir.join("metadata.yaml")).unwrap();
    assert_clean_error(&stars(&["bag", "info", path_str(&dir)]), "no metadata.yaml");
    assert_clean_error(
        &stars(&["bag", "info", path_str(&tmp.path().join("nope"))]),
        "no metadata.yaml",
    );
}

/// metadata.yaml is untrusted: a storage path with `..`, an absolute one, a symlink leading
/// out of the bag, and a start + duration past u64 nanoseconds are one-line errors, no file
/// outside the bag is opened and nothing panics (the overflow used to print 1970 in release and
/// panic in debug builds).
#[test]
fn hostile_metadata_paths_and_times_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other");
    write_our_bag(&other);
    let dir = tmp.path().join("ours");
    write_our_bag(&dir);
    let meta = std::fs::read_to_string(dir.join("metadata.yaml")).unwrap();
    let with = |from: &str, to: &str| {
        assert!(meta.contains(from), "{from} not in metadata.yaml");
        std::fs::write(dir.join("metadata.yaml"), meta.replace(from, to)).unwrap();
        stars(&["bag", "info", path_str(&dir)])
    };
    let file = "- ours_0.mcap";
    let escape = "- ../other/other_0.mcap";
    assert_clean_error(&with(file, escape), "not a plain path inside");
    let absolute = format!("- {}", other.join("other_0.mcap").display());
    assert_clean_error(&with(file, &absolute), "not a plain path inside");
    std::os::unix::fs::symlink(other.join("other_0.mcap"), dir.join("link.mcap")).unwrap();
    assert_clean_error(
        &with(file, "- link.mcap"),
        "leads outside the bag directory",
    );

    let start = meta
        .lines()
        .find(|l| l.trim_start().starts_with("nanoseconds_since_epoch:"))
        .unwrap()
        .to_string();
    let huge = start.replace(
        start
            .trim_start()
            .trim_start_matches("nanoseconds_since_epoch:")
            .trim(),
        &u64::MAX.to_string(),
    );
    assert_clean_error(&with(&start, &huge), "starting_time + duration");
    // the untouched metadata still opens
    std::fs::write(dir.join("metadata.yaml"), &meta).unwrap();
    support::assert_success(&stars(&["bag", "info", path_str(&dir)]));
}

/// An already encoded (possibly invalid) `sensor_msgs/Image` CDR buffer, written as is.
struct RawImage(Vec<u8>);

impl Cdr for RawImage {
    fn write(&self, _: &mut CdrWriter) {
        unreachable!("encode_into copies the buffer")
    }
    fn read(_: &mut CdrReader) -> anyhow::Result<Self> {
        unreachable!("only written")
    }
}

impl Message for RawImage {
    const TYPE: MessageType = Image::TYPE;
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

/// A bag whose third frame is `bad` (raw CDR), after two good frames.
fn bag_with_bad_third_frame(dir: &Path, bad: &[u8]) {
    let mut bag = BagWriter::create(dir).unwrap();
    bag.add_topic("/camera/image_raw", Image::TYPE, Qos::sensor_data())
        .unwrap();
    for t in 0..2 {
        let rgb = RgbImage::from_pixel(4, 3, Rgb([t as u8, 2, 3]));
        bag.write(
            "/camera/image_raw",
            t + 1,
            &Image::from_rgb8(header(t + 1, "c"), &rgb),
        )
        .unwrap();
    }
    bag.write("/camera/image_raw", 3, &RawImage(bad.to_vec()))
        .unwrap();
    bag.finish().unwrap();
}

#[test]
fn bad_frames_are_clean_errors_and_earlier_frames_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let good = Image::from_rgb8(header(3, "c"), &RgbImage::new(4, 3));
    let mut unknown = good.encode();
    let at = unknown.windows(4).position(|w| w == b"rgb8").unwrap();
    unknown[at..at + 4].copy_from_slice(b"uyvy");
    let mut short = good.clone();
    short.data.truncate(35);
    let cases = [
        (unknown, "unknown image encoding \"uyvy\""),
        (
            short.encode(),
            "image data is 35 bytes but step 12 x height 3 = 36",
        ),
        (good.encode()[..20].to_vec(), "CDR buffer truncated"),
    ];
    for (i, (bad, needle)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("bag{i}"));
        bag_with_bad_third_frame(&dir, bad);
        let out_dir = tmp.path().join(format!("out{i}"));
        let out = stars(&[
            "bag",
            "to-tallo",
            path_str(&dir),
            "--out",
            path_str(&out_dir),
        ]);
        assert_clean_error(&out, needle);
        let seq = out_dir.join(format!("bag{i}"));
        assert!(seq.join("frames/000.png").exists() && seq.join("frames/001.png").exists());
    }
}

/// A `stars bag from-tallo` bag of two sequences (3 and 4 frames with masks), each with a
/// `meta.json`, so an attachment comes before the first frame and between the sequences.
fn from_tallo_bag(root: &Path) -> PathBuf {
    let split = root.join("test");
    two_sequences(&split);
    for (id, seed) in [("cam00_seq000", 3), ("cam01_seq001", 7)] {
        let meta = format!(r#"{{"sequence_id": "{id}", "seed": {seed}}}"#);
        std::fs::write(split.join(id).join("meta.json"), meta).unwrap();
    }
    let bag = root.join("bag");
    support::assert_success(&from_tallo(&split, &bag, &["--fps", "10"]));
    bag
}

/// The MCAP file of the one-file bag `dir`.
fn mcap_file(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap().to_str().unwrap();
    dir.join(format!("{name}_0.mcap"))
}

/// rosbag2's MCAP reader plays a bag only if its chunks carry message indexes (it checks the
/// first chunk: "cannot read MCAP in time order with no message indexes"). Every chunk of every
/// bag we write holds messages, and indexes each of them, as the `mcap` Python reader sees it.
#[test]
fn every_chunk_of_our_bags_holds_indexed_messages() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    write_our_bag(&ours);
    let tallo = from_tallo_bag(tmp.path());
    // A from-tallo run that stops at a bad frame: its bag is closed early.
    let seq = tmp.path().join("seq");
    write_sequence(&seq, &[0, 1, 2], (12, 8), 0);
    std::fs::write(seq.join("meta.json"), "{}").unwrap();
    RgbImage::new(10, 8)
        .save(seq.join("frames/002.png"))
        .unwrap();
    let early = tmp.path().join("early");
    let out = from_tallo(&seq, &early, &[]);
    assert_clean_error(&out, "keeps the 4 messages written before this error");

    for (dir, expected) in [(&ours, 12), (&tallo, 14), (&early, 4)] {
        let report: Value = serde_json::from_str(&run_python(
            &py,
            "bag_mcap_index.py",
            &[path_str(&mcap_file(dir))],
        ))
        .unwrap();
        let chunks = report["chunks"].as_array().unwrap();
        assert!(!chunks.is_empty(), "{}: no chunks", dir.display());
        let mut total = 0;
        for (i, c) in chunks.iter().enumerate() {
            let what = format!("{} chunk {i}: {c}", dir.display());
            let messages = c["messages"].as_u64().unwrap();
            assert!(messages > 0, "{what}: no messages");
            assert!(c["message_index_length"].as_u64().unwrap() > 0, "{what}");
            assert_eq!(c["message_index_offsets"], c["channels"], "{what}");
            assert_eq!(c["indexed"].as_u64().unwrap(), messages, "{what}");
            total += messages;
        }
        assert_eq!(total, expected, "{}", dir.display());
        assert_eq!(report["message_count"], expected, "{}", dir.display());
    }
}

/// ROS 2 is sourced here: `AMENT_PREFIX_PATH` is set and `ros2` runs.
/// The `Messages:` count of a `bag info` listing (ours and `ros2 bag info` share the layout).
fn listed_messages(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("Messages:"))
        .unwrap_or_else(|| panic!("no Messages: line in {info}"))
        .trim()
        .parse()
        .unwrap()
}

/// With ROS 2 sourced: `ros2 bag play` of a `stars bag from-tallo` bag delivers every frame and
/// mask to reliable rclpy subscribers (so the bag is playable and offers reliable QoS), and
/// `ros2 bag info` counts the messages `stars bag info` does.
#[test]
fn ros2_bag_play_delivers_every_message_to_a_reliable_subscriber() {
    let tmp = tempfile::tempdir().unwrap();
    let bag = from_tallo_bag(tmp.path());

    let ours = stars(&["bag", "info", path_str(&bag)]);
    support::assert_success(&ours);
    let ours = listed_messages(&String::from_utf8_lossy(&ours.stdout));
    assert_eq!(ours, 14);

    let Some(report) = support::ros2_replay(&bag) else {
        return;
    };
    assert_eq!(
        report["info_messages"], ours,
        "ros2 bag info vs stars bag info"
    );
    let output = report["player_output"].as_str().unwrap();
    assert_eq!(report["player_rc"], 0, "ros2 bag play failed:\n{output}");

    let reader = BagReader::open(&bag).unwrap();
    for topic in ["/camera/image_raw", "/tallo/gt_mask"] {
        let mut expected = Vec::new();
        let mut it = reader.messages(&[topic]).unwrap();
        while let Some(m) = it.next_message() {
            expected.push(m.unwrap().log_time);
        }
        let mut got: Vec<u64> = report["received"][topic]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, expected, "{topic} as received; player:\n{output}");
    }
}
