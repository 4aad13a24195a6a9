//! `metadata.yaml`, rosbag2's description of a bag directory, and the QoS profiles it records.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The metadata version we write: version 8 is read by Humble's and Jazzy's `ros2 bag`.
pub const METADATA_VERSION: u32 = 8;
/// The `ros_distro` we record (our message definitions and hashes are Jazzy's, same as Humble's).
pub const ROS_DISTRO: &str = "jazzy";
/// File name of the metadata inside a bag directory.
pub const METADATA_FILE: &str = "metadata.yaml";

/// The whole `metadata.yaml` document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetadataFile {
    /// The only top-level key.
    pub rosbag2_bagfile_information: BagInfo,
}

/// `rosbag2_bagfile_information`: what the bag holds and where.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BagInfo {
    /// Metadata format version (we write 8).
    pub version: u32,
    /// Storage plugin: `mcap` (the only one we read) or `sqlite3`.
    pub storage_identifier: String,
    /// Last minus first message time.
    pub duration: Duration,
    /// First message time.
    pub starting_time: StartingTime,
    /// Messages in all files.
    pub message_count: u64,
    /// Every topic with its type, QoS and message count.
    pub topics_with_message_count: Vec<TopicWithMessageCount>,
    /// Bag-level compression (`zstd`) or empty; MCAP chunk compression is not listed here.
    #[serde(default)]
    pub compression_format: String,
    /// `file`, `message` or empty.
    #[serde(default)]
    pub compression_mode: String,
    /// Storage files relative to the bag directory.
    pub relative_file_paths: Vec<String>,
    /// Per-file time range and count.
    #[serde(default)]
    pub files: Vec<FileInfo>,
    /// Free-form string pairs; `stars bag from-tallo` records its sequences here.
    #[serde(default)]
    pub custom_data: Option<BTreeMap<String, String>>,
    /// The ROS distribution that wrote the bag.
    #[serde(default)]
    pub ros_distro: String,
}

/// A span of time in nanoseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Duration {
    /// Length in nanoseconds.
    pub nanoseconds: u64,
}

/// A point in time in nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct StartingTime {
    /// Nanoseconds since 1970-01-01T00:00:00Z.
    pub nanoseconds_since_epoch: u64,
}

/// One topic and how many messages it has.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopicWithMessageCount {
    /// The topic.
    pub topic_metadata: TopicMetadata,
    /// Its messages in the bag.
    pub message_count: u64,
}

/// A topic's name, type, serialization and QoS.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// Absolute topic name.
    pub name: String,
    /// ROS type, e.g. `sensor_msgs/msg/Image`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// `cdr` for ROS 2.
    pub serialization_format: String,
    /// A YAML string in version 8 (what we write), a list in version 9; kept as read.
    #[serde(default)]
    pub offered_qos_profiles: serde_yaml_ng::Value,
    /// RIHS01 hash of the type (empty before Iron).
    #[serde(default)]
    pub type_description_hash: String,
}

/// One storage file of the bag.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileInfo {
    /// Relative to the bag directory.
    pub path: String,
    /// First message time in this file.
    pub starting_time: StartingTime,
    /// Time span of this file.
    pub duration: Duration,
    /// Messages in this file.
    pub message_count: u64,
}

impl MetadataFile {
    /// Reads `DIR/metadata.yaml`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(METADATA_FILE);
        if !path.is_file() {
            bail!(
                "{} is not a rosbag2 directory (no {METADATA_FILE}; a recording that was killed \
                 can be recovered with `ros2 bag reindex`)",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `DIR/metadata.yaml` atomically (a temporary file renamed over it).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(METADATA_FILE);
        let tmp = dir.join(format!("{METADATA_FILE}.tmp"));
        std::fs::write(&tmp, self.to_yaml()?)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The document as YAML text.
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml_ng::to_string(self).context("serialising metadata.yaml")
    }
}

/// rmw's "infinite" duration as rosbag2 writes it (`RMW_DURATION_INFINITE`).
const INFINITE_SEC: u64 = 9_223_372_036;
const INFINITE_NSEC: u64 = 854_775_807;

/// The QoS a topic was offered with, in rmw's enum values (as rosbag2 version 8 records them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qos {
    /// 1 keep last, 2 keep all.
    pub history: u8,
    /// Queue depth of keep-last.
    pub depth: u32,
    /// 1 reliable, 2 best effort.
    pub reliability: u8,
    /// 1 transient local, 2 volatile.
    pub durability: u8,
}

impl Qos {
    /// Camera frames and maps: reliable, volatile, keep last 5. REP-2003 has sensor drivers
    /// offer reliable (the system default): a reliable publisher matches both reliable and
    /// best-effort (`rclcpp::SensorDataQoS`) subscribers, while a best-effort one, as
    /// `ros2 bag play` would replay it, reaches no reliable subscriber.
    pub fn sensor_data() -> Self {
        Self {
            history: 1,
            depth: 5,
            reliability: 1,
            durability: 2,
        }
    }

    /// Reliable and transient local, keep last 1: late joiners get the latest value
    /// (`/stars/alert/active`).
    pub fn latched() -> Self {
        Self {
            history: 1,
            depth: 1,
            reliability: 1,
            durability: 1,
        }
    }

    /// rclcpp's default: reliable, volatile, keep last 10 (`/stars/alert/status`).
    pub fn reliable() -> Self {
        Self {
            history: 1,
            depth: 10,
            reliability: 1,
            durability: 2,
        }
    }

    /// The one-profile YAML list rosbag2 stores as the `offered_qos_profiles` string.
    pub fn to_yaml(self) -> String {
        let inf = format!("    sec: {INFINITE_SEC}\n    nsec: {INFINITE_NSEC}\n");
        format!(
            "- history: {}\n  depth: {}\n  reliability: {}\n  durability: {}\n  deadline:\n{inf}  \
             lifespan:\n{inf}  liveliness: 1\n  liveliness_lease_duration:\n{inf}  \
             avoid_ros_namespace_conventions: false",
            self.history, self.depth, self.reliability, self.durability
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_string_is_a_yaml_list_of_one_profile() {
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&Qos::latched().to_yaml()).unwrap();
        let p = &v[0];
        assert_eq!(p["reliability"].as_u64(), Some(1));
        assert_eq!(p["durability"].as_u64(), Some(1));
        assert_eq!(p["deadline"]["nsec"].as_u64(), Some(INFINITE_NSEC));
        assert_eq!(p["avoid_ros_namespace_conventions"].as_bool(), Some(false));
    }

    #[test]
    fn every_profile_we_offer_is_reliable() {
        for qos in [Qos::sensor_data(), Qos::latched(), Qos::reliable()] {
            assert_eq!(qos.reliability, 1, "{qos:?}");
        }
    }
}
