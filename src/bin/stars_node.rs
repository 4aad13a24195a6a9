//! `stars_node`: the four nodes in one process with one copy of the backbone, on the same ROS 2
//! topics and parameters as the separate executables (`ros2 launch stars stars.launch.py
//! composed:=true`).
fn main() -> std::process::ExitCode {
    stars::node::ros::main("stars_node", &stars::node::ros::Role::ALL)
}
