//! `detector_node`: the detector node on ROS 2 (see docs/nodes.md; `ros2 launch stars stars.launch.py`).
fn main() -> std::process::ExitCode {
    stars::node::ros::main("detector_node", &[stars::node::ros::Role::Detector])
}
