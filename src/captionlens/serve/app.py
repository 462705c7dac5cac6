"""The web application of `captionlens serve` (Starlette): the page and the JSON API it talks to.

    GET    /                          the page (viz/static/serve.*, around the report's viewer)
    GET    /api/info                  methods, the recommended one, beam sizes, the suspect rule, limits
    GET    /api/gallery               the names of the --images gallery
    GET    /api/gallery/thumb?name=N  a gallery thumbnail (JPEG), made when first asked for
    POST   /api/open     {name}       open a gallery image            -> image
    POST   /api/upload   multipart    upload an image (field "file")  -> image
    GET    /api/image/ID              the photo as the page shows it (JPEG)
    POST   /api/caption  {image, beam_size?, prefix?: [words] | text?: str | words?: [words]}  -> caption
    POST   /api/maps     {image, tokens: [words], method, contrast?: {position: foil}}  -> job
    GET    /api/jobs/ID?wait=S        a job's state (waiting up to S seconds for it to finish)
    DELETE /api/jobs/ID               cancel a job

A job answer is {"status": "done", "result": maps} (200), {"status": "running", "job", "progress"} (202)
or {"status": "cancelled", "job"}; every error is {"error": "one line"} with its status (400 bad request,
404 unknown image or job, 413 too large, 500 a bug), and the server goes on serving. Request bodies are
read up to a limit before they are parsed; uploads are checked by `uploads.open_image`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from captionlens.data.images import ImageLoadError
from captionlens.serve.gallery import Gallery, NotInGallery
from captionlens.serve.service import CaptionService, StoredImage, jpeg_bytes
from captionlens.serve.uploads import Limits, Refused, open_image, too_large
from captionlens.serve.worker import Job, wait_for
from captionlens.viz.page import colormap_tables, page, script_json

log = logging.getLogger("captionlens.serve")
JSON_BODY_LIMIT = 64 * 1024        # bytes of a JSON request
MULTIPART_OVERHEAD = 64 * 1024     # what a multipart upload adds around the file's bytes
THUMB_SIZE = 200
THUMBS_KEPT = 4096
ANSWER_WITHIN = 0.5                # seconds a maps request waits before answering "running"
LONGEST_WAIT = 10.0                # the most a job poll waits


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[[Request], Awaitable[Response]]


def api(handler: Handler) -> Handler:
    """Every failure as one JSON line with its status; an unexpected one is logged with its traceback and
    answered 500, and the server goes on."""
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return error(exc.status, str(exc))
        except Refused as exc:
            return error(exc.status, str(exc))
        except (LookupError, NotInGallery) as exc:
            return error(404, exc.args[0] if exc.args else str(exc))
        except (ValueError, ImageLoadError, TypeError) as exc:
            return error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the server
            log.exception("request %s %s failed", request.method, request.url.path)
            return error(500, f"internal error: {type(exc).__name__}: {exc}")
    return wrapped


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


async def read_body(request: Request, limit: int, name: str, allowance: int = 0) -> bytes:
    """The request's body, refused (413, naming `limit`) as soon as it is longer than `limit + allowance`
    (what a format adds around the content), before it is parsed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + allowance:
        raise too_large(int(declared), limit, name)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + allowance:
            raise too_large(size, limit, name)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> dict[str, Any]:
    body = await read_body(request, JSON_BODY_LIMIT, "the request")
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def job_answer(job: Job, done: bool) -> JSONResponse:
    if not done:
        return JSONResponse({"status": "running", "job": job.id,
                             "progress": None if job.progress is None else job.progress.to_json()}, status_code=202)
    if job.future.cancelled():
        return JSONResponse({"status": "cancelled", "job": job.id})
    exc = job.future.exception()
    if isinstance(exc, CancelledError):
        return JSONResponse({"status": "cancelled", "job": job.id})
    if exc is not None:
        raise exc
    return JSONResponse({"status": "done", "job": job.id, "result": job.future.result().to_json()})


class Thumbnails:
    """Gallery thumbnails, made when first asked for and kept (the last `THUMBS_KEPT`)."""

    def __init__(self, gallery: Gallery, limits: Limits) -> None:
        self.gallery, self.limits = gallery, limits
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, bytes] = OrderedDict()

    def get(self, name: str) -> bytes:
        with self._lock:
            if name in self._kept:
                return self._kept[name]
        thumb = jpeg_bytes(read_gallery_image(self.gallery, name, self.limits), THUMB_SIZE, quality=80)
        with self._lock:
            self._kept[name] = thumb
            while len(self._kept) > THUMBS_KEPT:
                self._kept.popitem(last=False)
        return thumb


def read_gallery_image(gallery: Gallery, name: str, limits: Limits) -> Any:
    path = gallery.path(name)
    if path.stat().st_size > limits.max_bytes:
        raise too_large(path.stat().st_size, limits.max_bytes, name)
    return open_image(path.read_bytes(), name, limits)


def create_app(service: CaptionService, gallery: Gallery | None = None, limits: Limits | None = None,
               title: str = "captionlens: ask the model") -> Starlette:
    """The application over `service` (the model), `gallery` (--images) and upload `limits` (default `Limits()`)."""
    gallery = gallery or Gallery(None)
    limits = limits or Limits()
    thumbnails = Thumbnails(gallery, limits)
    info_data = service.info()
    data = {**info_data, "gallery": gallery.names, "labels": {m["name"]: m["label"] for m in info_data["methods"]},
            "colormaps": colormap_tables(), "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels}}
    html = page("serve", {"TITLE": title, "DATA": script_json(data)})

    def image_answer(image: StoredImage) -> JSONResponse:
        return JSONResponse(image.view().to_json())

    async def index(request: Request) -> Response:
        return HTMLResponse(html)

    @api
    async def info(request: Request) -> Response:
        return JSONResponse({**service.info(), "limits": data["limits"], "gallery": len(gallery)})

    @api
    async def gallery_names(request: Request) -> Response:
        return JSONResponse({"names": gallery.names})

    @api
    async def thumb(request: Request) -> Response:
        name = request.query_params.get("name", "")
        return Response(await run_in_threadpool(thumbnails.get, name), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    @api
    async def open_gallery(request: Request) -> Response:
        name = (await read_json(request)).get("name")
        if not isinstance(name, str):
            raise ApiError(400, "name the gallery image: {\"name\": ...}")
        image = await run_in_threadpool(read_gallery_image, gallery, name, limits)
        return image_answer(service.images.add(image, name))

    @api
    async def upload(request: Request) -> Response:
        body = await read_body(request, limits.max_bytes, "the upload", MULTIPART_OVERHEAD)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
        try:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise ApiError(400, "upload an image as the multipart field \"file\"")
            name = Path(file.filename or "upload").name
            content = await file.read()
        finally:
            await form.close()
        image = await run_in_threadpool(open_image, content, name, limits)
        return image_answer(service.images.add(image, name))

    @api
    async def photo(request: Request) -> Response:
        image_id = request.path_params["image"]
        return Response(await run_in_threadpool(service.images.jpeg, image_id), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    @api
    async def caption(request: Request) -> Response:
        body = await read_json(request)
        job = service.caption(str(body.get("image")), body.get("beam_size"), body.get("prefix"), body.get("text"),
                              body.get("words"))
        await wait_for(job, None)
        if job.future.exception() is not None:
            raise job.future.exception()  # type: ignore[misc]
        return JSONResponse(job.future.result().to_json())

    @api
    async def maps(request: Request) -> Response:
        body = await read_json(request)
        contrast = body.get("contrast") or None
        if contrast is not None:
            if not isinstance(contrast, dict):
                raise ApiError(400, "contrast must be {position: foil word}")
            try:
                contrast = {int(position): foil for position, foil in contrast.items()}
            except ValueError:
                raise ApiError(400, f"contrast positions must be word indices, got {list(contrast)}") from None
        tokens = body.get("tokens")
        if not isinstance(tokens, list):
            raise ApiError(400, "tokens must be the caption's words, a list")
        job = service.maps(str(body.get("image")), tokens, str(body.get("method")), contrast)
        return job_answer(job, await wait_for(job, ANSWER_WITHIN))

    def find_job(request: Request) -> Job:
        job = service.worker.job(request.path_params["job"])
        if job is None:
            raise ApiError(404, f"no job {request.path_params['job']!r} (finished long ago, or never started)")
        return job

    @api
    async def job_state(request: Request) -> Response:
        job = find_job(request)
        try:
            wait = min(max(float(request.query_params.get("wait", "0")), 0.0), LONGEST_WAIT)
        except ValueError:
            raise ApiError(400, "wait must be a number of seconds") from None
        return job_answer(job, await wait_for(job, wait))

    @api
    async def cancel(request: Request) -> Response:
        job = find_job(request)
        job.cancel()
        return JSONResponse({"status": "cancelled", "job": job.id})

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", index),
        Route("/favicon.ico", no_icon),
        Route("/api/info", info),
        Route("/api/gallery", gallery_names),
        Route("/api/gallery/thumb", thumb),
        Route("/api/open", open_gallery, methods=["POST"]),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/image/{image}", photo),
        Route("/api/caption", caption, methods=["POST"]),
        Route("/api/maps", maps, methods=["POST"]),
        Route("/api/jobs/{job}", job_state, methods=["GET"]),
        Route("/api/jobs/{job}", cancel, methods=["DELETE"]),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        service.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return app
