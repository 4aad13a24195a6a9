"""Times `rosbags` reading a bag the way our reader is benchmarked (benches/bag.rs read_decode):
open, iterate every message in time order, deserialise it with the typestore. Prints the best of
--repeat runs as JSON: messages per second, and for images bytes of pixel data per second.

Usage: bag_read_rosbags.py BAG_DIR [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore


def read_once(path: Path, typestore) -> tuple[int, int]:
    messages = pixels = 0
    with Reader(path) as reader:
        for connection, _, raw in reader.messages():
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
            messages += 1
            if connection.msgtype == 'sensor_msgs/msg/Image':
                pixels += len(msg.data)
    return messages, pixels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('bag', type=Path)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    typestore = get_typestore(Stores.ROS2_JAZZY)
    best = float('inf')
    messages = pixels = 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        messages, pixels = read_once(args.bag, typestore)
        best = min(best, time.perf_counter() - start)
    print(json.dumps({
        'reader': 'rosbags',
        'seconds': best,
        'messages': messages,
        'messages_per_sec': messages / best,
        'image_bytes': pixels,
        'image_bytes_per_sec': pixels / best,
    }))


if __name__ == '__main__':
    main()
