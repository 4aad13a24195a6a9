//! [`BagReader`]: opens a rosbag2 directory (metadata.yaml + one MCAP) and streams its messages
//! in log-time order through the MCAP chunk index.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use mcap::sans_io::indexed_reader::{
    IndexedReadEvent, IndexedReader, IndexedReaderOptions, ReadOrder,
};
use mcap::sans_io::summary_reader::{SummaryReadEvent, SummaryReader, SummaryReaderOptions};
use mcap::Summary;

use super::metadata::{BagInfo, MetadataFile};
use crate::msg::Message;

/// An open rosbag2 directory.
pub struct BagReader {
    dir: PathBuf,
    info: BagInfo,
    mcap_path: PathBuf,
    file_len: u64,
    summary: Summary,
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
        let mcap_path = dir.join(file_name);
        let mut file =
            File::open(&mcap_path).with_context(|| format!("opening {}", mcap_path.display()))?;
        let file_len = file.metadata()?.len();
        let summary = read_summary(&mut file, file_len)
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

    /// The bag directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `metadata.yaml`'s content.
    pub fn info(&self) -> &BagInfo {
        &self.info
    }

    /// The MCAP file.
    pub fn mcap_path(&self) -> &Path {
        &self.mcap_path
    }

    /// Size of the MCAP file in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.file_len
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
        let mut options = IndexedReaderOptions::new()
            .with_order(ReadOrder::LogTime)
            // A hostile index cannot make us allocate more than the file's size per chunk.
            .with_record_length_limit(usize::try_from(self.file_len).unwrap_or(usize::MAX));
        if !topics.is_empty() {
            options = options.include_topics(topics.iter().map(|t| t.to_string()));
        }
        let reader = IndexedReader::new_with_options(&self.summary, options)
            .with_context(|| format!("indexing {}", self.mcap_path.display()))?;
        let file = File::open(&self.mcap_path)
            .with_context(|| format!("opening {}", self.mcap_path.display()))?;
        Ok(Messages {
            bag: self,
            reader,
            file,
            chunk: Vec::new(),
            data: Vec::new(),
        })
    }
}

/// Reads the MCAP summary section; `None` when the file has none.
fn read_summary(file: &mut File, len: u64) -> Result<Option<Summary>> {
    let mut reader = SummaryReader::new_with_options(
        SummaryReaderOptions::default()
            .with_file_size(len)
            .with_record_length_limit(usize::try_from(len).unwrap_or(usize::MAX)),
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
    pub topic: &'a str,
    /// The ROS type of the topic's schema, e.g. `sensor_msgs/msg/Image`.
    pub type_name: &'a str,
    /// Receive time in nanoseconds since the epoch (rosbag2's timestamp).
    pub log_time: u64,
    /// The CDR-encoded message, encapsulation header included.
    pub data: &'a [u8],
}

impl BagMessage<'_> {
    /// Decodes the message as `M`, checking that the topic carries that type.
    pub fn decode<M: Message>(&self) -> Result<M> {
        ensure!(
            self.type_name == M::TYPE.name,
            "topic {} carries {}, not {}",
            self.topic,
            self.type_name,
            M::TYPE.name
        );
        M::decode(self.data)
            .with_context(|| format!("message on {} at {} ns", self.topic, self.log_time))
    }
}

/// A stream of messages in log-time order (a lending iterator: see [`Self::next_message`]).
pub struct Messages<'a> {
    bag: &'a BagReader,
    reader: IndexedReader,
    file: File,
    /// The chunk record being handed to the indexed reader.
    chunk: Vec<u8>,
    /// The current message's bytes.
    data: Vec<u8>,
}

impl Messages<'_> {
    /// The next message, or `None` at the end.
    pub fn next_message(&mut self) -> Option<Result<BagMessage<'_>>> {
        loop {
            // The indexed reader lends each message out of its chunk buffer; it is copied to
            // `self.data` so that loading the next chunk and returning a message can share a loop.
            let request = match self.reader.next_event()? {
                Err(e) => return Some(Err(self.mcap_error(e))),
                Ok(IndexedReadEvent::ReadChunkRequest { offset, length }) => (offset, length),
                Ok(IndexedReadEvent::Message { header, data }) => {
                    self.data.clear();
                    self.data.extend_from_slice(data);
                    return Some(self.message(header));
                }
            };
            if let Err(e) = self.load_chunk(request.0, request.1) {
                return Some(Err(e));
            }
        }
    }

    fn message(&self, header: mcap::records::MessageHeader) -> Result<BagMessage<'_>> {
        let channel = self
            .bag
            .summary
            .channels
            .get(&header.channel_id)
            .with_context(|| {
                format!(
                    "{}: message on unknown channel {}",
                    self.bag.mcap_path.display(),
                    header.channel_id
                )
            })?;
        ensure!(
            channel.message_encoding == "cdr",
            "topic {} is encoded as {:?}, not cdr",
            channel.topic,
            channel.message_encoding
        );
        Ok(BagMessage {
            topic: &channel.topic,
            type_name: channel.schema.as_ref().map_or("", |s| s.name.as_str()),
            log_time: header.log_time,
            data: &self.data,
        })
    }

    fn load_chunk(&mut self, offset: u64, length: usize) -> Result<()> {
        let path = &self.bag.mcap_path;
        ensure!(
            offset.saturating_add(length as u64) <= self.bag.file_len,
            "{}: chunk at {offset} (+{length} bytes) lies beyond the end of the file",
            path.display()
        );
        self.chunk.resize(length, 0);
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut self.chunk))
            .with_context(|| format!("reading {} at {offset}", path.display()))?;
        self.reader
            .insert_chunk_record_data(offset, &self.chunk)
            .map_err(|e| self.mcap_error(e))
    }

    fn mcap_error(&self, e: mcap::McapError) -> anyhow::Error {
        anyhow::Error::new(e).context(format!("reading {}", self.bag.mcap_path.display()))
    }
}
