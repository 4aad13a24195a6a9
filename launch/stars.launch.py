"""The STARS node graph: the four nodes as separate processes, or all four in one process
(`composed:=true`, one copy of the backbone), on the same topics and parameters.

    ros2 launch stars stars.launch.py detector:=ckpt/detector refiner:=ckpt/refiner \
        backbone_weights:=models/dinov2-vitl14.safetensors threshold_file:=config/threshold.yaml

Topics come out under `namespace` (/stars/...); the camera input is remapped from
`camera_topic`. Node parameters come from `params_file` (config/stars.yaml), model paths from
the launch arguments. Outside a colcon install, `bin_dir:=target/release` runs the binaries
cargo built.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

HERE = os.path.dirname(os.path.realpath(__file__))

ARGUMENTS = [
    ("namespace", "stars", "namespace of the nodes and their topics"),
    ("params_file", os.path.join(HERE, "..", "config", "stars.yaml"), "node parameters (ros__parameters per node)"),
    ("use_sim_time", "false", "follow /clock (true for bag replay with --clock)"),
    ("composed", "false", "true: the four nodes in one process (stars_node)"),
    ("camera_topic", "/camera/image_raw", "camera frames (sensor_msgs/Image)"),
    ("detector", "", "detector checkpoint directory (stars train detector)"),
    ("backbone_weights", "", "DINOv2 weights (.safetensors) matching the detector"),
    ("random_weights", "false", "true: random placeholder backbone (outputs labelled as such)"),
    ("refiner", "", "refiner checkpoint directory (stars train refiner); selects STARS"),
    ("method", "", "temporal method: stars, kalman, centroid, ema, passthrough (empty: stars with a refiner)"),
    ("threshold_file", "", "alert threshold (stars calibrate); empty: the params file's"),
    ("device", "cpu", "where inference runs: cpu or cuda:N"),
    ("bin_dir", "", "run the executables in this folder instead of the installed package's"),
    ("log_level", "info", "ROS log level of the nodes"),
]


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    flag = lambda name: arg[name].lower() in ("true", "1", "yes")
    sim = {"use_sim_time": flag("use_sim_time")}
    backbone = {
        "detector": arg["detector"],
        "backbone_weights": arg["backbone_weights"],
        "random_weights": flag("random_weights"),
        "device": arg["device"],
    }
    temporal = {"method": arg["method"], "refiner": arg["refiner"], "device": arg["device"]}
    alert = {"threshold_file": arg["threshold_file"]} if arg["threshold_file"] else {}
    per_node = {
        "feature_node": backbone,
        "detector_node": backbone,
        "temporal_node": temporal,
        "alert_node": alert,
    }

    def node(executable, parameters):
        where = {"executable": os.path.join(arg["bin_dir"], executable)} if arg["bin_dir"] else {
            "package": "stars", "executable": executable}
        return Node(
            **where,
            namespace=arg["namespace"],
            parameters=[arg["params_file"], sim, *parameters],
            remappings=[("image", arg["camera_topic"])],
            arguments=["--ros-args", "--log-level", arg["log_level"]],
            output="screen",
            emulate_tty=True,
        )

    if flag("composed"):
        # One process, four ROS nodes: each takes the keys it declares from the merged dict.
        merged = {}
        for params in per_node.values():
            merged.update(params)
        return [node("stars_node", [merged])]
    return [node(name, [params]) for name, params in per_node.items()]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)]
    )
