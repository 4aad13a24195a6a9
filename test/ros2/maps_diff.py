"""Compares the refined anomaly maps of two bags frame by frame (matched by header stamp) with
`rosbags`, independent of our reader, and prints JSON: {"matched", "only_a", "only_b",
"max_abs_diff"}.

Usage: maps_diff.py BAG_A BAG_B [TOPIC]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore


def maps(path: Path, topic: str) -> dict[int, np.ndarray]:
    out = {}
    with Reader(path) as reader:
        typestore = get_typestore(Stores.ROS2_JAZZY)
        conns = [c for c in reader.connections if c.topic == topic]
        for c, _, raw in reader.messages(connections=conns):
            msg = typestore.deserialize_cdr(raw, c.msgtype)
            dtype = '>f4' if msg.is_bigendian else '<f4'
            rows = np.frombuffer(msg.data.tobytes(), dtype=np.uint8).reshape(msg.height, msg.step)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            out[stamp] = rows[:, :msg.width * 4].copy().view(dtype).astype(np.float64)
    return out


def main() -> None:
    topic = sys.argv[3] if len(sys.argv) > 3 else '/stars/refined/anomaly_map'
    a, b = maps(Path(sys.argv[1]), topic), maps(Path(sys.argv[2]), topic)
    common = sorted(set(a) & set(b))
    diff = max((float(np.abs(a[s] - b[s]).max()) for s in common), default=None)
    print(json.dumps({'matched': len(common), 'only_a': len(set(a) - set(b)),
                      'only_b': len(set(b) - set(a)), 'max_abs_diff': diff}))


if __name__ == '__main__':
    main()
