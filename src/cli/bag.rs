//! `stars bag`: inspect rosbag2 bags and convert TALLO-layout sequences to and from them.
//!
//! `from-tallo` writes frames (rgb8) on `/camera/image_raw` and masks (mono8) on
//! `/tallo/gt_mask`, one sequence after another, stamps advancing at `--fps` with a gap between
//! sequences. Which frames came from which sequence is recorded in `metadata.yaml` under
//! `custom_data` (see [`crate::bag::sequences`]), so `to-tallo` can restore the directory
//! layout; bags without it become one sequence.
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use super::out::outln;

use anyhow::{bail, ensure, Context, Result};

use crate::bag::sequences::{is_plain_name, SequenceSpan, SEQUENCES_KEY};
use crate::bag::{BagReader, BagWriter, Qos};
use crate::cli::progress;
use crate::data::tallo::{list_sequences, Sequence};
use crate::msg::{Header, Image, ImageRef, Message, Time};

/// Default first stamp of `from-tallo`: 2026-01-01T00:00:00Z (fixed, so output is reproducible).
const DEFAULT_START_SEC: f64 = 1_767_225_600.0;
const FRAMES_TOPIC: &str = "/camera/image_raw";
const MASKS_TOPIC: &str = "/tallo/gt_mask";

/// Subcommands of `stars bag`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print a bag's files, size, duration, time range and topics (like `ros2 bag info`).
    #[command(after_help = "Example:\n  stars bag info runs/tiny_bag")]
    Info(InfoArgs),
    /// Convert TALLO-layout sequences (frames/, masks/) into a rosbag2 bag (MCAP).
    #[command(after_help = "Examples:\n  \
        stars bag from-tallo data/tiny/test --out runs/test_bag\n  \
        stars bag from-tallo data/tiny/test/cam00_seq000 --out runs/one_seq --fps 5 --force\n\n\
        Frames go to /camera/image_raw (rgb8), masks to /tallo/gt_mask (mono8). The sequence\n\
        table is stored in metadata.yaml custom_data (stars/tallo_sequences).")]
    FromTallo(FromTalloArgs),
    /// Write a bag's frames (and masks) back as TALLO-layout sequence directories.
    #[command(after_help = "Examples:\n  \
        stars bag to-tallo runs/test_bag --out data/roundtrip\n  \
        stars bag to-tallo recorded_bag --out data/recorded --topic /camera/color/image_raw\n\n\
        rgb8, bgr8, rgba8, bgra8 and mono8 frames are written as RGB8 PNG; masks as 8-bit PNG.\n\
        Bags not made by from-tallo become one sequence named after the bag directory.")]
    ToTallo(ToTalloArgs),
}

/// Arguments of `stars bag info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// The bag directory (holding metadata.yaml).
    pub bag: PathBuf,
}

/// Arguments of `stars bag from-tallo`.
#[derive(clap::Args, Debug)]
pub struct FromTalloArgs {
    /// A sequence directory (holding frames/) or a split directory of sequences.
    pub input: PathBuf,
    /// Output bag directory; must not exist or be empty (see --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Frame rate of the stamps, frames per second.
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
    /// header.frame_id of every frame and mask.
    #[arg(long, default_value = "camera")]
    pub frame_id: String,
    /// Seconds between the last frame of a sequence and the first of the next.
    #[arg(long, default_value_t = 1.0)]
    pub gap_sec: f64,
    /// Stamp of the first frame, in seconds since the epoch (default 2026-01-01T00:00:00Z).
    #[arg(long, default_value_t = DEFAULT_START_SEC)]
    pub start_sec: f64,
    /// Replace an existing bag in --out (only a directory holding a bag is replaced).
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `stars bag to-tallo`.
#[derive(clap::Args, Debug)]
pub struct ToTalloArgs {
    /// The bag directory (holding metadata.yaml).
    pub bag: PathBuf,
    /// Output directory; sequence directories are created in it.
    #[arg(long)]
    pub out: PathBuf,
    /// Topic of the frames (sensor_msgs/msg/Image).
    #[arg(long, default_value = FRAMES_TOPIC)]
    pub topic: String,
    /// Topic of the masks (mono8), paired with frames by header.stamp; skipped when absent.
    #[arg(long, default_value = MASKS_TOPIC)]
    pub mask_topic: String,
    /// Also export the 32FC1 anomaly maps of this topic (e.g. /stars/refined/anomaly_map, as
    /// `stars run` records it) as MAPS_OUT/SEQ/masks/NNN.npy, the layout `stars eval` scores.
    #[arg(long, value_name = "TOPIC", requires = "maps_out")]
    pub maps_topic: Option<String>,
    /// Folder for the maps of --maps-topic (with a maps.json saying where they came from).
    #[arg(long, value_name = "DIR", requires = "maps_topic")]
    pub maps_out: Option<PathBuf>,
    /// Write into a non-empty --out, overwriting files of the same name.
    #[arg(long)]
    pub force: bool,
}

/// Runs a `stars bag` subcommand.
pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Info(args) => info(&args),
        Command::FromTallo(args) => from_tallo(&args),
        Command::ToTallo(args) => to_tallo(&args),
    }
    .map(|()| ExitCode::SUCCESS)
}

fn info(args: &InfoArgs) -> Result<()> {
    let bag = BagReader::open(&args.bag)?;
    let info = bag.info();
    let start = info.starting_time.nanoseconds_since_epoch;
    let end = start + info.duration.nanoseconds;
    let metadata_len = std::fs::metadata(args.bag.join("metadata.yaml")).map_or(0, |m| m.len());
    outln!("Files:             {}", info.relative_file_paths.join(", "))?;
    outln!(
        "Bag size:          {}",
        human_bytes(bag.size_bytes() + metadata_len)
    )?;
    outln!("Storage id:        {}", info.storage_identifier)?;
    outln!("ROS Distro:        {}", info.ros_distro)?;
    outln!("Duration:          {}s", seconds(info.duration.nanoseconds))?;
    outln!("Start:             {} ({})", utc(start), seconds(start))?;
    outln!("End:               {} ({})", utc(end), seconds(end))?;
    outln!("Messages:          {}", info.message_count)?;
    let topics = &info.topics_with_message_count;
    let name_w = topics.iter().map(|t| t.topic_metadata.name.len()).max();
    let type_w = topics
        .iter()
        .map(|t| t.topic_metadata.type_name.len())
        .max();
    for (i, t) in topics.iter().enumerate() {
        let m = &t.topic_metadata;
        outln!(
            "{:<19}Topic: {:<nw$} | Type: {:<tw$} | Count: {} | Serialization Format: {}",
            if i == 0 { "Topic information: " } else { "" },
            m.name,
            m.type_name,
            t.message_count,
            m.serialization_format,
            nw = name_w.unwrap_or(0),
            tw = type_w.unwrap_or(0),
        )?;
    }
    if let Some(spans) = bag.sequence_table()? {
        outln!("TALLO sequences:   {}", spans.len())?;
    }
    Ok(())
}

fn from_tallo(args: &FromTalloArgs) -> Result<()> {
    // Bounds keep every stamp within `builtin_interfaces/Time` (i32 seconds) and u64 arithmetic.
    ensure!(
        (1e-3..=1e6).contains(&args.fps),
        "--fps must be between 0.001 and 1000000, got {}",
        args.fps
    );
    ensure!(
        (0.0..=1e6).contains(&args.gap_sec),
        "--gap-sec must be between 0 and 1000000 seconds, got {}",
        args.gap_sec
    );
    ensure!(
        (0.0..=2e9).contains(&args.start_sec),
        "--start-sec must be between 0 and 2e9 seconds after the epoch, got {}",
        args.start_sec
    );
    let sequences = list_sequences(&args.input)?;
    let mut bag = BagWriter::create_with(&args.out, args.force)?;
    bag.add_topic(FRAMES_TOPIC, Image::TYPE, Qos::sensor_data())?;
    if sequences
        .iter()
        .any(|s| s.frames.iter().any(|f| f.mask.is_some()))
    {
        bag.add_topic(MASKS_TOPIC, Image::TYPE, Qos::sensor_data())?;
    }
    let period_ns = (1e9 / args.fps).round() as u64;
    let total: usize = sequences.iter().map(|s| s.frames.len()).sum();
    let bar = progress::bar(total as u64, "from-tallo");
    let mut spans = Vec::new();
    let mut next_start = (args.start_sec * 1e9).round() as u64;
    let mut result = Ok(());
    for seq in &sequences {
        let mut span = SequenceSpan {
            id: seq.id.clone(),
            start_ns: next_start,
            period_ns,
            frames: Vec::new(),
        };
        result = write_sequence(&mut bag, seq, &mut span, &args.frame_id, &bar);
        let last = span.start_ns + period_ns * (span.frames.len() as u64).saturating_sub(1);
        spans.push(span);
        if result.is_err() {
            break;
        }
        next_start = last + period_ns + (args.gap_sec * 1e9).round() as u64;
    }
    bar.finish_and_clear();
    // Record the table even after an error, so the frames already written keep their origin.
    spans.retain(|s| !s.frames.is_empty());
    bag.set_custom_data(SEQUENCES_KEY, serde_json::to_string(&spans)?);
    let written = bag.message_count();
    let out = args.out.display().to_string();
    let summary = bag.finish();
    result
        .with_context(|| format!("{out} keeps the {written} messages written before this error"))?;
    let summary = summary?;
    eprintln!(
        "wrote {} ({} sequences, {} messages, {}s)",
        summary.dir.display(),
        spans.len(),
        summary.message_count,
        seconds(summary.end_ns - summary.start_ns)
    );
    Ok(())
}

/// Writes one sequence's `meta.json` (as an attachment), frames and masks, adding each frame
/// index to `span` once written.
fn write_sequence(
    bag: &mut BagWriter,
    seq: &Sequence,
    span: &mut SequenceSpan,
    frame_id: &str,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let meta = seq.meta_path();
    if meta.is_file() {
        let text = std::fs::read(&meta).with_context(|| format!("reading {}", meta.display()))?;
        let name = meta_attachment(&seq.id);
        bag.attach(&name, "application/json", &text, span.start_ns)?;
    }
    let mut size = None;
    for (i, frame) in seq.frames.iter().enumerate() {
        let rgb = seq.load_image(i)?;
        let first = *size.get_or_insert(rgb.dimensions());
        if rgb.dimensions() != first {
            bail!(
                "{} is {}x{} but the first frame of {} is {}x{}",
                frame.image.display(),
                rgb.width(),
                rgb.height(),
                seq.id,
                first.0,
                first.1
            );
        }
        let mask = frame.mask.as_ref().map(|_| seq.load_mask(i)).transpose()?;
        let stamp = span.start_ns + span.period_ns * span.frames.len() as u64;
        let header = Header {
            stamp: Time::from_nanos(stamp),
            frame_id: frame_id.to_string(),
        };
        bag.write(FRAMES_TOPIC, stamp, &Image::from_rgb8(header.clone(), &rgb))?;
        if let Some(mask) = mask {
            bag.write(MASKS_TOPIC, stamp, &Image::from_mono8(header, &mask))?;
        }
        span.frames.push(frame.index);
        bar.inc(1);
    }
    Ok(())
}

fn to_tallo(args: &ToTalloArgs) -> Result<()> {
    let bag = BagReader::open(&args.bag)?;
    if args.out.is_dir() && std::fs::read_dir(&args.out)?.next().is_some() && !args.force {
        bail!(
            "{} exists and is not empty (use --force to write into it)",
            args.out.display()
        );
    }
    let spans = bag.sequence_table()?;
    let fallback_id = args
        .bag
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| is_plain_name(n))
        .unwrap_or_else(|| "sequence".into());
    let count = |topic: &str| {
        bag.info()
            .topics_with_message_count
            .iter()
            .find(|t| t.topic_metadata.name == topic)
            .map(|t| t.message_count)
    };
    let frames = count(&args.topic).with_context(|| {
        format!(
            "{} has no topic {} (see --topic)",
            args.bag.display(),
            args.topic
        )
    })?;
    let masks = count(&args.mask_topic);
    let bar = progress::bar(frames + masks.unwrap_or(0), "to-tallo");

    // Pass 1: frames. Remember where each stamp went so masks can follow it.
    let mut placed: HashMap<u64, (PathBuf, u32)> = HashMap::new();
    let mut sequence_ids = std::collections::BTreeSet::new();
    let mut messages = bag.messages(&[&args.topic])?;
    let mut next_index = 0u32;
    while let Some(m) = messages.next_message() {
        let m = m?;
        let image = m.image()?;
        let stamp = stamp_of(&image)?;
        let (id, index) = match &spans {
            Some(spans) => spans
                .iter()
                .find_map(|s| s.frame_at(stamp).map(|i| (s.id.as_str(), i)))
                .with_context(|| {
                    format!(
                        "frame stamped {stamp} ns is in no sequence of custom_data {SEQUENCES_KEY}"
                    )
                })?,
            None => (fallback_id.as_str(), next_index),
        };
        next_index += 1;
        let seq_dir = args.out.join(id);
        if sequence_ids.insert(id.to_string()) {
            std::fs::create_dir_all(seq_dir.join("frames"))
                .with_context(|| format!("creating {}", seq_dir.display()))?;
        }
        let path = seq_dir.join(format!("frames/{index:03}.png"));
        image
            .to_rgb8()
            .with_context(|| format!("frame stamped {stamp} ns on {}", args.topic))?
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        if placed.insert(stamp, (seq_dir, index)).is_some() && masks.is_some() {
            bail!("two frames are stamped {stamp} ns, so masks cannot be paired with them");
        }
        bar.inc(1);
    }
    drop(messages);

    // Pass 2: masks, by header.stamp.
    if masks.is_some() {
        let mut messages = bag.messages(&[&args.mask_topic])?;
        while let Some(m) = messages.next_message() {
            let m = m?;
            let image = m.image()?;
            let stamp = stamp_of(&image)?;
            let (seq_dir, index) = placed.get(&stamp).with_context(|| {
                format!(
                    "mask stamped {stamp} ns on {} has no frame",
                    args.mask_topic
                )
            })?;
            std::fs::create_dir_all(seq_dir.join("masks"))
                .with_context(|| format!("creating {}", seq_dir.display()))?;
            let path = seq_dir.join(format!("masks/{index:03}.png"));
            image
                .to_mono8()
                .with_context(|| format!("mask stamped {stamp} ns on {}", args.mask_topic))?
                .save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            bar.inc(1);
        }
    }
    if let (Some(topic), Some(dir)) = (&args.maps_topic, &args.maps_out) {
        export_maps(&bag, topic, dir, &placed, &args.out)?;
    }
    bar.finish_and_clear();
    // Sequences' meta.json, kept by from-tallo as attachments.
    for id in &sequence_ids {
        let name = meta_attachment(id);
        if bag.attachment_names().any(|n| n == name) {
            let path = args.out.join(id).join("meta.json");
            std::fs::write(&path, bag.attachment(&name)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    eprintln!(
        "wrote {} frames in {} sequences to {}",
        placed.len(),
        sequence_ids.len(),
        args.out.display()
    );
    Ok(())
}

/// Pass 3 of `to-tallo`: the anomaly maps on `topic`, paired with the frames by stamp, written
/// as `dir/SEQ/masks/NNN.npy` beside a `maps.json` that carries the bag's placeholder label.
fn export_maps(
    bag: &BagReader,
    topic: &str,
    dir: &std::path::Path,
    placed: &HashMap<u64, (PathBuf, u32)>,
    frames_root: &std::path::Path,
) -> Result<()> {
    let mut messages = bag.messages(&[topic])?;
    let mut written = 0usize;
    while let Some(m) = messages.next_message() {
        let m = m?;
        let image = m.image()?;
        let stamp = stamp_of(&image)?;
        let image = image.into_owned();
        let (seq_dir, index) = placed
            .get(&stamp)
            .with_context(|| format!("map stamped {stamp} ns on {topic} has no frame"))?;
        let map = crate::node::maps::map_from_image(&image)
            .with_context(|| format!("map stamped {stamp} ns on {topic}"))?;
        let rel = seq_dir.strip_prefix(frames_root).unwrap_or(seq_dir);
        let out_dir = dir.join(rel).join("masks");
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        let path = out_dir.join(format!("{index:03}.npy"));
        candle_core::Tensor::from_vec(map.data, (map.height, map.width), &candle_core::Device::Cpu)
            .and_then(|t| t.write_npy(&path))
            .with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    ensure!(
        written > 0,
        "the bag has no messages on {topic} (see --maps-topic)"
    );
    let custom = bag.info().custom_data.clone().unwrap_or_default();
    let random = custom.get("stars/random_backbone").map(String::as_str) == Some("true");
    let note = serde_json::json!({
        "source": "stars bag to-tallo --maps-topic",
        "topic": topic,
        "maps": written,
        "temporal_method": custom.get("stars/temporal_method"),
        "backbone": custom.get("stars/backbone"),
        "random_backbone": random,
    });
    let path = dir.join("maps.json");
    std::fs::write(&path, serde_json::to_string_pretty(&note)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {written} maps of {topic} to {}", dir.display());
    Ok(())
}

/// Attachment name of a sequence's `meta.json`.
fn meta_attachment(id: &str) -> String {
    format!("{id}/meta.json")
}

fn stamp_of(image: &ImageRef) -> Result<u64> {
    image
        .header
        .stamp
        .to_nanos()
        .with_context(|| format!("image stamp {:?} is before 1970", image.header.stamp))
}

/// `12.345678901` seconds from nanoseconds.
fn seconds(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// `1.5 MiB`-style sizes.
fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// `2026-01-01 00:00:00.000000000 UTC` from nanoseconds since the epoch.
fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:09} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ns % 1_000_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000000000 UTC");
        assert_eq!(
            utc(1_767_225_600_000_000_005),
            "2026-01-01 00:00:00.000000005 UTC"
        );
        assert_eq!(
            utc(951_782_400_000_000_000),
            "2000-02-29 00:00:00.000000000 UTC"
        );
    }
}
