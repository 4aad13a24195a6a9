//! `alert_node`: the alert node on ROS 2 (see docs/nodes.md; `ros2 launch stars stars.launch.py`).
fn main() -> std::process::ExitCode {
    stars::node::ros::main("alert_node", &[stars::node::ros::Role::Alert])
}
