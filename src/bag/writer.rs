//! [`BagWriter`]: rosbag2 directories with one MCAP file, written message by message.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use super::metadata::{
    BagInfo, Duration, FileInfo, MetadataFile, Qos, StartingTime, TopicMetadata,
    TopicWithMessageCount, METADATA_FILE, METADATA_VERSION, ROS_DISTRO,
};
use crate::msg::{Message, MessageType};

/// Uncompressed chunks of about this size: big frames get a chunk each, small messages share one.
/// rosbag2's MCAP plugin also writes uncompressed chunks by default.
const CHUNK_SIZE: u64 = 4 << 20;

/// A declared topic, its MCAP channel (once registered) and its message count so far.
struct Topic {
    name: String,
    ty: MessageType,
    qos: Qos,
    /// Registered with its schema just before the topic's first message, so schema and channel
    /// records never sit alone in a chunk (see [`BagWriter::add_topic`]).
    channel: Option<u16>,
    count: u64,
}

/// What a finished bag holds.
#[derive(Clone, Debug)]
pub struct BagSummary {
    /// The bag directory.
    pub dir: PathBuf,
    /// Messages written.
    pub message_count: u64,
    /// First message time (0 for an empty bag).
    pub start_ns: u64,
    /// Last message time.
    pub end_ns: u64,
}

/// Writes a rosbag2 directory: `<dir>/<dir name>_0.mcap` (profile `ros2`, `ros2msg` schemas,
/// `cdr` messages, chunked, every chunk with its message indexes) and `metadata.yaml` (version 8).
///
/// `metadata.yaml` is written only by [`BagWriter::finish`], after the MCAP summary, so a
/// bag directory never has metadata that claims messages its MCAP lacks. If the writer is
/// dropped without `finish` (an error mid-way, a panic), `Drop` finishes it: the bag then holds
/// exactly the messages written so far. A killed process leaves an MCAP without summary and no
/// metadata; `ros2 bag reindex` recovers that.
pub struct BagWriter {
    dir: PathBuf,
    file_name: String,
    mcap: Option<mcap::Writer<BufWriter<File>>>,
    topics: Vec<Topic>,
    by_name: HashMap<String, usize>,
    bounds: Option<(u64, u64)>,
    custom_data: BTreeMap<String, String>,
    scratch: Vec<u8>,
    /// The first MCAP write that failed. The `mcap` crate buffers a whole chunk before writing
    /// it, so messages already counted may be lost with it: the bag is then never finished,
    /// since its metadata would claim messages its file does not hold.
    failed: Option<String>,
}

impl BagWriter {
    /// Creates the bag directory `dir`; an existing non-empty directory is an error.
    pub fn create(dir: &Path) -> Result<Self> {
        Self::create_with(dir, false)
    }

    /// Like [`Self::create`]; with `overwrite`, an existing rosbag2 directory (only
    /// `metadata.yaml` and `.mcap` files) is replaced. Other directories are never deleted.
    pub fn create_with(dir: &Path, overwrite: bool) -> Result<Self> {
        prepare_dir(dir, overwrite)?;
        let stem = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bag".into());
        let file_name = format!("{stem}_0.mcap");
        let path = dir.join(&file_name);
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mcap = mcap::WriteOptions::new()
            .profile("ros2")
            .compression(None)
            .chunk_size(Some(CHUNK_SIZE))
            .create(BufWriter::with_capacity(1 << 20, file))
            .with_context(|| format!("starting {}", path.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            file_name,
            mcap: Some(mcap),
            topics: Vec::new(),
            by_name: HashMap::new(),
            bounds: None,
            custom_data: BTreeMap::new(),
            scratch: Vec::new(),
            failed: None,
        })
    }

    /// Declares a topic of message type `ty` (e.g. `Image::TYPE`) offered with `qos`.
    ///
    /// Its MCAP schema and channel records are written with its first message (or by
    /// [`Self::finish`] for a topic without messages). The `mcap` crate puts them in the open
    /// chunk, opening one if needed; written here, before an attachment (which closes the chunk),
    /// they would make a chunk without messages and so without message indexes, and rosbag2's
    /// MCAP reader refuses to play a bag whose first chunk has none ("cannot read MCAP in time
    /// order with no message indexes").
    pub fn add_topic(&mut self, name: &str, ty: MessageType, qos: Qos) -> Result<()> {
        ensure!(
            !self.by_name.contains_key(name),
            "topic {name} is already in the bag"
        );
        self.mcap()?;
        self.by_name.insert(name.to_string(), self.topics.len());
        self.topics.push(Topic {
            name: name.to_string(),
            ty,
            qos,
            channel: None,
            count: 0,
        });
        Ok(())
    }

    /// The MCAP channel of topic `index`, writing its schema and channel records if not yet done.
    fn channel(&mut self, index: usize) -> Result<u16> {
        if let Some(channel) = self.topics[index].channel {
            return Ok(channel);
        }
        let Topic { name, ty, qos, .. } = &self.topics[index];
        let (name, ty, qos) = (name.clone(), *ty, *qos);
        let channel = self.with_mcap(|mcap| {
            let schema = mcap
                .add_schema(ty.name, "ros2msg", ty.definition.as_bytes())
                .with_context(|| format!("adding schema {}", ty.name))?;
            let metadata = BTreeMap::from([
                ("offered_qos_profiles".to_string(), qos.to_yaml()),
                ("topic_type_hash".to_string(), ty.hash.to_string()),
            ]);
            mcap.add_channel(schema, &name, "cdr", &metadata)
                .with_context(|| format!("adding topic {name}"))
        })?;
        self.topics[index].channel = Some(channel);
        Ok(channel)
    }

    /// Stores a file as an MCAP attachment (ROS tools skip attachments; `stars bag from-tallo`
    /// keeps each sequence's `meta.json` there).
    pub fn attach(
        &mut self,
        name: &str,
        media_type: &str,
        data: &[u8],
        log_time: u64,
    ) -> Result<()> {
        let attachment = mcap::Attachment {
            log_time,
            create_time: log_time,
            name: name.into(),
            media_type: media_type.into(),
            data: std::borrow::Cow::Borrowed(data),
        };
        self.with_mcap(|mcap| {
            mcap.attach(&attachment)
                .with_context(|| format!("attaching {name}"))
        })
    }

    /// Records a `custom_data` entry of `metadata.yaml`.
    pub fn set_custom_data(&mut self, key: &str, value: String) {
        self.custom_data.insert(key.to_string(), value);
    }

    /// Messages written so far.
    pub fn message_count(&self) -> u64 {
        self.topics.iter().map(|t| t.count).sum()
    }

    /// Encodes `msg` and writes it on `topic` at `stamp_ns` (log and publish time).
    pub fn write<M: Message>(&mut self, topic: &str, stamp_ns: u64, msg: &M) -> Result<()> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        msg.encode_into(&mut buf);
        let result = self.write_checked(topic, M::TYPE.name, stamp_ns, &buf);
        self.scratch = buf;
        result
    }

    fn write_checked(
        &mut self,
        topic: &str,
        type_name: &str,
        stamp_ns: u64,
        data: &[u8],
    ) -> Result<()> {
        let &index = self
            .by_name
            .get(topic)
            .with_context(|| format!("topic {topic} was not added to the bag"))?;
        let (sequence, ty) = {
            let t = &self.topics[index];
            (t.count as u32, t.ty.name)
        };
        ensure!(
            type_name == ty,
            "topic {topic} carries {ty}, not {type_name}"
        );
        let channel = self.channel(index)?;
        let header = mcap::records::MessageHeader {
            channel_id: channel,
            sequence,
            log_time: stamp_ns,
            publish_time: stamp_ns,
        };
        self.with_mcap(|mcap| {
            mcap.write_to_known_channel(&header, data)
                .with_context(|| format!("writing a message on {topic}"))
        })?;
        self.topics[index].count += 1;
        self.bounds = Some(match self.bounds {
            None => (stamp_ns, stamp_ns),
            Some((a, b)) => (a.min(stamp_ns), b.max(stamp_ns)),
        });
        Ok(())
    }

    /// Writes the MCAP summary and then `metadata.yaml`.
    pub fn finish(mut self) -> Result<BagSummary> {
        self.close()
    }

    fn mcap(&mut self) -> Result<&mut mcap::Writer<BufWriter<File>>> {
        self.mcap.as_mut().context("the bag was already finished")
    }

    /// Whether a write has failed (a full disk): every later write and [`Self::finish`] are
    /// errors.
    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Runs `op` on the MCAP writer; its first failure ends the bag (see `failed`).
    fn with_mcap<T>(
        &mut self,
        op: impl FnOnce(&mut mcap::Writer<BufWriter<File>>) -> Result<T>,
    ) -> Result<T> {
        if let Some(first) = &self.failed {
            bail!("an earlier write failed ({first})");
        }
        let mcap = self.mcap.as_mut().context("the bag was already finished")?;
        op(mcap).inspect_err(|e| self.failed = Some(format!("{e:#}")))
    }

    fn close(&mut self) -> Result<BagSummary> {
        ensure!(self.mcap.is_some(), "the bag was already finished");
        if let Some(first) = &self.failed {
            // Dropping the `mcap` writer tries once more to finish the file; whatever it
            // manages, no metadata.yaml is written.
            self.mcap = None;
            bail!(
                "{}: a write failed ({first}); the file is incomplete and no metadata.yaml was written",
                self.dir.join(&self.file_name).display()
            );
        }
        // Topics without messages still get their channel, so readers see every topic. Should
        // that fail, the MCAP is still finished below, keeping the messages written so far.
        let registered = (0..self.topics.len()).try_for_each(|i| self.channel(i).map(drop));
        let Some(mut mcap) = self.mcap.take() else {
            bail!("the bag was already finished");
        };
        let info = self.info();
        let inner = MetadataFile {
            rosbag2_bagfile_information: info.clone(),
        };
        // rosbag2's MCAP plugin also stores the metadata inside the MCAP, for `ros2 bag reindex`.
        let serialized = serde_yaml_ng::to_string(&info).context("serialising metadata")?;
        let record = mcap::records::Metadata {
            name: "rosbag2".into(),
            metadata: BTreeMap::from([
                ("serialized_metadata".into(), serialized),
                ("ros_distro".into(), ROS_DISTRO.into()),
            ]),
        };
        let path = self.dir.join(&self.file_name);
        mcap.write_metadata(&record)
            .and_then(|()| mcap.finish())
            .with_context(|| format!("finishing {}", path.display()))?;
        mcap.into_inner()
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("flushing {}", path.display()))?;
        inner.save(&self.dir)?;
        registered?;
        Ok(BagSummary {
            dir: self.dir.clone(),
            message_count: info.message_count,
            start_ns: info.starting_time.nanoseconds_since_epoch,
            end_ns: info.starting_time.nanoseconds_since_epoch + info.duration.nanoseconds,
        })
    }

    fn info(&self) -> BagInfo {
        let (start, end) = self.bounds.unwrap_or((0, 0));
        let count = self.message_count();
        let duration = Duration {
            nanoseconds: end - start,
        };
        let starting_time = StartingTime {
            nanoseconds_since_epoch: start,
        };
        BagInfo {
            version: METADATA_VERSION,
            storage_identifier: "mcap".into(),
            duration,
            starting_time,
            message_count: count,
            topics_with_message_count: self
                .topics
                .iter()
                .map(|t| TopicWithMessageCount {
                    topic_metadata: TopicMetadata {
                        name: t.name.clone(),
                        type_name: t.ty.name.into(),
                        serialization_format: "cdr".into(),
                        offered_qos_profiles: serde_yaml_ng::Value::String(t.qos.to_yaml()),
                        type_description_hash: t.ty.hash.into(),
                    },
                    message_count: t.count,
                })
                .collect(),
            compression_format: String::new(),
            compression_mode: String::new(),
            relative_file_paths: vec![self.file_name.clone()],
            files: vec![FileInfo {
                path: self.file_name.clone(),
                starting_time,
                duration,
                message_count: count,
            }],
            custom_data: (!self.custom_data.is_empty()).then(|| self.custom_data.clone()),
            ros_distro: ROS_DISTRO.into(),
        }
    }
}

impl Drop for BagWriter {
    fn drop(&mut self) {
        if self.mcap.is_some() {
            match self.close() {
                Ok(s) => tracing::info!(
                    "bag {} closed early with {} messages",
                    s.dir.display(),
                    s.message_count
                ),
                Err(e) => tracing::error!("closing bag {}: {e:#}", self.dir.display()),
            }
        }
    }
}

/// Makes `dir` an empty directory, replacing an old bag there only when `overwrite` is set.
fn prepare_dir(dir: &Path, overwrite: bool) -> Result<()> {
    if dir.exists() {
        ensure!(
            dir.is_dir(),
            "{} exists and is not a directory",
            dir.display()
        );
        let entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        if !entries.is_empty() {
            if !overwrite {
                bail!(
                    "{} exists and is not empty (use --force to replace a bag there)",
                    dir.display()
                );
            }
            let is_bag_file = |p: &PathBuf| {
                p.is_file()
                    && p.file_name().is_some_and(|n| {
                        n == METADATA_FILE
                            || n.to_string_lossy().ends_with(".mcap")
                            || n.to_string_lossy().ends_with(".yaml.tmp")
                    })
            };
            if let Some(other) = entries.iter().find(|p| !is_bag_file(p)) {
                bail!(
                    "refusing to replace {}: it is not a rosbag2 directory ({} is neither \
                     metadata.yaml nor .mcap)",
                    dir.display(),
                    other.display()
                );
            }
            for p in &entries {
                std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
