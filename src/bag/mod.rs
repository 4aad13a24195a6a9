//! rosbag2 directories: metadata.yaml + one MCAP file.
