"""End-to-end latency and throughput of the r2r nodes, separate processes against the composed
`stars_node`: live frames from a best-effort rclpy publisher (stamped with the wall clock), the
latency of each frame's `/stars/alert/status` (camera stamp to arrival), and refined maps per
second when frames come faster than the graph runs. Prints JSON.

Usage: bench.py --bin-dir target/release --work DIR --detector CKPT --refiner CKPT
                --threshold FILE [--width 640 --height 360]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import rclpy

from suite import ROOT, Probe, run, start, stop, wait_for


def measure(args, probe: Probe, composed: bool) -> dict:
    name = 'composed' if composed else 'separate'
    launch = start(['ros2', 'launch', str(ROOT / 'launch/stars.launch.py'), f'bin_dir:={args.bin_dir}',
                    f'detector:={args.detector}', 'random_weights:=true', f'refiner:={args.refiner}',
                    f'threshold_file:={args.threshold}', f'composed:={str(composed).lower()}'],
                   Path(args.work) / f'bench_{name}.log')
    nodes = ['/stars/feature_node', '/stars/detector_node', '/stars/temporal_node', '/stars/alert_node']
    wait_for('the four nodes', lambda: all(n in run(['ros2', 'node', 'list'], timeout=30).stdout for n in nodes), 120)
    time.sleep(2.0)
    # warm-up, then one frame at a time: latency without queueing
    probe.publish_frames(3, 1.0, args.width, args.height)
    time.sleep(3.0)
    probe.reset()
    stamps = set(probe.publish_frames(args.frames, 1.0 / args.spacing, args.width, args.height))
    time.sleep(3.0)
    with probe.lock:
        latency = sorted(t - s / 1e9 for t, s, _ in probe.status if s in stamps)
    # saturated: refined maps per second
    probe.reset()
    t0 = time.time()
    probe.publish_frames(int(args.saturate_s * 10), 10.0, args.width, args.height)
    elapsed = time.time() - t0
    with probe.lock:
        done = len(probe.refined)
    stop(launch)
    return {
        'latency_ms': {'p50': round(statistics.median(latency) * 1e3, 1),
                       'p90': round(latency[int(len(latency) * 0.9)] * 1e3, 1),
                       'max': round(latency[-1] * 1e3, 1), 'frames': len(latency)},
        'saturated_fps': round(done / elapsed, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    for a in ('--bin-dir', '--work', '--detector', '--refiner', '--threshold'):
        p.add_argument(a, required=True)
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=360)
    p.add_argument('--frames', type=int, default=15)
    p.add_argument('--spacing', type=float, default=1.5, help='seconds between latency frames')
    p.add_argument('--saturate-s', type=float, default=15.0)
    args = p.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    rclpy.init()
    probe = Probe()
    threading.Thread(target=rclpy.spin, args=(probe,), daemon=True).start()
    report = {mode: measure(args, probe, mode == 'composed') for mode in ('separate', 'composed')}
    print(json.dumps(report), flush=True)
    os._exit(0)  # not rclpy.shutdown under the spinner thread: it aborts the interpreter


if __name__ == '__main__':
    main()
