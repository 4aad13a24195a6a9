#!/usr/bin/env bash
# Runs the whole test suite: makes the Python reference venv (.venv/) if needed, then cargo test.
# The Python side (rosbags, mcap, scikit-learn, scipy) is what our outputs are checked against.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! cmp -s test/requirements.txt .venv/requirements.txt; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r test/requirements.txt
  cp test/requirements.txt .venv/requirements.txt
fi
export STARS_REQUIRE_PYTHON=1
cargo test --all-targets "$@"
# the r2r nodes against a real ROS 2 where one is sourced (says SKIPPED otherwise)
test/ros2/run.sh
