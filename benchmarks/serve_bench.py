"""How live `captionlens serve` feels: the real command, driven over HTTP on 127.0.0.1, p50 and p95 per action.

    python benchmarks/serve_bench.py [--repeats 40] [--json OUT]

Starts `python -m captionlens serve` (the shipped reference model, the demo recipe trained longer, with its
held-out 96 px scenes as the gallery; `--port 0`) as a user would, waits for the address it prints, and
times, from the client's side, what the page asks for (each action `--repeats` times, on images the
server has not seen unless the action says otherwise):

  - a click on a word whose caption and maps are cached: one maps request answered from the cache
    (the page asks again when its own copy is gone: another caption, a reload);
  - a new image explained with Grad-CAM: open a gallery image, its caption (beam 3), Grad-CAM of every word;
  - a typed caption explained with Grad-CAM (image open already): the caption, teacher-forced, and its maps;
  - an alternative word clicked: the caption re-decoded from that prefix, and its Grad-CAM;
  - a contrast asked ("why this word and not that one?"), Grad-CAM;
  - LIME (1000 samples) and occlusion (default patches) of a new caption, to their end (the page shows
    their progress and a cancel button; no target).

Every loop is bounded (repeats, and a timeout per request); nothing but 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import torch

from captionlens.reference import REFERENCE_CHECKPOINT, reference_data

TARGETS = {"click": 0.1, "new image": 1.0, "typed caption": 1.0, "alternative": 1.0, "contrast": 1.0}


def start_server(gallery: Path, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "captionlens", "serve", "--checkpoint", str(REFERENCE_CHECKPOINT), "--images",
               str(gallery), "--port", "0", "--device", "cpu"]
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if process.poll() is not None:
                raise RuntimeError("captionlens serve exited before listening") from None
            continue
        if "captionlens serve: open " in line:
            address = line.split("open ", 1)[1].split()[0]
            if not address.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"the server listens on {address}, not on 127.0.0.1")
            return process, address
    process.kill()
    raise RuntimeError("captionlens serve did not start in time")


def maps(http: httpx.Client, image: str, tokens: list[str], method: str, contrast: dict | None = None) -> dict:
    """A maps request followed to its end (at most 300 polls of at most 1 s)."""
    answer = http.post("/api/maps", json={"image": image, "tokens": tokens, "method": method, "contrast": contrast})
    answer.raise_for_status()
    data = answer.json()
    for _ in range(300):
        if data["status"] != "running":
            break
        data = http.get(f"/api/jobs/{data['job']}", params={"wait": 1}).json()
    if data["status"] != "done":
        raise RuntimeError(f"{method}: {data}")
    return data["result"]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(repeats: int) -> dict[str, list[float]]:
    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    data = reference_data(workdir / "shapes")
    names = sorted(p.name for p in (data / "Images").glob("*.png"))
    if len(names) < 3 * repeats + 5:
        raise SystemExit(f"--repeats {repeats} needs {3 * repeats + 5} scenes, the reference data has {len(names)}")
    process, address = start_server(data / "Images")
    fresh = iter(names)
    times: dict[str, list[float]] = {key: [] for key in (*TARGETS, "LIME, 1000 samples", "occlusion")}
    try:
        with httpx.Client(base_url=address, timeout=120) as http:
            def open_image() -> str:
                return http.post("/api/open", json={"name": next(fresh)}).json()["id"]

            def caption(image: str, **request) -> dict:
                answer = http.post("/api/caption", json={"image": image, "beam_size": 3, **request})
                answer.raise_for_status()
                return answer.json()

            def new_image() -> dict:
                image = open_image()
                return maps(http, image, caption(image)["tokens"], "gradcam")

            def typed(image: str, text: str) -> dict:
                return maps(http, image, caption(image, text=text)["tokens"], "gradcam")

            def continued(image: str, prefix: list[str]) -> dict:
                return maps(http, image, caption(image, prefix=prefix)["tokens"], "gradcam")

            warm = open_image()                                    # first requests pay one-time costs
            maps(http, warm, caption(warm)["tokens"], "gradcam")
            image = open_image()
            tokens = caption(image)["tokens"]
            maps(http, image, tokens, "gradcam")
            for _ in range(repeats):
                times["click"].append(timed(partial(maps, http, image, tokens, "gradcam")))
            for _ in range(repeats):
                times["new image"].append(timed(new_image))
            for k in range(repeats):
                text = ["a small red circle", "a large blue square above a green triangle",
                        "a yellow triangle left of a red circle"][k % 3] + " and a circle" * (k // 3 % 2)
                image = open_image()
                caption(image)
                times["typed caption"].append(timed(partial(typed, image, text)))
            for _ in range(repeats):
                image = open_image()
                view = caption(image)
                position = min(1, len(view["tokens"]) - 1)
                others = [a["word"] for a in view["alternatives"][position]
                          if a["word"] not in (view["tokens"][position], "<END>")]
                times["alternative"].append(timed(partial(continued, image, view["tokens"][:position] + others[:1])))
                times["contrast"].append(timed(partial(maps, http, image, view["tokens"], "gradcam",
                                                       {str(position): others[-1]})))
            for _ in range(max(3, repeats // 10)):
                image = open_image()
                tokens = caption(image)["tokens"]
                times["LIME, 1000 samples"].append(timed(partial(maps, http, image, tokens, "lime")))
                times["occlusion"].append(timed(partial(maps, http, image, tokens, "occlusion")))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    return times


def table(times: dict[str, list[float]]) -> str:
    labels = {"click": "click on a word, caption and maps cached (one maps request)",
              "new image": "new image: open, caption (beam 3), Grad-CAM of every word",
              "typed caption": "typed caption: teacher-forced, Grad-CAM of every word",
              "alternative": "alternative word clicked: re-decode from that prefix, Grad-CAM",
              "contrast": "contrast asked (why this word and not that one), Grad-CAM",
              "LIME, 1000 samples": "LIME, 1000 samples, to the end (progress shown, cancellable)",
              "occlusion": "occlusion, default patches, to the end (progress shown, cancellable)"}
    rows = ["| action | n | p50 ms | p95 ms | target | holds |", "|---|---|---|---|---|---|"]
    for key, values in times.items():
        p50, p95 = 1000 * statistics.median(values), 1000 * percentile(values, 0.95)
        target = TARGETS.get(key)
        holds = "" if target is None else ("yes" if p95 < 1000 * target else "NO")
        rows.append(f"| {labels[key]} | {len(values)} | {p50:.1f} | {p95:.1f} | "
                    f"{'' if target is None else f'< {1000 * target:.0f} ms'} | {holds} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None, help="Also write the raw timings here.")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    times = run(args.repeats)
    print(f"server: the reference model (Show-Attend-Tell, 96 px), {len(os.sched_getaffinity(0))} CPU cores, "
          f"torch {torch.__version__}, load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f}\n")
    print(table(times))
    if args.json:
        args.json.write_text(json.dumps(times, indent=2))


if __name__ == "__main__":
    main()
