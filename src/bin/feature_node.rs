//! `feature_node`: the feature node on ROS 2 (see docs/nodes.md; `ros2 launch stars stars.launch.py`).
fn main() -> std::process::ExitCode {
    stars::node::ros::main("feature_node", &[stars::node::ros::Role::Feature])
}
