//! rosbag2 directories: `metadata.yaml` (version 8) + one MCAP file (profile `ros2`, `ros2msg`
//! schemas, `cdr` messages, chunked with an index), written by [`BagWriter`] and read by
//! [`BagReader`]. Messages are the [`crate::msg`] structs.
//!
//! ```no_run
//! use stars::bag::{BagReader, BagWriter, Qos};
//! use stars::msg::{Header, Image, Message, Time};
//! # fn main() -> anyhow::Result<()> {
//! let mut bag = BagWriter::create("out_bag".as_ref())?;
//! bag.add_topic("/camera/image_raw", Image::TYPE, Qos::sensor_data())?;
//! let frame = image::RgbImage::new(64, 48);
//! let header = Header { stamp: Time::from_nanos(1_000), frame_id: "camera".into() };
//! bag.write("/camera/image_raw", 1_000, &Image::from_rgb8(header, &frame))?;
//! bag.finish()?;
//!
//! let bag = BagReader::open("out_bag".as_ref())?;
//! let mut messages = bag.messages(&[])?;
//! while let Some(m) = messages.next_message() {
//!     let image: Image = m?.decode()?;
//!     println!("{} {}x{}", image.encoding, image.width, image.height);
//! }
//! # Ok(())
//! # }
//! ```
pub mod metadata;
pub mod reader;
mod records;
pub mod sequences;
pub mod writer;

pub use metadata::{BagInfo, MetadataFile, Qos};
pub use reader::{BagMessage, BagReader, Messages};
pub use writer::{BagSummary, BagWriter};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{
        Bool, DiagnosticArray, DiagnosticStatus, Encoding, Header, Image, Message, Time,
    };

    fn frame(stamp: u64, w: u32, h: u32) -> Image {
        let header = Header {
            stamp: Time::from_nanos(stamp),
            frame_id: "camera".into(),
        };
        let data = (0..w * h * 3).map(|i| (i as u64 + stamp) as u8).collect();
        Image::packed(header, w, h, Encoding::Rgb8, data)
    }

    /// Writes frames at 30, 10, 20 ns (out of order) and alerts, leaving the writer to the caller.
    fn write_sample(dir: &std::path::Path) -> BagWriter {
        let mut bag = BagWriter::create(dir).unwrap();
        bag.add_topic("/camera/image_raw", Image::TYPE, Qos::sensor_data())
            .unwrap();
        bag.add_topic("/stars/alert/active", Bool::TYPE, Qos::latched())
            .unwrap();
        bag.add_topic(
            "/stars/alert/status",
            DiagnosticArray::TYPE,
            Qos::reliable(),
        )
        .unwrap();
        for t in [30, 10, 20] {
            bag.write("/camera/image_raw", t, &frame(t, 5, 3)).unwrap();
        }
        bag.write("/stars/alert/active", 15, &Bool { data: true })
            .unwrap();
        let status = DiagnosticArray {
            header: Header::default(),
            status: vec![DiagnosticStatus {
                level: DiagnosticStatus::STALE,
                ..Default::default()
            }],
        };
        bag.write("/stars/alert/status", 25, &status).unwrap();
        bag
    }

    fn read_all(dir: &std::path::Path, topics: &[&str]) -> Vec<(String, u64, Vec<u8>)> {
        let bag = BagReader::open(dir).unwrap();
        let mut out = Vec::new();
        let mut it = bag.messages(topics).unwrap();
        while let Some(m) = it.next_message() {
            let m = m.unwrap();
            out.push((m.topic.to_string(), m.log_time, m.data.to_vec()));
        }
        out
    }

    #[test]
    fn round_trip_in_time_order_with_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let summary = write_sample(&dir).finish().unwrap();
        assert_eq!(
            (summary.message_count, summary.start_ns, summary.end_ns),
            (5, 10, 30)
        );

        let all = read_all(&dir, &[]);
        let times: Vec<u64> = all.iter().map(|m| m.1).collect();
        assert_eq!(times, [10, 15, 20, 25, 30]);
        assert_eq!(all[0].2, frame(10, 5, 3).encode());
        assert_eq!(Bool::decode(&all[1].2).unwrap(), Bool { data: true });
        assert_eq!(
            DiagnosticArray::decode(&all[3].2).unwrap().status[0].level,
            DiagnosticStatus::STALE
        );
        let frames = read_all(&dir, &["/camera/image_raw"]);
        assert_eq!(frames.len(), 3);

        let bag = BagReader::open(&dir).unwrap();
        let info = bag.info();
        assert_eq!(info.version, 8);
        assert_eq!(info.relative_file_paths, ["b_0.mcap"]);
        assert_eq!(info.duration.nanoseconds, 20);
        let counts: Vec<(&str, u64)> = info
            .topics_with_message_count
            .iter()
            .map(|t| (t.topic_metadata.name.as_str(), t.message_count))
            .collect();
        assert_eq!(
            counts,
            [
                ("/camera/image_raw", 3),
                ("/stars/alert/active", 1),
                ("/stars/alert/status", 1)
            ]
        );
        let mut it = bag.messages(&["/stars/alert/active"]).unwrap();
        let m = it.next_message().unwrap().unwrap();
        assert!(m
            .decode::<Image>()
            .unwrap_err()
            .to_string()
            .contains("carries std_msgs/msg/Bool"));
        assert!(bag.messages(&["/nope"]).is_err());
    }

    #[test]
    fn dropping_an_unfinished_writer_keeps_what_was_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        drop(write_sample(&dir));
        assert_eq!(read_all(&dir, &[]).len(), 5);
        assert_eq!(BagReader::open(&dir).unwrap().info().message_count, 5);
    }

    #[test]
    fn wrong_type_and_unknown_topic_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let mut bag = write_sample(&tmp.path().join("b"));
        assert!(bag
            .write("/camera/image_raw", 1, &Bool { data: false })
            .is_err());
        assert!(bag.write("/nope", 1, &Bool { data: false }).is_err());
        assert!(bag
            .add_topic("/stars/alert/active", Bool::TYPE, Qos::latched())
            .is_err());
    }

    #[test]
    fn existing_directories_are_protected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        write_sample(&dir).finish().unwrap();
        let err = BagWriter::create(&dir).err().unwrap().to_string();
        assert!(err.contains("not empty"), "{err}");
        BagWriter::create_with(&dir, true)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(BagReader::open(&dir).unwrap().info().message_count, 0);

        std::fs::write(dir.join("notes.txt"), "keep me").unwrap();
        let err = BagWriter::create_with(&dir, true)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a rosbag2 directory"), "{err}");
        assert!(dir.join("notes.txt").exists());
    }
}

#[cfg(test)]
mod corruption_tests {
    use super::tests_support::write_small_bag;
    use super::*;
    use crate::msg::{DiagnosticArray, Image};

    /// Reads everything a (possibly damaged) bag lets us read; errors are fine, panics are not.
    fn read_everything(dir: &std::path::Path) {
        let Ok(bag) = BagReader::open(dir) else {
            return;
        };
        let Ok(mut messages) = bag.messages(&[]) else {
            return;
        };
        while let Some(m) = messages.next_message() {
            let Ok(m) = m else { continue };
            match m.type_name {
                "sensor_msgs/msg/Image" => {
                    let _ = m.decode::<Image>().map(|i| i.to_rgb8());
                }
                _ => {
                    let _ = m.decode::<DiagnosticArray>();
                }
            }
        }
    }

    #[test]
    fn damaged_files_never_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        write_small_bag(&dir);
        let path = dir.join("b_0.mcap");
        let original = std::fs::read(&path).unwrap();
        // Deterministic xorshift, so a failure reproduces.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..300 {
            let mut bytes = original.clone();
            match round % 3 {
                0 => {
                    let at = next() as usize % bytes.len();
                    bytes[at] ^= 1 << (next() % 8);
                }
                1 => {
                    let at = next() as usize % bytes.len();
                    bytes[at..].iter_mut().take(8).for_each(|b| *b = 0xff);
                }
                _ => bytes.truncate(next() as usize % bytes.len()),
            }
            std::fs::write(&path, &bytes).unwrap();
            read_everything(&dir);
        }
        // The undamaged file still reads completely.
        std::fs::write(&path, &original).unwrap();
        let bag = BagReader::open(&dir).unwrap();
        let mut n = 0;
        let mut messages = bag.messages(&[]).unwrap();
        while let Some(m) = messages.next_message() {
            m.unwrap();
            n += 1;
        }
        assert_eq!(n, bag.info().message_count);
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::msg::{
        DiagnosticArray, DiagnosticStatus, Encoding, Header, Image, KeyValue, Message, Time,
    };

    /// A small bag of frames and alert statuses in a few chunks.
    pub fn write_small_bag(dir: &std::path::Path) {
        let mut bag = BagWriter::create(dir).unwrap();
        bag.add_topic("/camera/image_raw", Image::TYPE, Qos::sensor_data())
            .unwrap();
        bag.add_topic(
            "/stars/alert/status",
            DiagnosticArray::TYPE,
            Qos::reliable(),
        )
        .unwrap();
        for k in 0..6u64 {
            let header = Header {
                stamp: Time::from_nanos(k),
                frame_id: "camera".into(),
            };
            let data = (0..6 * 4 * 3).map(|i| i as u8).collect();
            let image = Image::packed(header.clone(), 6, 4, Encoding::Rgb8, data);
            bag.write("/camera/image_raw", k, &image).unwrap();
            let status = DiagnosticArray {
                header,
                status: vec![DiagnosticStatus {
                    values: vec![KeyValue {
                        key: "score".into(),
                        value: k.to_string(),
                    }],
                    ..Default::default()
                }],
            };
            bag.write("/stars/alert/status", k, &status).unwrap();
        }
        bag.finish().unwrap();
    }
}
