"""Checks an RViz screenshot of config/stars.rviz: each image panel shows an image (not the
"No Image" placeholder), the overlay panel carries the heat colormap's saturated colours, and
the refined-map panel is grey levels (a 32FC1 map at a fixed 0..1 range). Panel rows are the
layout stars.rviz saves (1280x800 window, three stacked panels on the left 876 px); a 16:9
frame is drawn centred in each, so the middle columns are the image.

Usage: rviz_check.py SCREENSHOT.ppm
"""

from __future__ import annotations

import json
import sys

import numpy as np

PANELS = {'camera': (84, 295), 'overlay': (323, 532), 'refined': (560, 770)}
COLUMNS = (300, 576)


def read_ppm(path: str) -> np.ndarray:
    data = open(path, 'rb').read()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    w, h = int(fields[1]), int(fields[2])
    return np.frombuffer(data[pos + 1:pos + 1 + w * h * 3], np.uint8).reshape(h, w, 3)


def main() -> None:
    img = read_ppm(sys.argv[1]).astype(int)
    report, ok = {}, True
    for name, (top, bottom) in PANELS.items():
        panel = img[top + 5:bottom - 5, COLUMNS[0]:COLUMNS[1]]
        white = (panel.min(axis=2) > 235).mean()
        spread = panel.max(axis=2) - panel.min(axis=2)
        coloured = (spread > 40).mean()
        grey = (spread < 8).mean()
        report[name] = {'white': round(float(white), 3), 'coloured': round(float(coloured), 3),
                        'grey': round(float(grey), 3), 'levels': int(len(np.unique(panel.sum(axis=2))))}
        # an image fills the panel, not the white "No Image" placeholder
        ok &= white < 0.5 and report[name]['levels'] > 20
    # the heat colormap colours the overlay; the frame itself is mostly grey
    ok &= report['overlay']['coloured'] > 0.5 and report['overlay']['coloured'] > 3 * report['camera']['coloured']
    ok &= report['refined']['grey'] > 0.95
    print(json.dumps(report))
    if not ok:
        sys.exit(f'rviz screenshot check failed: {report}')


if __name__ == '__main__':
    main()
