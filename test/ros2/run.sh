#!/usr/bin/env bash
# The ROS 2 integration suite of the r2r nodes (test/ros2/suite.py). Needs a sourced ROS 2 Jazzy
# (e.g. /opt/ros/jazzy/setup.bash); without one it says it was skipped and succeeds, so the test
# command passes on a machine without ROS.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${ROS_DISTRO:-}" ] || ! command -v ros2 >/dev/null; then
  echo "ros2 suite: SKIPPED (no ROS 2 sourced; source /opt/ros/jazzy/setup.bash to run it)"
  exit 0
fi
# A domain of its own and localhost-only discovery: parallel runs and other graphs stay apart.
export ROS_DOMAIN_ID="${STARS_ROS_DOMAIN_ID:-$((100 + $$ % 100))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
unset ROS_LOCALHOST_ONLY
cargo build --features ros2 --bins
# our CDR against r2r's typesupport, both ways
cargo test --features ros2 --lib node::ros
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 test/ros2/suite.py --bin-dir target/debug --work "$work" --venv-python .venv/bin/python
# RViz headless on the suite's demo bag, where rviz2, Xvfb and ImageMagick are installed
if command -v rviz2 >/dev/null && command -v xvfb-run >/dev/null && command -v import >/dev/null; then
  demo="$work/demo"
  test/ros2/rviz_screenshot.sh "$demo/bags/test" "$demo/checkpoints/detector" "$demo/threshold.yaml" \
    "$work/rviz.png" "$demo/checkpoints/refiner"
else
  echo "ros2 suite: RViz screenshot SKIPPED (needs rviz2, xvfb-run and ImageMagick's import)"
fi
echo "ros2 suite: passed"
