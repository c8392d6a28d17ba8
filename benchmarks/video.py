"""Video sampling on a long, large video: time and peak memory against decoding every frame.

Generates (once, with PyAV's libx264) a video of ``--seconds`` (default two hours) at 1920×1080
and ``--fps`` frames a second, a keyframe every 10 s: coloured scenes with a moving square, a
hard cut every ``--scene-seconds``. Then, each in a fresh process, samples it from the file with each strategy
of ``media/video.py`` (16 frames) and with the baseline that decodes every frame and keeps those
at the uniform targets; each run reports its wall time, its frames decoded and its peak RSS
growth (``VmHWM`` after, less ``VmRSS`` before). Keeping every decoded frame as an image, as a
naive reader does, would need frames × 1920 × 1080 × 3 bytes: computed, not run. Prints a table
and writes ``benchmarks/results/video.json``.

Usage: ``.venv/bin/python benchmarks/video.py [--seconds 7200] [--fps 2] [--video PATH]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from serving import cpu_name

RESULTS = Path(__file__).parent / "results" / "video.json"
SIZE = (1920, 1080)
COLOURS = ((200, 40, 40), (40, 160, 60), (40, 60, 200), (220, 200, 40), (120, 40, 160))
RUNS = ("uniform", "keyframes", "adaptive", "scene", "decode-all")


def generate(path: Path, seconds: int, fps: int, scene_seconds: int) -> float:
    """Write the test video; returns the seconds it took."""
    start = time.perf_counter()
    width, height = SIZE
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # a keyframe every 10 s, as streaming encoders place them
        stream.options = {"preset": "ultrafast", "crf": "35", "g": str(10 * fps)}
        for index in range(seconds * fps):
            colour = COLOURS[(index // (scene_seconds * fps)) % len(COLOURS)]
            picture = np.empty((height, width, 3), np.uint8)
            picture[:] = colour
            x = (index * 16) % (width - 200)
            picture[400:600, x : x + 200] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return time.perf_counter() - start


_CHILD = r"""
import json, sys, time
from pathlib import Path
import dataclasses
from omniloom.config import Limits, VideoSettings
from omniloom.media import video

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
path, strategy = Path(sys.argv[1]), sys.argv[2]
limits = dataclasses.replace(Limits(), max_video_seconds=1e9, max_video_frames=10**9)
before = rss("VmRSS")
start = time.perf_counter()
if strategy == "decode-all":
    with video.open_container(path, "video") as container:
        info = video.probe(container, "video")
        targets = video.uniform_times(info.seconds, 1.0, 16)
        kept, decoded = [], 0
        for frame in container.decode(video=0):
            decoded += 1
            if targets and frame.time >= targets[0]:
                kept.append(frame.to_image(width=448, height=252))
                targets.pop(0)
    frames = len(kept)
else:
    settings = VideoSettings(strategy=strategy, max_frames=16)
    info, sampled = video.sample(path, settings, limits)
    frames = len(sampled)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "frames": frames, "rss_growth_mb": rss("VmHWM") - before}))
"""


def measure(path: Path, strategy: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), strategy],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=7200)
    parser.add_argument("--fps", type=int, default=2)
    parser.add_argument("--scene-seconds", type=int, default=600)
    parser.add_argument("--video", help="sample this file instead of generating one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.video) if args.video else Path(tmp) / "long.mp4"
        made = None if args.video else generate(path, args.seconds, args.fps, args.scene_seconds)
        results = {run: measure(path, run) for run in RUNS}
        size_mb = path.stat().st_size / 2**20
    total_frames = args.seconds * args.fps
    keep_all_gb = total_frames * SIZE[0] * SIZE[1] * 3 / 2**30
    base = results["decode-all"]["seconds"]
    print(
        f"{cpu_name()}; {args.seconds} s at {SIZE[0]}×{SIZE[1]}, {args.fps} fps, {size_mb:.0f} MB"
    )
    print(f"{'strategy':<12}{'frames':>7}{'seconds':>9}{'× decode-all':>14}{'RSS growth MB':>15}")
    for run, r in results.items():
        ratio = r["seconds"] / base
        print(
            f"{run:<12}{r['frames']:>7}{r['seconds']:>9.2f}{ratio:>14.3f}{r['rss_growth_mb']:>15.0f}"
        )
    print(f"keeping every frame as an image would take {keep_all_gb:.0f} GB (computed)")
    record = {
        "cpu": cpu_name(),
        "video": {"seconds": args.seconds, "fps": args.fps, "size": SIZE, "mb": size_mb},
        "generate_s": made,
        "runs": results,
        "keep_all_frames_gb": keep_all_gb,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
