"""Search a catalogue with photos: detect their garments, find each one's closest shop items."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import yaml
from detectron2.config import get_cfg
from PIL import Image

from ... import add_deepfashion2_config
from ...engine.checkpoint import refuse_unsafe_weights
from ...landmarks import CATEGORY_BY_ID
from ...retrieval import Catalogue
from ...retrieval.catalogue import MAX_TOP_K, CatalogueError
from ...utils.checked import CheckedFolderError, read_plain_file
from ...utils.visualizer import no_garment, retrieval_strip, stack_rows
from .embed import ExportedEmbedder, GarmentEmbedder, UnreadableImageError, model_identity


def catalogue_config(cat: Catalogue, opts=()):
    """
    The config of the model that built ``cat`` (its config.yaml), with ``opts`` on top. The file
    is data: plain YAML only (a tag that would construct a Python object is refused), no
    ``_BASE_``, and the weights it names (unless ``opts`` names others) must be a local ``.pth``
    file or a ``deepfashion2://`` name trusted by this project's pinned table or the user's list:
    never a URL, a pickle, or a hash that the catalogue itself supplies.
    """
    path = os.path.join(cat.folder, "config.yaml")
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    try:
        text = read_plain_file(path, MAX_CONFIG_BYTES).decode("utf-8")
        data = yaml.safe_load(text)
        if not isinstance(data, dict) or "_BASE_" in data:
            raise CatalogueError(path, "refused: a catalogue's config is one mapping, no _BASE_")
        cfg.merge_from_file(path, allow_unsafe=False)  # safe_load again: no fallback to tags
    except CheckedFolderError as e:
        raise CatalogueError(e.path, e.reason) from None
    except UnicodeDecodeError:
        raise CatalogueError(path, "refused: not UTF-8 text") from None
    except RecursionError:
        raise CatalogueError(path, "refused: nested too deeply") from None
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise CatalogueError(path, f"refused: not plain YAML data ({first})") from None
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        if isinstance(e, CatalogueError):
            raise
        raise CatalogueError(path, f"not a config of this project: {e}") from None
    opts = list(opts)
    cfg.merge_from_list(opts)
    if "MODEL.WEIGHTS" not in opts[::2]:
        try:
            refuse_unsafe_weights(cfg.MODEL.WEIGHTS)
            if "#" in cfg.MODEL.WEIGHTS:
                raise ValueError("a hash given beside the weights is not trusted here")
        except ValueError as e:
            raise CatalogueError(
                path,
                f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r} refused ({e})",
                "give the weights yourself: MODEL.WEIGHTS /path/to/model.pth",
            ) from None
    return cfg


# What a person searching a photo is shown (tools/search.py, tools/serve.py): the garments the
# model is fairly sure of. The benchmark's policy (DEEPFASHION2.RETRIEVAL: up to 10 garments per
# photo from score 0.05) is what the evaluator scores, and noisy on a page.
PEOPLE_POLICY = {"min_score": 0.5, "max_garments": 5}
# results per garment, the one default of the command line, its pictures, the API and the page
TOP_K = 10
MAX_GARMENTS = 100  # per photo, the most a search may ask for
MAX_CONFIG_BYTES = 1 << 20  # a config is a few kB


def check_policy(top_k: int, min_score: float | None, max_garments: int | None) -> None:
    if not (isinstance(top_k, int) and 1 <= top_k <= MAX_TOP_K):
        raise ValueError(f"top-k must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}")
    if min_score is not None and not 0 <= min_score <= 1:
        raise ValueError(f"min-score must be within 0..1, got {min_score!r}")
    if max_garments is not None and not (
        isinstance(max_garments, int) and 1 <= max_garments <= MAX_GARMENTS
    ):
        raise ValueError(
            f"max-garments must be an integer from 1 to {MAX_GARMENTS}, got {max_garments!r}"
        )


def search(
    cat: Catalogue,
    embedder: GarmentEmbedder,
    photos: list,
    *,
    top_k: int = TOP_K,
    same_category: bool | None = None,
    min_score: float | None = None,
    max_garments: int | None = None,
    seconds: dict | None = None,
    where: str | None = None,
) -> list[list[dict]]:
    """
    For each photo, its garments (the ``max_garments`` best detections with score >=
    ``min_score``; default: the config's benchmark policy) as ``{"box", "category",
    "category_name", "score", "matches"}``, each with its ``top_k`` catalogue items, within its
    predicted category unless ``same_category=False`` (default: the catalogue's policy), among
    the items that satisfy the filter ``where`` (:mod:`...retrieval.filters`; a bad one raises
    :class:`FilterError` before any photo is read). Raises :class:`UnreadableImageError` for a
    photo that cannot be read. The one search routine of the
    command line and the service: the same photo gets the same answer from both.
    """
    check_policy(top_k, min_score, max_garments)
    if where:
        cat.check_filter(where)  # before the model runs
    if same_category is None:
        same_category = cat.meta.get("policy", {}).get("same_category", True)
    t0 = time.perf_counter()
    found = embedder.queries(photos, max_garments, min_score)
    for f in found:
        if isinstance(f, UnreadableImageError):
            raise f
    t1 = time.perf_counter()
    if not cat.uses_milvus:
        cat.index(same_category)  # built (or loaded) once, not per photo
    t2 = time.perf_counter()
    # every photo's garments in one lookup: batched, and one Milvus request per category
    counts = [len(f[1]) for f in found]
    every = []
    if sum(counts):
        q, q_cats = (np.concatenate([f[i] for f in found]) for i in (3, 1))
        every = cat.search(q, q_cats, top_k, same_category, where)
    out = []
    for (boxes, cats, scores, _), end, n in zip(found, np.cumsum(counts).tolist(), counts):
        matches = every[end - n : end]
        out.append(
            [
                {
                    "box": b,
                    "category": int(c),
                    "category_name": category_name(int(c)),
                    "score": float(s),
                    "matches": [dict(x, category_name=category_name(x["category"])) for x in m],
                }
                for b, c, s, m in zip(boxes.tolist(), cats.tolist(), scores.tolist(), matches)
            ]
        )
    if seconds is not None:  # where the time went (bench/catalogue.py)
        seconds.update(
            detection_and_embedding=t1 - t0, index=t2 - t1, lookup=time.perf_counter() - t2
        )
    return out


def category_name(category: int) -> str:
    """The name of a 1-based category (the files' and the search output's numbering)."""
    return CATEGORY_BY_ID[category].name


def open_catalogue(
    catalogue_dir: str, opts=(), embedder=None, model: str | None = None
) -> tuple[Catalogue, GarmentEmbedder | ExportedEmbedder]:
    """
    The catalogue and its own model (other weights are refused): the one its config names, or
    ``model``, an exported file (``.onnx`` / ``.ts``), for a catalogue indexed with it.
    """
    cat = Catalogue(catalogue_dir)
    if embedder is None and model:
        embedder = ExportedEmbedder(model)
    if embedder is None:
        if cat.meta.get("exported"):
            raise CatalogueError(
                cat.folder, f"indexed with an exported model ({cat.meta.get('config')})",
                "search it with that file: --model FILE",
            )  # fmt: skip
        cfg = catalogue_config(cat, opts)
        cat.check_model(model_identity(cfg))
        embedder = GarmentEmbedder(cfg)
    else:
        cat.check_model(embedder.identity)
    return cat, embedder


def search_photos(
    catalogue_dir: str,
    photos: list[str],
    *,
    top_k: int = TOP_K,
    output: str | None = None,
    opts=(),
    same_category: bool | None = None,
    embedder: GarmentEmbedder | None = None,
    min_score: float | None = None,
    max_garments: int | None = None,
    image_root: str | None = None,
    model: str | None = None,
    where: str | None = None,
) -> dict:
    """
    :func:`search` over a catalogue folder, with the catalogue's own model. With ``output``,
    writes ``results.json`` and a picture per photo (its matches from the catalogue's image
    folder, or ``image_root``).
    """
    cat, embedder = open_catalogue(catalogue_dir, opts, embedder, model)  # search() checks
    seconds: dict = {}
    found = search(
        cat,
        embedder,
        photos,
        top_k=top_k,
        same_category=same_category,
        min_score=min_score,
        max_garments=max_garments,
        seconds=seconds,
        where=where,
    )
    out = [{"photo": p, "garments": g} for p, g in zip(photos, found)]
    result = {"catalogue": catalogue_dir, "results": out, "seconds": seconds}
    if output:
        root = cat.image_folder(image_root)
        os.makedirs(output, exist_ok=True)
        with open(os.path.join(output, "results.json"), "w") as f:
            json.dump(result, f, indent=1, allow_nan=False)
        for entry, name in zip(out, picture_names([e["photo"] for e in out])):
            draw(entry, cat, root, os.path.join(output, name))
    return result


def picture_names(photos: list[str]) -> list[str]:
    """``<stem>.png`` per photo; photos sharing a base name get ``<stem>-2.png``, ... in order."""
    names, used = [], set()
    for photo in photos:
        stem, n = _stem(photo), 1
        name = f"{stem}.png"
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        names.append(name)
    return names


def draw(entry: dict, cat: Catalogue, root: str, path: str) -> None:
    """One row per garment of the photo: the garment, then its catalogue items (those whose
    image is still the one indexed, in ``root``: :meth:`Catalogue.image_path`); a photo without
    any garment is drawn alone, with a note."""
    photo = Image.open(entry["photo"])
    if not entry["garments"]:
        no_garment(photo).save(path)
        return
    rows = []
    for g in entry["garments"]:
        shown = [(cat.image_path(root, m["item"]), m["box"]) for m in g["matches"]]
        rows.append(
            retrieval_strip(
                photo, g["box"], [(Image.open(p), b, None) for p, b in shown if p is not None]
            )
        )
    if rows:
        stack_rows(rows).save(path)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]
