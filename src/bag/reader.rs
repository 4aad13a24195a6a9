//! [`BagReader`]: opens a rosbag2 directory (metadata.yaml + one MCAP) and streams its messages
//! in log-time order through the MCAP chunk index.
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use mcap::records::{op, ChunkIndex, Record};
use mcap::sans_io::summary_reader::{SummaryReadEvent, SummaryReader, SummaryReaderOptions};
use mcap::sans_io::{LinearReadEvent, LinearReader, LinearReaderOptions};
use mcap::Summary;

use super::metadata::{BagInfo, MetadataFile};
use super::records;
use crate::msg::{Image, ImageRef, Message};

/// Largest inflated size of a compressed chunk we accept (4 GiB), so a hostile file cannot make
/// us allocate without bound.
const MAX_INFLATED_CHUNK: u64 = 4 << 30;
/// Largest total a batch of time-overlapping chunks may hold at once (compressed bytes read
/// plus bytes inflated), so the per-chunk cap cannot be multiplied by overlapping chunks.
const MAX_BATCH_BYTES: u64 = 8 << 30;

/// What a batch of chunks holds in memory at once: per chunk, its compressed bytes and, when
/// compressed, its inflated bytes too.
fn batch_bytes(chunks: &[ChunkIndex]) -> u64 {
    chunks
        .iter()
        .map(|c| {
            let inflated = if c.compression.is_empty() {
                0
            } else {
                c.uncompressed_size
            };
            c.compressed_size.saturating_add(inflated)
        })
        .fold(0, u64::saturating_add)
}

/// An open rosbag2 directory.
pub struct BagReader {
    dir: PathBuf,
    info: BagInfo,
    mcap_path: PathBuf,
    file_len: u64,
    summary: Summary,
}

/// The storage file `name` of the bag in `dir`. metadata.yaml is untrusted: the name must be
/// a relative path of plain components (no `..`, no root), and after symlinks it must still be
/// inside the bag directory, so a bag cannot make us read another bag's or any other file.
fn storage_file(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    use std::path::Component;
    ensure!(
        !name.is_empty()
            && Path::new(name)
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
        "{}: metadata.yaml names the storage file {name:?}, which is not a plain path inside \
         the bag directory",
        dir.display()
    );
    let path = dir.join(name);
    let (real_dir, real_path) = (
        dir.canonicalize()
            .with_context(|| format!("opening {}", dir.display()))?,
        path.canonicalize()
            .with_context(|| format!("opening {}", path.display()))?,
    );
    ensure!(
        real_path.starts_with(&real_dir),
        "{}: the storage file {name:?} leads outside the bag directory (to {})",
        dir.display(),
        real_path.display()
    );
    Ok(path)
}

impl BagReader {
    /// Opens `dir`, checks that `metadata.yaml` and the MCAP summary agree, and reads the index.
    pub fn open(dir: &Path) -> Result<Self> {
        let info = MetadataFile::load(dir)?.rosbag2_bagfile_information;
        ensure!(
            info.storage_identifier == "mcap",
            "{}: storage {:?} is not supported, only mcap (convert with `ros2 bag convert`)",
            dir.display(),
            info.storage_identifier
        );
        ensure!(
            info.compression_mode.is_empty(),
            "{}: bag-level compression ({} {}) is not supported",
            dir.display(),
            info.compression_mode,
            info.compression_format
        );
        let file_name = match info.relative_file_paths.as_slice() {
            [one] => one,
            [] => bail!("{}: metadata.yaml lists no storage file", dir.display()),
            many => bail!(
                "{}: bags split into {} files are not supported",
                dir.display(),
                many.len()
            ),
        };
        let mcap_path = storage_file(dir, file_name)?;
        ensure!(
            info.starting_time
                .nanoseconds_since_epoch
                .checked_add(info.duration.nanoseconds)
                .is_some(),
            "{}: metadata.yaml's starting_time + duration ({} + {} ns) is past the year 2554",
            dir.display(),
            info.starting_time.nanoseconds_since_epoch,
            info.duration.nanoseconds
        );
        let mut file =
            File::open(&mcap_path).with_context(|| format!("opening {}", mcap_path.display()))?;
        let file_len = file
            .metadata()
            .with_context(|| format!("reading {}", mcap_path.display()))?
            .len();
        let summary = records::check_summary(&mut file, file_len)
            .and_then(|()| read_summary(&mut file, file_len))
            .with_context(|| {
                format!(
                    "{}: truncated or corrupt MCAP (cannot read its summary)",
                    mcap_path.display()
                )
            })?
            .with_context(|| {
                format!(
                    "{} has no summary section (not closed cleanly?)",
                    mcap_path.display()
                )
            })?;
        let in_file = summary.stats.as_ref().map(|s| s.message_count);
        if let Some(n) = in_file {
            ensure!(
                n == info.message_count,
                "metadata.yaml claims {} messages but {} holds {n}",
                info.message_count,
                mcap_path.display()
            );
        }
        ensure!(
            info.message_count == 0 || !summary.chunk_indexes.is_empty(),
            "{} has no chunk index; re-index it (e.g. `mcap recover`)",
            mcap_path.display()
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            info,
            mcap_path,
            file_len,
            summary,
        })
    }

    /// `metadata.yaml`'s content.
    pub fn info(&self) -> &BagInfo {
        &self.info
    }

    /// Size of the MCAP file in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.file_len
    }

    /// Names of the MCAP attachments, in file order.
    pub fn attachment_names(&self) -> impl Iterator<Item = &str> {
        self.summary
            .attachment_indexes
            .iter()
            .map(|a| a.name.as_str())
    }

    /// The content of the first attachment called `name`.
    pub fn attachment(&self, name: &str) -> Result<Vec<u8>> {
        let path = &self.mcap_path;
        let index = self
            .summary
            .attachment_indexes
            .iter()
            .find(|a| a.name == name)
            .with_context(|| format!("{} has no attachment {name}", path.display()))?;
        const RECORD_HEADER: u64 = 1 + 8;
        ensure!(
            index.length >= RECORD_HEADER
                && index.offset.saturating_add(index.length) <= self.file_len,
            "{}: attachment {name} lies outside the file",
            path.display()
        );
        let mut record = vec![0; index.length as usize];
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        file.seek(SeekFrom::Start(index.offset))
            .and_then(|_| file.read_exact(&mut record))
            .with_context(|| format!("reading attachment {name} of {}", path.display()))?;
        let body = &record[RECORD_HEADER as usize..];
        match records::check(op::ATTACHMENT, body)
            .ok()
            .and_then(|()| mcap::parse_record(op::ATTACHMENT, body).ok())
        {
            Some(Record::Attachment { data, .. }) => Ok(data.into_owned()),
            _ => bail!("{}: attachment {name} is damaged", path.display()),
        }
    }

    /// Streams the messages of `topics` (all when empty) in log-time order.
    pub fn messages(&self, topics: &[&str]) -> Result<Messages<'_>> {
        for t in topics {
            if !self.summary.channels.values().any(|c| c.topic == *t) {
                let known: Vec<&str> = self
                    .summary
                    .channels
                    .values()
                    .map(|c| c.topic.as_str())
                    .collect();
                bail!(
                    "{} has no topic {t} (topics: {})",
                    self.dir.display(),
                    known.join(", ")
                );
            }
        }
        let channels: BTreeSet<u16> = self
            .summary
            .channels
            .values()
            .filter(|c| topics.contains(&c.topic.as_str()))
            .map(|c| c.id)
            .collect();
        // Chunks by start time; with a topic filter, skip chunks indexed as not holding them.
        let mut chunks: Vec<ChunkIndex> = self
            .summary
            .chunk_indexes
            .iter()
            .filter(|c| {
                channels.is_empty()
                    || c.message_index_offsets.is_empty()
                    || c.message_index_offsets
                        .keys()
                        .any(|id| channels.contains(id))
            })
            .cloned()
            .collect();
        chunks.sort_by_key(|c| (c.message_start_time, c.chunk_start_offset));
        let file = File::open(&self.mcap_path)
            .with_context(|| format!("opening {}", self.mcap_path.display()))?;
        Ok(Messages {
            bag: self,
            chunks,
            next_chunk: 0,
            channels,
            file,
            slots: Vec::new(),
            entries: Vec::new(),
            pos: 0,
        })
    }
}

/// Reads the MCAP summary section; `None` when the file has none.
fn read_summary(file: &mut File, len: u64) -> Result<Option<Summary>> {
    let mut reader = SummaryReader::new_with_options(
        SummaryReaderOptions::default()
            .with_file_size(len)
            .with_record_length_limit(records::MAX_SUMMARY_RECORD as usize),
    );
    while let Some(event) = reader.next_event() {
        match event? {
            SummaryReadEvent::ReadRequest(n) => {
                let read = file.read(reader.insert(n))?;
                reader.notify_read(read);
            }
            SummaryReadEvent::SeekRequest(to) => {
                let pos = file.seek(to)?;
                reader.notify_seeked(pos);
            }
        }
    }
    Ok(reader.finish())
}

/// One message of a bag; its bytes are valid until the next call to
/// [`Messages::next_message`].
#[derive(Clone, Copy, Debug)]
pub struct BagMessage<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// The ROS type of the topic's schema, e.g. `sensor_msgs/msg/Image`.
    pub type_name: &'a str,
    /// Receive time in nanoseconds since the epoch (rosbag2's timestamp).
    pub log_time: u64,
    /// The CDR-encoded message, encapsulation header included.
    pub data: &'a [u8],
}

impl<'a> BagMessage<'a> {
    /// Decodes the message as `M`, checking that the topic carries that type.
    pub fn decode<M: Message>(&self) -> Result<M> {
        self.check_type(M::TYPE.name)?;
        M::decode(self.data).with_context(|| self.describe())
    }

    /// Decodes a `sensor_msgs/msg/Image` without copying its pixels.
    pub fn image(&self) -> Result<ImageRef<'a>> {
        self.check_type(Image::TYPE.name)?;
        Image::decode_ref(self.data).with_context(|| self.describe())
    }

    fn check_type(&self, name: &str) -> Result<()> {
        ensure!(
            self.type_name == name,
            "topic {} carries {}, not {name}",
            self.topic,
            self.type_name
        );
        Ok(())
    }

    fn describe(&self) -> String {
        format!("message on {} at {} ns", self.topic, self.log_time)
    }
}

/// Where one message of the loaded chunks lies.
struct Entry {
    log_time: u64,
    channel: u16,
    /// Index into [`Messages::slots`].
    slot: usize,
    start: usize,
    end: usize,
}

/// A stream of messages in log-time order (a lending iterator: see [`Self::next_message`]).
///
/// Chunks are visited by start time, in batches of chunks whose time ranges overlap (one chunk
/// per batch for bags written in time order); a batch's messages are sorted by log time. An
/// uncompressed chunk is read once into a reused buffer and its messages are lent from there
/// without further copies; compressed chunks (zstd, lz4) are inflated by the `mcap` crate.
pub struct Messages<'a> {
    bag: &'a BagReader,
    chunks: Vec<ChunkIndex>,
    next_chunk: usize,
    /// Channels to keep; empty keeps all.
    channels: BTreeSet<u16>,
    file: File,
    /// Message bytes of the current batch, one buffer per chunk.
    slots: Vec<Vec<u8>>,
    entries: Vec<Entry>,
    pos: usize,
}

impl Messages<'_> {
    /// The next message, or `None` at the end; after an error the stream ends.
    pub fn next_message(&mut self) -> Option<Result<BagMessage<'_>>> {
        while self.pos == self.entries.len() {
            match self.load_batch() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.next_chunk = self.chunks.len();
                    self.entries.clear();
                    self.pos = 0;
                    return Some(Err(e));
                }
            }
        }
        let e = &self.entries[self.pos];
        self.pos += 1;
        let channel = match self.bag.summary.channels.get(&e.channel) {
            Some(c) => c,
            None => {
                return Some(Err(anyhow::anyhow!(
                    "{}: message on unknown channel {}",
                    self.bag.mcap_path.display(),
                    e.channel
                )))
            }
        };
        if channel.message_encoding != "cdr" {
            return Some(Err(anyhow::anyhow!(
                "topic {} is encoded as {:?}, not cdr",
                channel.topic,
                channel.message_encoding
            )));
        }
        Some(Ok(BagMessage {
            topic: &channel.topic,
            type_name: channel.schema.as_ref().map_or("", |s| s.name.as_str()),
            log_time: e.log_time,
            data: &self.slots[e.slot][e.start..e.end],
        }))
    }

    /// Loads the next batch of time-overlapping chunks; `false` when none is left.
    fn load_batch(&mut self) -> Result<bool> {
        let first = self.next_chunk;
        let Some(chunk) = self.chunks.get(first) else {
            return Ok(false);
        };
        let mut end = chunk.message_end_time;
        self.next_chunk += 1;
        while let Some(c) = self.chunks.get(self.next_chunk) {
            if c.message_start_time > end {
                break;
            }
            end = end.max(c.message_end_time);
            self.next_chunk += 1;
        }
        let held = batch_bytes(&self.chunks[first..self.next_chunk]);
        ensure!(
            held <= MAX_BATCH_BYTES,
            "{}: chunks {first}..{} overlap in time and would hold {held} bytes at once, above the \
             {MAX_BATCH_BYTES}-byte limit",
            self.bag.mcap_path.display(),
            self.next_chunk
        );
        self.entries.clear();
        self.pos = 0;
        let n = self.next_chunk - first;
        if self.slots.len() < n {
            self.slots.resize_with(n, Vec::new);
        }
        for slot in 0..n {
            self.load_chunk(first + slot, slot).with_context(|| {
                format!(
                    "reading the chunk at byte {} of {}",
                    self.chunks[first + slot].chunk_start_offset,
                    self.bag.mcap_path.display()
                )
            })?;
        }
        // Stable, so equal log times keep file order; already-sorted input costs one pass.
        self.entries.sort_by_key(|e| e.log_time);
        Ok(true)
    }

    fn load_chunk(&mut self, chunk: usize, slot: usize) -> Result<()> {
        let index = &self.chunks[chunk];
        let buf = &mut self.slots[slot];
        if index.compression.is_empty() {
            let offset = index.compressed_data_offset()?;
            read_at(
                &mut self.file,
                self.bag.file_len,
                offset,
                index.compressed_size,
                buf,
            )?;
            ensure!(
                index.uncompressed_size == index.compressed_size,
                "uncompressed chunk at {offset} has inconsistent sizes"
            );
            return index_messages(buf, slot, &self.channels, &mut self.entries);
        }
        let offset = index.chunk_start_offset;
        ensure!(
            index.uncompressed_size <= MAX_INFLATED_CHUNK,
            "compressed chunk at {offset} claims {} bytes inflated, above the {MAX_INFLATED_CHUNK}-byte limit",
            index.uncompressed_size
        );
        // The whole chunk record goes through mcap's linear reader, which inflates it and lends
        // each inner record unparsed: only Message records are parsed (schemas and channels
        // come from the summary), so no inner length is trusted before it is checked.
        read_at(
            &mut self.file,
            self.bag.file_len,
            offset,
            index.chunk_length,
            buf,
        )?;
        let limit = index.uncompressed_size.max(index.chunk_length);
        let mut reader = LinearReader::new_with_options(
            LinearReaderOptions::default()
                .with_skip_start_magic(true)
                .with_skip_end_magic(true)
                .with_record_length_limit(usize::try_from(limit).unwrap_or(usize::MAX)),
        );
        let mut input = buf.as_slice();
        let mut inflated = Vec::new();
        while let Some(event) = reader.next_event() {
            match event? {
                LinearReadEvent::ReadRequest(want) => {
                    let n = want.min(input.len());
                    reader.insert(n).copy_from_slice(&input[..n]);
                    reader.notify_read(n);
                    input = &input[n..];
                }
                LinearReadEvent::Record {
                    opcode: op::MESSAGE,
                    data,
                } => {
                    if let Record::Message { header, data } = mcap::parse_record(op::MESSAGE, data)?
                    {
                        if self.channels.is_empty() || self.channels.contains(&header.channel_id) {
                            let start = inflated.len();
                            inflated.extend_from_slice(&data);
                            self.entries.push(Entry {
                                log_time: header.log_time,
                                channel: header.channel_id,
                                slot,
                                start,
                                end: inflated.len(),
                            });
                        }
                    }
                }
                LinearReadEvent::Record { .. } => {}
            }
        }
        *buf = inflated;
        Ok(())
    }
}

/// Reads `len` bytes at `offset` of `file` (`file_len` bytes long) into `buf`, checking first
/// that they lie inside the file, so a hostile index cannot size the buffer.
fn read_at(file: &mut File, file_len: u64, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
    ensure!(
        offset.saturating_add(len) <= file_len,
        "chunk at {offset} (+{len} bytes) lies beyond the end of the file"
    );
    buf.resize(len as usize, 0);
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(buf))
        .with_context(|| format!("reading {len} bytes at {offset}"))
}

/// Records the messages of an uncompressed chunk's records (`opcode u8, length u64, body`) as
/// entries pointing into `records`.
fn index_messages(
    records: &[u8],
    slot: usize,
    channels: &BTreeSet<u16>,
    entries: &mut Vec<Entry>,
) -> Result<()> {
    const RECORD_HEADER: usize = 1 + 8;
    let mut pos = 0;
    while pos < records.len() {
        let head = records
            .get(pos..pos + RECORD_HEADER)
            .context("chunk ends inside a record header")?;
        let mut len = [0u8; 8];
        len.copy_from_slice(&head[1..]);
        let body_start = pos + RECORD_HEADER;
        let body_end = usize::try_from(u64::from_le_bytes(len))
            .ok()
            .and_then(|len| body_start.checked_add(len))
            .filter(|&end| end <= records.len())
            .context("chunk record runs past the end of its chunk")?;
        if head[0] == op::MESSAGE {
            if let Record::Message { header, data } =
                mcap::parse_record(op::MESSAGE, &records[body_start..body_end])?
            {
                if channels.is_empty() || channels.contains(&header.channel_id) {
                    // The message data is the tail of its record.
                    entries.push(Entry {
                        log_time: header.log_time,
                        channel: header.channel_id,
                        slot,
                        start: body_end - data.len(),
                        end: body_end,
                    });
                }
            }
        }
        pos = body_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn chunk_index(compression: &str, compressed: u64, uncompressed: u64) -> ChunkIndex {
        ChunkIndex {
            message_start_time: 0,
            message_end_time: 10,
            chunk_start_offset: 0,
            chunk_length: compressed,
            message_index_offsets: BTreeMap::new(),
            message_index_length: 0,
            compression: compression.into(),
            compressed_size: compressed,
            uncompressed_size: uncompressed,
        }
    }

    /// Overlapping chunks that each stay under the per-chunk cap still cannot add up past the
    /// batch limit (three chunks claiming 4 GiB inflated each), and claims near u64::MAX do not
    /// wrap around.
    #[test]
    fn overlapping_chunks_are_bounded_together() {
        let gib = 1u64 << 30;
        let one = [chunk_index("zstd", 1000, 4 * gib)];
        assert!(batch_bytes(&one) <= MAX_BATCH_BYTES);
        let three = [
            chunk_index("zstd", 1000, 4 * gib),
            chunk_index("zstd", 1000, 4 * gib),
            chunk_index("lz4", 1000, 4 * gib),
        ];
        assert!(batch_bytes(&three) > MAX_BATCH_BYTES);
        assert_eq!(batch_bytes(&[chunk_index("", 500, 500)]), 500);
        let huge = [chunk_index("zstd", u64::MAX, u64::MAX)];
        assert_eq!(batch_bytes(&huge), u64::MAX);
    }
    use crate::bag::metadata::{
        Duration, StartingTime, TopicMetadata, TopicWithMessageCount, METADATA_VERSION,
    };
    use crate::msg::{Bool, Message};

    /// Writes `chunks` (each a list of (log time, value)) as separate chunks of one MCAP with
    /// `compression`, plus a matching metadata.yaml.
    fn write_mcap(dir: &Path, compression: Option<mcap::Compression>, chunks: &[&[(u64, bool)]]) {
        std::fs::create_dir_all(dir).unwrap();
        let file = File::create(dir.join("x.mcap")).unwrap();
        let mut w = mcap::WriteOptions::new()
            .compression(compression)
            .chunk_size(None)
            .create(std::io::BufWriter::new(file))
            .unwrap();
        let schema = w
            .add_schema(Bool::TYPE.name, "ros2msg", Bool::TYPE.definition.as_bytes())
            .unwrap();
        let channel = w
            .add_channel(schema, "/b", "cdr", &BTreeMap::new())
            .unwrap();
        let mut n = 0;
        for chunk in chunks {
            for &(t, data) in *chunk {
                let header = mcap::records::MessageHeader {
                    channel_id: channel,
                    sequence: n,
                    log_time: t,
                    publish_time: t,
                };
                w.write_to_known_channel(&header, &Bool { data }.encode())
                    .unwrap();
                n += 1;
            }
            w.flush().unwrap();
        }
        w.finish().unwrap();
        let info = BagInfo {
            version: METADATA_VERSION,
            storage_identifier: "mcap".into(),
            duration: Duration::default(),
            starting_time: StartingTime::default(),
            message_count: n.into(),
            topics_with_message_count: vec![TopicWithMessageCount {
                topic_metadata: TopicMetadata {
                    name: "/b".into(),
                    type_name: Bool::TYPE.name.into(),
                    serialization_format: "cdr".into(),
                    offered_qos_profiles: serde_yaml_ng::Value::Null,
                    type_description_hash: String::new(),
                },
                message_count: n.into(),
            }],
            compression_format: String::new(),
            compression_mode: String::new(),
            relative_file_paths: vec!["x.mcap".into()],
            files: Vec::new(),
            custom_data: None,
            ros_distro: String::new(),
        };
        MetadataFile {
            rosbag2_bagfile_information: info,
        }
        .save(dir)
        .unwrap();
    }

    #[test]
    fn overlapping_and_compressed_chunks_come_out_in_time_order() {
        let chunks: &[&[(u64, bool)]] = &[
            &[(5, true)],
            &[(1, true), (4, false)],
            &[(2, false), (3, true)],
        ];
        for compression in [
            None,
            Some(mcap::Compression::Zstd),
            Some(mcap::Compression::Lz4),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            write_mcap(tmp.path(), compression, chunks);
            let bag = BagReader::open(tmp.path()).unwrap();
            assert_eq!(bag.summary.chunk_indexes.len(), 3);
            let mut got = Vec::new();
            let mut it = bag.messages(&["/b"]).unwrap();
            while let Some(m) = it.next_message() {
                let m = m.unwrap();
                got.push((m.log_time, m.decode::<Bool>().unwrap().data));
            }
            assert_eq!(
                got,
                [(1, true), (2, false), (3, true), (4, false), (5, true)],
                "{compression:?}"
            );
        }
    }

    #[test]
    fn metadata_that_disagrees_with_the_mcap_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        write_mcap(tmp.path(), None, &[&[(1, true)]]);
        let mut meta = MetadataFile::load(tmp.path()).unwrap();
        meta.rosbag2_bagfile_information.message_count = 2;
        meta.save(tmp.path()).unwrap();
        let err = format!("{:#}", BagReader::open(tmp.path()).err().unwrap());
        assert!(err.contains("claims 2 messages but"), "{err}");
    }
}
