"""What the server reads and accepts: only the gallery's own images (no `../`, absolute path, symbolic link
out of the folder or URL-encoded form of them reaches another file, and a link changed after the start is
refused), a glob's matches, and uploads within the byte and pixel limits that are images; everything
else refused with one clear message, before anything is decoded where the header says it is too large."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serving import GALLERY, make_client

from captionlens.serve import Gallery, Limits
from zoo import write_broken, write_images

SECRET = b"the secret file the client must never get"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """An image and a text file beside the gallery folder, and links to them inside it."""
    write_images(tmp_path / "private", ["secret.png"], seed=7)
    (tmp_path / "private" / "passwords.txt").write_bytes(SECRET)
    return tmp_path / "private"


def test_the_gallery_lists_its_images_only(gallery_dir, outside):
    (gallery_dir / "notes.txt").write_text("not an image")
    (gallery_dir / "sub").mkdir()
    write_images(gallery_dir / "sub", ["nested.png"])
    os.symlink(outside / "secret.png", gallery_dir / "escape.png")                # a link out of the folder
    os.symlink(gallery_dir / "a.png", gallery_dir / "alias.png")                   # a link that stays inside
    assert Gallery(gallery_dir).names == ["a.png", "alias.png", "b.jpg", "c.png", "d.png"]
    assert Gallery(f"{gallery_dir}/*.png").names == ["a.png", "alias.png", "c.png", "d.png"]
    wider = Gallery(f"{gallery_dir.parent}/*/*.png")          # the glob's root is the parent: the link stays inside
    assert wider.names == ["gallery/a.png", "gallery/alias.png", "gallery/c.png", "gallery/d.png",
                           "gallery/escape.png", "private/secret.png"]
    with pytest.raises(ValueError, match="no image files"):
        Gallery(outside / "nothing-*.png")
    with pytest.raises(ValueError, match="not a folder"):
        Gallery(outside / "passwords.txt")


TRAVERSALS = ["../private/secret.png", "../private/passwords.txt", "..%2Fprivate%2Fsecret.png",
              "%2e%2e/private/secret.png", "%252e%252e%252fprivate%252fsecret.png", "escape.png",
              "sub/../../private/secret.png", "./a.png", "a.png/", "A.PNG", "", "%00a.png", "a.png%00.png"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_no_name_reaches_a_file_outside_the_gallery(model, gallery_dir, outside, name):
    os.symlink(outside / "secret.png", gallery_dir / "escape.png")
    absolute = str(outside / "secret.png")
    with make_client(model, gallery_dir) as client:
        for asked in (name, absolute, absolute.replace("/", "%2F")):
            thumb = client.get(f"/api/gallery/thumb?name={asked}")
            assert thumb.status_code == 404 and "in the gallery" in thumb.json()["error"], (asked, thumb.text)
            opened = client.post("/api/open", json={"name": asked})
            assert opened.status_code == 404 and SECRET not in opened.content, asked
        assert client.get(f"/api/image/{name or 'x'}").status_code == 404
        assert client.get("/api/gallery/thumb?name=a.png").status_code == 200


def test_a_link_changed_after_the_start_is_refused(model, gallery_dir, outside):
    os.symlink(gallery_dir / "a.png", gallery_dir / "alias.png")
    with make_client(model, gallery_dir) as client:
        assert client.post("/api/open", json={"name": "alias.png"}).status_code == 200
        (gallery_dir / "alias.png").unlink()
        os.symlink(outside / "secret.png", gallery_dir / "alias.png")              # swapped for a link out
        assert client.post("/api/open", json={"name": "alias.png"}).status_code == 404
        assert client.get("/api/gallery/thumb?name=alias.png").status_code == 404


def test_thumbnails_are_small_jpegs_made_when_asked(client):
    names = client.get("/api/gallery").json()["names"]
    assert names == sorted(GALLERY)
    page = client.get("/").text
    assert 'id="gallery"' in page and '"gallery":["a.png","b.jpg","c.png","d.png"]' in page
    thumb = client.get("/api/gallery/thumb?name=b.jpg")
    assert thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert image.size == (64, 48)                          # never enlarged


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_uploads_within_the_limits_are_taken(client):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    answer = client.post("/api/upload", files={"file": ("../../etc/cat.png", png_bytes(photo), "image/png")})
    assert answer.status_code == 200
    image = answer.json()
    assert (image["width"], image["height"], image["name"]) == (50, 30, "cat.png")   # a name, never a path
    view = client.post("/api/caption", json={"image": image["id"]})
    assert view.status_code == 200 and view.json()["image"] == image["id"]


def test_uploads_too_large_or_not_images_are_refused_clearly(model, gallery_dir, tmp_path):
    limits = Limits(max_bytes=50_000, max_pixels=100_000)
    broken = {path.name: path.read_bytes() for path in write_broken(tmp_path / "broken")}
    noise = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    with make_client(model, gallery_dir, limits) as client:
        def upload(name: str, data: bytes):
            return client.post("/api/upload", files={"file": (name, data)})

        cases = [
            (upload("big.png", png_bytes(Image.fromarray(noise))), 413, "KB, more than the 49 KB this server accepts"),
            (upload("wide.png", png_bytes(Image.new("RGB", (1000, 500), "red"))), 413,
             "wide.png: 1000 x 500 = 500,000 pixels is more than the 100,000 this server accepts"),
            (upload("notes.txt", b"just some text\n"), 400,
             "notes.txt: cannot read image (not a recognised image format)"),
            (upload("cut.png", broken["cut.png"]), 400, "cut.png: cannot read image"),
            (upload("notes.jpg", broken["notes.jpg"]), 400, "not an image this server can read"),
            (client.post("/api/upload", data={"other": "x"}), 400, 'upload an image as the multipart field "file"'),
        ]
        for response, status, message in cases:
            assert response.status_code == status and message in response.json()["error"], response.text
        declared = client.post("/api/upload", content=b"", headers={"Content-Length": str(10 ** 9),
                                                                   "Content-Type": "multipart/form-data; boundary=x"})
        assert declared.status_code == 413                      # refused from the header, before reading a byte
        assert upload("ok.png", png_bytes(Image.fromarray(noise[:40, :40]))).status_code == 200   # and it goes on


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")   # Pillow's, on reading the header
def test_a_decompression_bomb_is_refused_from_its_header(client):
    bomb = png_bytes(Image.new("1", (12_000, 12_000)))          # 144 million pixels in a small file
    assert len(bomb) < 1_000_000
    answer = client.post("/api/upload", files={"file": ("bomb.png", bomb)})
    assert answer.status_code == 413
    assert "bomb.png: 12000 x 12000 = 144,000,000 pixels is more than the 40,000,000" in answer.json()["error"]


def test_an_image_just_over_the_byte_limit_is_refused_naming_the_file(model, gallery_dir):
    data = png_bytes(Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    with make_client(model, gallery_dir, Limits(max_bytes=len(data) - 1)) as client:
        answer = client.post("/api/upload", files={"file": ("x.png", data)})
        assert answer.status_code == 413
        assert answer.json()["error"] == (f"x.png is {len(data):,} bytes, more than the {len(data) - 1:,} bytes "
                                          "this server accepts")
