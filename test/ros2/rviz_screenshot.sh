#!/usr/bin/env bash
# RViz, headless: replays a bag through the graph with rviz2 -d config/stars.rviz under Xvfb
# (software OpenGL), takes a screenshot mid-replay and checks its panels
# (test/ros2/rviz_check.py). Needs a sourced ROS 2 with rviz2, Xvfb and ImageMagick.
#
# Usage: test/ros2/rviz_screenshot.sh BAG DETECTOR_CKPT THRESHOLD OUT.png [REFINER_CKPT]
set -euo pipefail
cd "$(dirname "$0")/../.."
bag=$1 detector=$2 threshold=$3 out=$4 refiner=${5:-}
export ROS_DOMAIN_ID="${STARS_ROS_DOMAIN_ID:-$((100 + $$ % 100))}" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export LIBGL_ALWAYS_SOFTWARE=1
xvfb-run -a -s "-screen 0 1280x800x24" bash -c '
  setsid ros2 launch launch/replay.launch.py bag:="$1" bin_dir:="$PWD/target/debug" detector:="$2" \
      random_weights:=true threshold_file:="$3" refiner:="$5" use_rviz:=true play_delay:=8 rate:=0.5 \
      > "${4%.png}.log" 2>&1 &
  launch=$!
  # two shots while the bag plays (it plays from 8 s to about 22 s): a slow rviz2 start-up
  # still gets the second
  sleep 13
  import -window root "${4%.png}_early.png"
  sleep 5
  import -window root "$4"
  # the whole group, by SIGTERM: a background job of a script ignores SIGINT
  kill -TERM -- -$launch; wait $launch || true
' _ "$bag" "$detector" "$threshold" "$out" "$refiner"
convert "${out%.png}_early.png" "${out%.png}_early.ppm"
convert "$out" "${out%.png}.ppm"
.venv/bin/python test/ros2/rviz_check.py "${out%.png}_early.ppm" ||
  .venv/bin/python test/ros2/rviz_check.py "${out%.png}.ppm"
