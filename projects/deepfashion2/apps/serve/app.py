"""
"Shop the look" as a service: an HTTP API and a page over a catalogue (FastAPI on uvicorn).

- ``POST /search``: one photo (multipart field ``image``) -> its garments and each one's closest
  catalogue items, the JSON of ``tools/search.py`` (:func:`..catalogue.search.search`: the same
  routine, so the same photo gets the same answer);
- ``GET /items/{id}/image`` and ``/items/{id}/crop``: a catalogue item's shop image, or its
  garment cropped (a thumbnail), by item id only: a path never comes from the request;
- ``GET /healthz``; ``GET /docs``: the OpenAPI page; ``GET /``: a page to drop a photo on.

Only the catalogue's own images are served: from its image folder (the one recorded at indexing,
or ``image_root``), checked at start-up, never through a link out of it, only while each is the
file that was indexed (its size), only as JPEG or PNG by content (``X-Content-Type-Options:
nosniff``). Uploads are decoded in memory (never written to disk), their size counted as they
arrive and slow clients cut off (:mod:`.guard`).

Inference runs off the event loop, one request at a time on the one model instance (a lock):
on a CPU, one inference already uses every core, so two at once only take twice as long each
and hold twice the memory; on a GPU, one model on one stream serialises them anyway. Requests
queue for the model; everything else (the page, images, health) is served meanwhile. Bad input
gets a 4xx with ``{"error": "<one line>"}`` and the service goes on.
"""

from __future__ import annotations

import io
import os
import threading

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...retrieval.catalogue import MAX_TOP_K
from ..catalogue.embed import UnreadableImageError, decode_image, image_type
from ..catalogue.search import MAX_GARMENTS, PEOPLE_POLICY, TOP_K, open_catalogue, search
from .guard import BodyGuard

MAX_UPLOAD_BYTES = 20 << 20  # 20 MiB: a large phone photo is ~8 MiB
THUMBNAIL = 256  # the crop's longer side, pixels
NOSNIFF = {"X-Content-Type-Options": "nosniff"}  # a browser takes the type we say, or nothing
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")


class SearchService:
    """The catalogue and its model, loaded once; :meth:`search` serialised on the model."""

    def __init__(
        self, catalogue_dir: str, opts=(), image_root: str | None = None, model: str | None = None
    ):
        self.catalogue, self.embedder = open_catalogue(catalogue_dir, opts, model=model)
        self.entries = self.catalogue.entries()
        # the index of the catalogue's own policy, built (or loaded) before the first request
        self.catalogue.index(self.catalogue.meta["policy"].get("same_category", True))
        self._lock = threading.Lock()
        self.images_root = self.catalogue.image_folder(image_root)

    def search(self, photo, **policy) -> list[dict]:
        """``photo``: a path or pixels (H, W, 3) RGB."""
        with self._lock:
            return search(self.catalogue, self.embedder, [photo], **policy)[0]

    def item_path(self, item: int) -> str | None:
        """The shop image of catalogue row ``item``, only if it is inside the image folder and
        still the file that was indexed."""
        return self.catalogue.image_path(self.images_root, item)


def create_app(
    catalogue_dir: str,
    opts=(),
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    image_root: str | None = None,
    model: str | None = None,
) -> FastAPI:
    """The app over ``catalogue_dir`` (its own model; ``opts``: config overrides; ``image_root``:
    the shop images, default the folder recorded at indexing)."""
    service = SearchService(catalogue_dir, opts, image_root, model)
    app = FastAPI(
        title="deepfashion2 shop the look",
        description="Find the garments of a photo in a shop catalogue (DeepFashion2 model).",
    )
    app.state.service = service
    # the multipart envelope around the photo: boundaries and part headers
    app.add_middleware(BodyGuard, max_bytes=max_upload_bytes + 64 * 1024)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message.splitlines()[0][:500]}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        with open(PAGE) as f:
            return f.read()

    @app.get("/healthz")
    async def healthz():
        return {
            "status": "ok",
            "items": len(service.entries),
            "images": len(service.entries.images),
            "weights_sha256": service.catalogue.meta.get("weights_sha256"),
        }

    @app.post("/search")
    async def search_photo(
        request: Request,
        top_k: int = Query(TOP_K, ge=1, le=MAX_TOP_K),
        all_categories: bool = False,
        min_score: float = Query(PEOPLE_POLICY["min_score"], ge=0, le=1),
        max_garments: int = Query(PEOPLE_POLICY["max_garments"], ge=1, le=MAX_GARMENTS),
    ):
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "expected one photo in the multipart field 'image'")
        data = await upload.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload over {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "empty upload (0 bytes)")
        policy = {
            "top_k": top_k,
            "same_category": False if all_categories else None,
            "min_score": min_score,
            "max_garments": max_garments,
        }
        try:
            garments, size = await run_in_threadpool(_search_bytes, service, data, policy)
        except UnreadableImageError as e:
            raise HTTPException(400, f"the upload: {e.reason}") from None
        return {"image": {"width": size[0], "height": size[1]}, "garments": garments}

    @app.get("/items/{item}/image")
    async def item_image(item: int):
        path = service.item_path(item)
        if path is None:
            raise HTTPException(404, f"no catalogue item {item}")
        try:
            kind = await run_in_threadpool(image_type, path)
        except UnreadableImageError as e:
            raise HTTPException(404, f"item {item}: {e.reason}") from None
        return FileResponse(path, media_type=kind, headers=NOSNIFF)

    @app.get("/items/{item}/crop")
    async def item_crop(item: int):
        path = service.item_path(item)
        if path is None:
            raise HTTPException(404, f"no catalogue item {item}")
        box = [float(v) for v in service.entries.boxes[item]]
        try:
            data = await run_in_threadpool(_crop, path, box)
        except UnreadableImageError as e:  # changed on disk since it was indexed
            raise HTTPException(404, f"item {item}: {e.reason}") from None
        return Response(data, media_type="image/jpeg", headers=NOSNIFF)

    return app


ENV_CATALOGUE = "DF2_SERVE_CATALOGUE"
ENV_OPTS = "DF2_SERVE_OPTS"
ENV_IMAGES = "DF2_SERVE_IMAGES"
ENV_MODEL = "DF2_SERVE_MODEL"


def app_from_environment():
    """The app of ``$DF2_SERVE_CATALOGUE`` (``$DF2_SERVE_OPTS``, JSON; ``$DF2_SERVE_IMAGES``):
    what each of uvicorn's ``--workers`` processes builds (``tools/serve.py --workers N``)."""
    import json

    return create_app(
        os.environ[ENV_CATALOGUE],
        json.loads(os.environ.get(ENV_OPTS, "[]")),
        image_root=os.environ.get(ENV_IMAGES) or None,
        model=os.environ.get(ENV_MODEL) or None,
    )


def _search_bytes(service: SearchService, data: bytes, policy: dict):
    """Check the upload as an image (header size first: no decompression bomb is decoded),
    decode it in memory and search it."""
    pixels = decode_image(data, "the upload")
    return service.search(pixels, **policy), (pixels.shape[1], pixels.shape[0])


def _crop(path: str, box: list[float]) -> bytes:
    """The garment's thumbnail; the box (stored, so possibly forged) clipped to the image."""
    image_type(path)  # the same checks as at indexing (size by the header first), JPEG or PNG
    with Image.open(path) as im:
        w, h = im.size
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
        x1, y1 = min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
        crop = im.convert("RGB").crop((x0, y0, x1, y1))
    crop.thumbnail((THUMBNAIL, THUMBNAIL))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
