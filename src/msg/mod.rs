//! CDR-encoded message structs (ROS 2 wire format), without ROS.
