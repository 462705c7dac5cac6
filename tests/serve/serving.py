"""What the serve tests share: the model (the zoo's tiny Show-Attend-Tell, with captions of a few words),
the gallery's files, a service and application over them (Starlette's TestClient: in-process, no
network), and following a maps request to its end as the page does."""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import uvicorn
from starlette.testclient import TestClient

from captionlens.data.vocabulary import Vocabulary
from captionlens.serve import CaptionService, Gallery, Limits, ServeSettings, create_app
from captionlens.serve.server import AnnouncingServer
from zoo import SHAPE_WORDS, tiny_captioner

GALLERY = ["a.png", "b.jpg", "c.png", "d.png"]
FAST = {"lime": {"num_samples": 40}, "occlusion": {"window": 16, "stride": 16}}   # the methods' cheap settings


def serve_model(architecture: str = "show-attend-tell"):
    """The zoo's model at 64 px, its <END> made less likely so that captions have words."""
    model = tiny_captioner(architecture, vocab=Vocabulary(SHAPE_WORDS), image_size=64, hidden_size=32, grid_size=4,
                           seed=1)
    with torch.no_grad():
        model.decoder.fc.bias[model.vocab.end_idx] -= 4.0
        model.decoder.fc.weight.mul_(3.0)
    return model


def make_client(model, gallery_dir: Path | None, limits: Limits | None = None, **settings) -> TestClient:
    options = {"max_length": 6, "settings": FAST, **settings}
    service = CaptionService(model, ServeSettings(**options))
    return TestClient(create_app(service, Gallery(gallery_dir), limits))


def opened(client: TestClient, name: str = "a.png") -> dict:
    response = client.post("/api/open", json={"name": name})
    assert response.status_code == 200, response.text
    return response.json()


def finished(client: TestClient, answer) -> dict:
    """A maps answer followed to its end (polling the job), as the page does."""
    data = answer.json()
    for _ in range(200):
        if data["status"] != "running":
            break
        data = client.get(f"/api/jobs/{data['job']}?wait=1").json()
    assert data["status"] == "done", data
    return data["result"]


@contextlib.contextmanager
def running(app, timeout: float = 20.0) -> Iterator[str]:
    """`app` on a real uvicorn server on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    server = AnnouncingServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"), say=lambda _: None)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while server.port is None:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
