"""The application on a real uvicorn server on 127.0.0.1: 50 concurrent requests over HTTP get the answers
the library gives one at a time, with the model never used by two threads at once; a client that goes away
mid-request leaves the server serving (and the work it asked for done); `captionlens serve` from the
command line prints its address and serves the page; it binds 127.0.0.1 unless told, and says so loudly
when told otherwise. Every loop here is bounded in count and time, and talks to 127.0.0.1 only."""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image
from serving import FAST, GALLERY, running

from captionlens.cli import main
from captionlens.explain import explain
from captionlens.explain.registry import is_signed
from captionlens.models.decoding import decode_features
from captionlens.serve import CaptionService, Gallery, ServeSettings, create_app, exposure_warning
from captionlens.serve.server import AnnouncingServer, is_local, url
from captionlens.viz.overlay import method_maps
from captionlens.viz.page import heat_sprite

TOKENS = ["a", "red", "circle", "above", "the", "square"]
REQUESTS = 50


class OneAtATime:
    """Wraps the model's entry points to record how many threads are inside it at once (a call from inside
    another, in the same thread, is the same user)."""

    def __init__(self, model) -> None:
        self.lock, self.depth, self.most, self.calls = threading.Lock(), {}, 0, 0
        for name in ("encode", "teacher_forced_hidden", "step", "init_state"):
            setattr(model, name, self.watch(getattr(model, name)))

    def watch(self, function):
        def watched(*args, **kwargs):
            me = threading.get_ident()
            with self.lock:
                self.depth[me] = self.depth.get(me, 0) + 1
                self.calls += 1
                self.most = max(self.most, sum(1 for d in self.depth.values() if d > 0))
            try:
                time.sleep(0.0005)              # widen the window in which a second thread could come in
                return function(*args, **kwargs)
            finally:
                with self.lock:
                    self.depth[me] -= 1
        return watched


def follow(http: httpx.Client, response: httpx.Response) -> dict:
    """A maps answer followed to its end, at most 100 polls of at most 1 s."""
    data = response.json()
    for _ in range(100):
        if data.get("status") != "running":
            break
        data = http.get(f"/api/jobs/{data['job']}", params={"wait": 1}).json()
    return data


def test_fifty_concurrent_requests_get_the_librarys_answers_one_model_user_at_a_time(model, gallery_dir):
    pictures = {name: np.asarray(Image.open(gallery_dir / name).convert("RGB")) for name in GALLERY}
    service = CaptionService(model, ServeSettings(max_length=6, settings=FAST))
    watch = OneAtATime(model)
    asks = []
    for i in range(REQUESTS):
        name, kind = GALLERY[i % len(GALLERY)], i % 5
        if kind == 0:
            asks.append((name, "caption", 1 + i % 3, None))
        else:
            method = ("gradcam", "attention", "occlusion", "gradcam")[kind - 1]
            asks.append((name, method, None, {"2": "square"} if kind == 4 else None))
    with running(create_app(service, Gallery(gallery_dir))) as base, httpx.Client(base_url=base, timeout=60) as http:
        ids = {name: http.post("/api/open", json={"name": name}).json()["id"] for name in GALLERY}

        def ask(spec):
            name, what, beam, contrast = spec
            if what == "caption":
                return http.post("/api/caption", json={"image": ids[name], "beam_size": beam})
            return http.post("/api/maps", json={"image": ids[name], "tokens": TOKENS, "method": what,
                                                "contrast": contrast})

        start = time.monotonic()
        with ThreadPoolExecutor(REQUESTS) as pool:
            responses = list(pool.map(ask, asks))
        answers = [r.json() if spec[1] == "caption" else follow(http, r) for spec, r in zip(asks, responses)]
        assert time.monotonic() - start < 120
    assert all(r.status_code in (200, 202) for r in responses), [r.text for r in responses if r.status_code >= 300]
    assert watch.calls > REQUESTS and watch.most == 1                 # never two threads inside the model
    for (name, what, beam, contrast), answer in zip(asks, answers):
        if what == "caption":
            x = model.preprocessing.transform(Image.fromarray(pictures[name]))[None]
            with torch.no_grad():
                expected = decode_features(model, model.encode(x), model.vocab, max_length=6, beam_size=beam)[0]
            assert answer["tokens"] == expected.words
            continue
        assert answer["status"] == "done", answer
        expl = explain(model, pictures[name], (what,), caption=TOKENS, settings=FAST,
                       contrast=None if contrast is None else {2: "square"})
        heat_w, heat_h = answer["result"]["heat_size"]
        assert answer["result"]["sprite"] == heat_sprite(method_maps(expl, what), is_signed(what), (heat_h, heat_w))


def test_a_client_that_goes_away_mid_request_leaves_the_server_serving(model, gallery_dir):
    settings = {**FAST, "lime": {"num_samples": 1500, "batch_size": 16}}
    service = CaptionService(model, ServeSettings(max_length=6, settings=settings))
    with running(create_app(service, Gallery(gallery_dir))) as base, httpx.Client(base_url=base, timeout=60) as http:
        image = http.post("/api/open", json={"name": "a.png"}).json()["id"]
        port = int(base.rsplit(":", 1)[1])
        body = json.dumps({"image": image, "tokens": ["a", "red", "circle"], "method": "lime"}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:   # asks for LIME, then hangs up
            raw.sendall(b"POST /api/maps HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:   # half an upload, then hangs up
            raw.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                        b"boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\nContent-Disposition: form-data; "
                        b'name="file"; filename="a.png"\r\n\r\n' + b"\x89PNG" * 100)
        assert http.get("/api/info").status_code == 200                  # still serving, at once
        caption = http.post("/api/caption", json={"image": image})
        assert caption.status_code == 200 and caption.json()["tokens"]
        again = follow(http, http.post("/api/maps", json={"image": image, "tokens": ["a", "red", "circle"],
                                                          "method": "lime"}))
        assert again["status"] == "done"
    picture = np.asarray(Image.open(gallery_dir / "a.png").convert("RGB"))
    expected = explain(model, picture, ("lime",), caption=["a", "red", "circle"], settings=settings)
    heat_w, heat_h = again["result"]["heat_size"]
    assert again["result"]["sprite"] == heat_sprite(method_maps(expected, "lime"), True, (heat_h, heat_w))


def test_the_command_prints_its_address_and_serves_the_page(reference, gallery_dir, tmp_path):
    checkpoint, _ = reference
    command = [sys.executable, "-m", "captionlens", "serve", "--checkpoint", str(checkpoint), "--images",
               str(gallery_dir), "--port", "0", "--device", "cpu", "--lime-samples", "50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        address = None
        deadline = time.monotonic() + 90
        while address is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert process.poll() is None, process.stderr.read()
                continue
            if "captionlens serve: open " in line:
                address = line.split("open ", 1)[1].split()[0]
        assert address and address.startswith("http://127.0.0.1:"), address
        with httpx.Client(base_url=address, timeout=30) as http:
            page = http.get("/")
            assert page.status_code == 200 and "<title>captionlens: ask the model</title>" in page.text
            assert http.get("/api/info").json()["gallery"] == len(GALLERY)
            image = http.post("/api/open", json={"name": "c.png"}).json()["id"]
            assert http.post("/api/caption", json={"image": image, "beam_size": 2}).json()["tokens"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    assert "WARNING" not in process.stderr.read()


def test_it_binds_this_machine_only_unless_told_and_then_says_so(monkeypatch, reference, gallery_dir):
    assert all(is_local(host) for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_local(host) for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"))
    assert exposure_warning("127.0.0.1", 8000) is None
    assert "listening on 0.0.0.0:8000, not on 127.0.0.1" in exposure_warning("0.0.0.0", 8000)
    assert url("0.0.0.0", 8000) == "http://127.0.0.1:8000/" and url("::1", 80) == "http://[::1]:80/"
    bound = []
    monkeypatch.setattr(AnnouncingServer, "run", lambda self: bound.append(self.config.host))   # binds nothing
    checkpoint, _ = reference
    runner = CliRunner()
    local = runner.invoke(main, ["serve", "--checkpoint", str(checkpoint), "--images", str(gallery_dir)])
    assert local.exit_code == 0, local.output
    exposed = runner.invoke(main, ["serve", "--checkpoint", str(checkpoint), "--host", "0.0.0.0"])
    assert exposed.exit_code == 0, exposed.output
    assert bound == ["127.0.0.1", "0.0.0.0"]
    assert "WARNING" not in local.stderr and "WARNING: captionlens serve is listening on 0.0.0.0:8000" in exposed.stderr
    missing = runner.invoke(main, ["serve", "--checkpoint", str(checkpoint), "--images", str(gallery_dir / "*.gif")])
    assert missing.exit_code == 2 and "error: --images" in missing.stderr and "no image files" in missing.stderr


def test_bad_settings_are_refused_before_serving(reference):
    checkpoint, _ = reference
    result = CliRunner().invoke(main, ["serve", "--checkpoint", str(checkpoint), "--setting", "lime.num_samples=1"])
    assert result.exit_code == 2 and "lime: num_samples must be an integer >= 2" in result.stderr
