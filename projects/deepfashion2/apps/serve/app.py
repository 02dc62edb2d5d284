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

Inference runs off the event loop. With a config and weights (PyTorch), one request at a time
on the one model instance: on a CPU, one inference already uses every core (torch's threads are
the process's), so two at once only take twice as long each; on a GPU, one model on one stream
serialises them anyway. With an exported ONNX model, ``parallel`` requests at once (default: one
per core), each on its own ONNX Runtime session of ``cores / parallel`` threads: a 144-px image
gains little from a second thread inside one inference (1.3x) and nearly 2x from two inferences
side by side (bench/deploy.py). Requests queue for a free model; everything else (the page,
images, health) is served meanwhile. Bad input gets a 4xx with ``{"error": "<one line>"}`` and
the service goes on.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import DeepFashion2Error
from ...retrieval import Catalogue
from ...retrieval.catalogue import MAX_TOP_K
from ...retrieval.filters import FilterError
from ..catalogue.embed import ExportedEmbedder, UnreadableImageError, decode_image, image_type
from ..catalogue.search import MAX_GARMENTS, PEOPLE_POLICY, TOP_K, open_catalogue, search
from .guard import BodyGuard

MAX_UPLOAD_BYTES = 20 << 20  # 20 MiB: a large phone photo is ~8 MiB
THUMBNAIL = 256  # the crop's longer side, pixels
NOSNIFF = {"X-Content-Type-Options": "nosniff"}  # a browser takes the type we say, or nothing
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")
RELOAD_CHECK_S = 1.0  # how often a request looks whether the catalogue changed on disk
logger = logging.getLogger(__name__)


def inference_slots(model: str | None, parallel: int | None) -> tuple[int, int | None]:
    """How many inferences run at once, and each one's threads (None: the library's default).
    Only ONNX Runtime sessions are independent of each other; torch's threads are per process."""
    cores = os.cpu_count() or 1
    if not model or not model.endswith(".onnx"):
        if parallel not in (None, 1):
            raise DeepFashion2Error(
                "--parallel needs an exported ONNX model: PyTorch's threads are the process's",
                hint="tools/deploy/export_model.py --format onnx, then --model FILE.onnx",
            )
        return 1, None
    n = parallel or cores
    if n < 1:
        raise DeepFashion2Error(f"--parallel must be at least 1, got {n}")
    return n, max(1, cores // n)


class SearchService:
    """
    The catalogue and its model, loaded once; :meth:`search` on a free model instance (one for
    PyTorch, ``parallel`` ONNX Runtime sessions for an exported ONNX model). A catalogue that
    changes on disk (images added, products updated or removed) is opened again, checked and
    indexed beside the one being served, then swapped in: a request sees one or the other.
    """

    def __init__(
        self,
        catalogue_dir: str,
        opts=(),
        image_root: str | None = None,
        model: str | None = None,
        parallel: int | None = None,
    ):
        slots, threads = inference_slots(model, parallel)
        first = ExportedEmbedder(model, threads) if model else None
        self.folder, self._image_root = catalogue_dir, image_root
        try:  # before opening: a change made meanwhile is seen by the first check
            self._signature = _signature(catalogue_dir)
        except OSError:  # not a catalogue: open_catalogue says so, in one line
            self._signature = None
        catalogue, self.embedder = open_catalogue(catalogue_dir, opts, first, model)
        self.state = self._ready(catalogue)
        self._models: queue.Queue = queue.Queue()
        self._models.put(self.embedder)
        for _ in range(slots - 1):  # the same file: the catalogue's identity check holds
            self._models.put(ExportedEmbedder(model, threads))
        self.parallel = slots
        self._reloading = threading.Lock()
        self._checked = time.monotonic()

    def _ready(self, catalogue: Catalogue) -> "ServedCatalogue":
        """Everything a request needs, built before the catalogue is served."""
        # the index of the catalogue's own policy, built (or loaded) before the first request
        if catalogue.uses_milvus:
            catalogue.milvus()  # reached and checked
        else:
            catalogue.index(catalogue.meta["policy"].get("same_category", True))
        catalogue.rows()
        return ServedCatalogue(catalogue, catalogue.image_folder(self._image_root))

    def reload_if_changed(self, every: float = RELOAD_CHECK_S) -> bool:
        """Open the catalogue again if its files changed (checked at most every ``every``
        seconds, by one request at a time); a catalogue that fails its checks is not served
        (logged), the previous one stays. Whether a new one is now served."""
        now = time.monotonic()
        if now - self._checked < every or not self._reloading.acquire(blocking=False):
            return False
        try:
            self._checked = now
            try:
                signature = _signature(self.folder)
            except OSError as e:  # moved or removed while served: keep serving what is loaded
                logger.warning(f"cannot look at the catalogue's files ({e}): not reloaded")
                return False
            if signature == self._signature:
                return False
            try:
                catalogue = Catalogue(self.folder)
                catalogue.check_model(self.embedder.identity)
                state = self._ready(catalogue)
            except (DeepFashion2Error, OSError, ValueError) as e:
                logger.warning(f"the changed catalogue is not served (the previous one is): {e}")
                self._signature = signature  # not tried again until it changes again
                return False
            self.state, self._signature = state, signature
            logger.info(f"serving the changed catalogue: {len(state.entries)} garments")
            return True
        finally:
            self._reloading.release()

    @property
    def catalogue(self) -> Catalogue:
        return self.state.catalogue

    @property
    def entries(self):
        return self.state.entries

    def search(self, photo, where: str | None = None, **policy) -> list[dict]:
        """``photo``: a path or pixels (H, W, 3) RGB."""
        catalogue = self.state.catalogue
        if where:
            catalogue.check_filter(where)  # a bad filter: before waiting for a model
        embedder = self._models.get()  # waits for a free one
        try:
            return search(catalogue, embedder, [photo], where=where, **policy)[0]
        finally:
            self._models.put(embedder)

    def item(self, item: int) -> tuple[str, list[float]] | None:
        """The shop image of catalogue row ``item`` and the garment's box, only if the image is
        inside the image folder and still the file that was indexed, and not removed."""
        state = self.state
        path = state.catalogue.image_path(state.images_root, item)
        if path is None:
            return None
        return path, [float(v) for v in state.entries.boxes[item]]

    def item_path(self, item: int) -> str | None:
        found = self.item(item)
        return found[0] if found else None


@dataclass(frozen=True)
class ServedCatalogue:
    catalogue: Catalogue
    images_root: str

    @property
    def entries(self):
        return self.catalogue.entries()


def _signature(folder: str) -> tuple:
    """What changes when a catalogue does: catalogue.json (products) and the shards' names
    (each written once, renamed into place)."""
    meta = os.stat(os.path.join(folder, "catalogue.json"))
    shards = os.path.join(folder, "shards")
    names = (
        sorted(n for n in os.listdir(shards) if not n.startswith("."))
        if os.path.isdir(shards)
        else []
    )
    return meta.st_mtime_ns, meta.st_ino, meta.st_size, tuple(names)


def create_app(
    catalogue_dir: str,
    opts=(),
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    image_root: str | None = None,
    model: str | None = None,
    parallel: int | None = None,
) -> FastAPI:
    """The app over ``catalogue_dir`` (its own model; ``opts``: config overrides; ``image_root``:
    the shop images, default the folder recorded at indexing; ``parallel``: inferences at once,
    exported ONNX models only)."""
    service = SearchService(catalogue_dir, opts, image_root, model, parallel)
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
        filter: str | None = Query(None, max_length=2000),
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
            "where": filter or None,
        }
        await run_in_threadpool(service.reload_if_changed)
        try:
            garments, size = await run_in_threadpool(_search_bytes, service, data, policy)
        except UnreadableImageError as e:
            raise HTTPException(400, f"the upload: {e.reason}") from None
        except FilterError as e:
            raise HTTPException(400, f"filter: {e}") from None
        return {"image": {"width": size[0], "height": size[1]}, "garments": garments}

    @app.get("/items/{item}/image")
    async def item_image(item: int):
        found = service.item(item)
        if found is None:
            raise HTTPException(404, f"no catalogue item {item}")
        path = found[0]
        try:
            kind = await run_in_threadpool(image_type, path)
        except UnreadableImageError as e:
            raise HTTPException(404, f"item {item}: {e.reason}") from None
        return FileResponse(path, media_type=kind, headers=NOSNIFF)

    @app.get("/items/{item}/crop")
    async def item_crop(item: int):
        found = service.item(item)
        if found is None:
            raise HTTPException(404, f"no catalogue item {item}")
        path, box = found
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
ENV_PARALLEL = "DF2_SERVE_PARALLEL"


def app_from_environment():
    """The app of ``$DF2_SERVE_CATALOGUE`` (``$DF2_SERVE_OPTS``, JSON; ``$DF2_SERVE_IMAGES``):
    what each of uvicorn's ``--workers`` processes builds (``tools/serve.py --workers N``)."""
    import json

    return create_app(
        os.environ[ENV_CATALOGUE],
        json.loads(os.environ.get(ENV_OPTS, "[]")),
        image_root=os.environ.get(ENV_IMAGES) or None,
        model=os.environ.get(ENV_MODEL) or None,
        parallel=int(os.environ.get(ENV_PARALLEL) or 0) or None,
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
