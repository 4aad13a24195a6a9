"""Replays a rosbag2 (MCAP) of camera frames through the STARS graph on the bag's clock, and
optionally shows it in RViz:

    ros2 launch stars replay.launch.py bag:=runs/test_bag detector:=ckpt/detector \
        random_weights:=true threshold_file:=config/threshold.yaml use_rviz:=true

Every argument of stars.launch.py applies (use_sim_time is forced on); `ros2 bag play --clock`
starts paused and resumes after `play_delay` seconds, when the nodes have loaded their models
and discovered the player.
"""
import os

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription,
                            TimerAction)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

HERE = os.path.dirname(os.path.realpath(__file__))


def generate_launch_description():
    bag = LaunchConfiguration("bag")
    graph = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(HERE, "stars.launch.py")),
        launch_arguments={"use_sim_time": "true"}.items(),
    )
    # The player starts paused, so its publishers are discovered (and the nodes have loaded
    # their models) before the first frame; `play_delay` seconds later it is resumed.
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", bag, "--clock", "40", "--start-paused", "--disable-keyboard-controls",
             "--rate", LaunchConfiguration("rate")],
        output="screen",
    )
    resume = ExecuteProcess(
        cmd=["ros2", "service", "call", "/rosbag2_player/resume", "rosbag2_interfaces/srv/Resume"],
        output="log",
    )
    rviz = ExecuteProcess(
        cmd=["rviz2", "-d", LaunchConfiguration("rviz_config"), "--ros-args", "-p", "use_sim_time:=true"],
        output="screen",
        condition=IfCondition(LaunchConfiguration("use_rviz")),
    )
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory with /camera/image_raw"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("play_delay", default_value="3.0", description="seconds before the paused player resumes"),
        DeclareLaunchArgument("use_rviz", default_value="false", description="true: start rviz2 with rviz_config"),
        DeclareLaunchArgument("rviz_config", default_value=os.path.join(HERE, "..", "config", "stars.rviz"),
                              description="RViz configuration"),
        graph,
        rviz,
        play,
        TimerAction(period=LaunchConfiguration("play_delay"), actions=[resume]),
    ])
