"""
A synthetic DeepFashion2 in the exact on-disk format (``image/NNNNNN.jpg`` + ``annos/NNNNNN.json``).

Each category has its own left/right-symmetric silhouette; its landmarks lie on the silhouette in
the dataset's order and are mirror-consistent with the category's flip pairs (a flipped image of
landmark ``a`` lands where landmark ``flip(a)`` is). Items that share ``pair_id`` and ``style > 0``
have the same look (colour and pattern) in consumer ("user") and shop images, so retrieval is
learnable; consumer photos have a cluttered background and smaller, occluded items, shop photos a
plain one. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections import deque
from dataclasses import dataclass

import numpy as np
import orjson
from PIL import Image, ImageDraw

from ..landmarks import CATEGORIES, NECKLINE_CATEGORIES, OUTWEAR_CATEGORIES, Category
from ..utils.files import locked, remove_dead_temporaries, temporary_folder

logger = logging.getLogger(__name__)

# Left half of each silhouette in a unit box, from the top of the centre line down to the bottom
# of the centre line (x = 0.5 is the axis of symmetry).
_TOP_SHORT = [
    (0.5, 0.0),
    (0.36, 0.0),
    (0.16, 0.08),
    (0.0, 0.38),
    (0.1, 0.45),
    (0.2, 0.33),
    (0.2, 1.0),
    (0.5, 1.0),
]
_TOP_LONG = [
    (0.5, 0.0),
    (0.36, 0.0),
    (0.16, 0.06),
    (0.0, 0.92),
    (0.1, 0.95),
    (0.22, 0.32),
    (0.22, 1.0),
    (0.5, 1.0),
]
_VEST = [(0.5, 0.0), (0.33, 0.0), (0.2, 0.04), (0.12, 0.3), (0.1, 1.0), (0.5, 1.0)]
_SLING = [(0.5, 0.12), (0.36, 0.12), (0.28, 0.0), (0.24, 0.0), (0.12, 0.3), (0.1, 1.0), (0.5, 1.0)]
_DRESS_SHORT = [
    (0.5, 0.0),
    (0.38, 0.0),
    (0.2, 0.05),
    (0.04, 0.25),
    (0.12, 0.3),
    (0.22, 0.22),
    (0.2, 0.45),
    (0.02, 1.0),
    (0.5, 1.0),
]
_DRESS_LONG = [
    (0.5, 0.0),
    (0.38, 0.0),
    (0.2, 0.04),
    (0.0, 0.6),
    (0.08, 0.62),
    (0.22, 0.22),
    (0.2, 0.45),
    (0.02, 1.0),
    (0.5, 1.0),
]
_VEST_DRESS = [
    (0.5, 0.0),
    (0.35, 0.0),
    (0.22, 0.03),
    (0.18, 0.22),
    (0.18, 0.45),
    (0.02, 1.0),
    (0.5, 1.0),
]
_SLING_DRESS = [
    (0.5, 0.1),
    (0.38, 0.1),
    (0.3, 0.0),
    (0.26, 0.0),
    (0.16, 0.22),
    (0.18, 0.45),
    (0.02, 1.0),
    (0.5, 1.0),
]
_SHORTS = [(0.5, 0.0), (0.04, 0.0), (0.0, 0.95), (0.44, 1.0), (0.5, 0.45)]
_TROUSERS = [(0.5, 0.0), (0.1, 0.0), (0.0, 1.0), (0.36, 1.0), (0.5, 0.25)]
_SKIRT = [(0.5, 0.0), (0.28, 0.0), (0.0, 1.0), (0.5, 1.0)]

_SHAPES = {
    1: (_TOP_SHORT, (0.8, 0.8)),  # (left half, (width, height) relative to the garment scale)
    2: (_TOP_LONG, (0.95, 0.8)),
    3: (_TOP_SHORT, (0.85, 0.9)),
    4: (_TOP_LONG, (1.0, 0.9)),
    5: (_VEST, (0.6, 0.75)),
    6: (_SLING, (0.55, 0.75)),
    7: (_SHORTS, (0.6, 0.45)),
    8: (_TROUSERS, (0.55, 1.1)),
    9: (_SKIRT, (0.6, 0.6)),
    10: (_DRESS_SHORT, (0.75, 1.15)),
    11: (_DRESS_LONG, (0.85, 1.2)),
    12: (_VEST_DRESS, (0.6, 1.1)),
    13: (_SLING_DRESS, (0.6, 1.1)),
}
_UPPER_CATS = [1, 2, 3, 4, 5, 6]
_LOWER_CATS = [7, 8, 9]
_DRESS_CATS = [10, 11, 12, 13]

_PALETTE = np.array(
    [
        (220, 40, 40),
        (40, 160, 60),
        (40, 70, 200),
        (230, 200, 40),
        (150, 50, 180),
        (240, 130, 30),
        (30, 190, 200),
        (120, 80, 40),
        (240, 240, 240),
        (30, 30, 30),
        (250, 120, 170),
        (110, 130, 60),
    ],
    dtype=np.int64,
)
_PATTERNS = ("solid", "hstripes", "vstripes", "dots", "checks")


def _resample(poly: np.ndarray, n: int) -> np.ndarray:
    """(n+2, 2) points at even arc lengths on an open polyline, ends included."""
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0, cum[-1], n + 2)
    return np.stack([np.interp(t, cum, poly[:, 0]), np.interp(t, cum, poly[:, 1])], axis=1)


def _left_chain(cat: Category, neck: set[int]) -> list[int]:
    """
    The paired landmarks of the outline's left half, in the order the official figure's lines
    walk them: from the shoulder-neck point (landmark 2) of a top, from the left waist corner
    (landmark 1) of a bottom, outside the neckline. Index order is not outline order everywhere:
    outwear goes down to the hem (16) and back up the front opening (31, 30, 4).
    """
    adj: dict[int, list[int]] = {}
    for a, b in cat.skeleton:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    partner = _partners(cat)
    start = 1 if neck else 0
    dist, queue = {start: 0}, deque([start])
    while queue:
        v = queue.popleft()
        for u in sorted(adj.get(v, ())):
            if u not in dist and u not in neck:
                dist[u] = dist[v] + 1
                queue.append(u)
    # a landmark reached before its partner is on the left (the walk starts there)
    left = [
        v for v in dist if v not in neck and v in partner and dist.get(partner[v], np.inf) > dist[v]
    ]
    return sorted(left, key=lambda v: (dist[v], v))


def _partners(cat: Category) -> dict[int, int]:
    return {a: b for a, b in cat.flip_pairs} | {b: a for a, b in cat.flip_pairs}


def template(cat: Category) -> tuple[np.ndarray, np.ndarray]:
    """
    Unit-box silhouette polygon (P, 2) and landmark positions (K, 2) of a category, where the
    official figure puts them: the left half's landmarks in the order of the figure's lines, each
    pair partner the mirror image, unpaired landmarks on the centre line.
    """
    left = np.array(_SHAPES[cat.id][0], dtype=np.float64)
    right = np.stack([1.0 - left[::-1, 0], left[::-1, 1]], axis=1)
    outline = np.concatenate([left, right[1:-1]])
    k = cat.num_landmarks
    partner = _partners(cat)
    pos = np.zeros((k, 2))
    upper = cat.id in NECKLINE_CATEGORIES
    neck = set(range(6)) | {partner.get(i, i) for i in range(6)} if upper else set()
    top_y, neck_depth = left[0, 1], 0.12
    if upper and cat.id in OUTWEAR_CATEGORIES:
        # 1 is the back of the neck between the shoulder-neck points 2 and 6; 2-3-4 runs down
        # the left front to the top of the opening (4), mirrored by 6-5-26
        pos[0] = (0.5, top_y)
        curve = np.array([left[1], (0.5 - 0.03, top_y + neck_depth)])
        pos[[1, 2, 3]] = _resample(curve, 1)
    elif upper:
        # a loop from the front centre (1) over the shoulder-neck point (2) to the back (4)
        curve = np.array([(0.5, top_y + neck_depth), (left[1, 0], top_y), (0.5 - 0.02, top_y)])
        pos[[1, 2]] = _resample(curve, 2)[1:-1]
        pos[0], pos[3] = (0.5, top_y + neck_depth), (0.5, top_y)
    # body: the left half of the outline, from the collar (or the waist) to the bottom centre
    chain = _left_chain(cat, neck)
    pos[chain] = _resample(left[1:] if upper else left, len(chain))[1:-1]
    centre = [i for i in range(k) if i not in partner and i not in neck]
    for i in centre:  # a bottom's waist centre (2), else the bottom centre of the outline
        pos[i] = left[0] if i == 1 and not upper else left[-1]
    for i in list(chain) + ([1, 2, 3] if upper else []):
        if i in partner:
            pos[partner[i]] = (1.0 - pos[i, 0], pos[i, 1])
    return outline, pos


@dataclass
class _Look:
    colour: np.ndarray
    colour2: np.ndarray
    pattern: str


def _look(rng: np.random.Generator) -> _Look:
    i, j = rng.choice(len(_PALETTE), 2, replace=False)
    return _Look(_PALETTE[i], _PALETTE[j], _PATTERNS[rng.integers(len(_PATTERNS))])


def _paint(img: Image.Image, poly: np.ndarray, look: _Look, rng: np.random.Generator) -> None:
    """Fill a polygon with a look's colour and pattern."""
    w, h = img.size
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int)
    tex = Image.new("RGB", (w, h), tuple(int(c) for c in look.colour))
    d = ImageDraw.Draw(tex)
    c2 = tuple(int(c) for c in look.colour2)
    step = max(4, (x1 - x0) // 6)
    if look.pattern == "hstripes":
        for y in range(y0, y1, step):
            d.rectangle([x0, y, x1, y + step // 2], fill=c2)
    elif look.pattern == "vstripes":
        for x in range(x0, x1, step):
            d.rectangle([x, y0, x + step // 2, y1], fill=c2)
    elif look.pattern == "dots":
        r = max(1, step // 4)
        for y in range(y0, y1, step):
            for x in range(x0, x1, step):
                d.ellipse([x - r, y - r, x + r, y + r], fill=c2)
    elif look.pattern == "checks":
        for y in range(y0, y1, step):
            for x in range(x0 + ((y - y0) // step % 2) * step, x1, 2 * step):
                d.rectangle([x, y, x + step - 1, y + step - 1], fill=c2)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in poly.tolist()], fill=255)
    img.paste(tex, (0, 0), mask)


def _draw_opening(img: Image.Image, poly: np.ndarray, pts: np.ndarray, cat: Category) -> None:
    """
    The front opening of outwear, which tells it from a top of the same cut: a dark band from the
    top of the opening (between landmark 4 and its flip partner) straight down to the hem.
    """
    top = pts[[3, int(cat.flip_indices[3])]].mean(0)
    width = max(2, round(0.05 * (poly[:, 0].max() - poly[:, 0].min())))
    line = [(float(top[0]), float(top[1])), (float(top[0]), float(poly[:, 1].max()))]
    ImageDraw.Draw(img).line(line, fill=(20, 20, 20), width=width)


def _background(rng: np.random.Generator, w: int, h: int, shop: bool) -> Image.Image:
    if shop:
        return Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(225, 256, 3)))
    base = rng.integers(60, 200, 3)
    arr = np.clip(base + rng.normal(0, 18, (h // 8 + 1, w // 8 + 1, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr).resize((w, h), Image.NEAREST)


def _attr_value(rng, weights=(0.3, 0.45, 0.25)) -> int:
    return int(rng.choice(3, p=weights)) + 1


def _outfit(rng: np.random.Generator) -> list[int]:
    """Category ids worn together, top to bottom."""
    r = rng.random()
    if r < 0.3:
        return [int(rng.choice(_DRESS_CATS))]
    if r < 0.75:
        return [int(rng.choice(_UPPER_CATS)), int(rng.choice(_LOWER_CATS))]
    return [int(rng.choice(_UPPER_CATS + _LOWER_CATS))]


def _render_image(
    rng: np.random.Generator,
    cats: list[int],
    looks: list[_Look],
    shop: bool,
    size_range: tuple[int, int],
) -> tuple[Image.Image, list[dict]]:
    w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
    img = _background(rng, w, h, shop)
    if not shop:  # clutter that is not clothing
        d = ImageDraw.Draw(img)
        for _ in range(rng.integers(0, 4)):
            cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(3, max(4, w // 8))
            d.ellipse(
                [cx - r, cy - r, cx + r, cy + r],
                fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
            )
    n = len(cats)
    # garment scale: shop photos fill the frame, user photos vary more
    unit = (
        min(w, h) * (rng.uniform(0.55, 0.8) if shop else rng.uniform(0.3, 0.75)) / max(1, 0.8 * n)
    )
    cx = w * rng.uniform(0.4, 0.6)
    y = h * rng.uniform(0.03, 0.15)
    items = []
    for cat_id, look in zip(cats, looks):
        cat = CATEGORIES[cat_id - 1]
        outline, lms = template(cat)
        sw, sh = _SHAPES[cat_id][1]
        scale = np.array([sw * unit, sh * unit]) * rng.uniform(0.9, 1.1, 2)
        origin = np.array([cx - scale[0] / 2, y])
        poly = np.clip(outline * scale + origin, 0, [w - 1e-3, h - 1e-3])
        pts = lms * scale + origin + rng.normal(0, 0.01 * unit, lms.shape)
        _paint(img, poly, look, rng)
        if cat_id in OUTWEAR_CATEGORIES:
            _draw_opening(img, poly, lms * scale + origin, cat)
        items.append({"cat": cat, "poly": poly, "pts": pts})
        y += scale[1] * 0.8
    return img, items


def _item_json(rng: np.random.Generator, it: dict, w: int, h: int, style: int, shop: bool) -> dict:
    cat, poly, pts = it["cat"], it["poly"], it["pts"]
    x1, y1 = np.floor(poly.min(0))
    x2, y2 = np.ceil(poly.max(0))
    x2, y2 = min(x2, w), min(y2, h)
    occlusion = 1 if shop else _attr_value(rng, (0.45, 0.4, 0.15))
    p_occ = (0.05, 0.2, 0.4)[occlusion - 1]
    landmarks = []
    for px, py in pts:
        inside = 0 <= px < w and 0 <= py < h
        r = rng.random()
        if not inside or r < 0.08:
            landmarks += [0, 0, 0]  # unlabelled
        else:
            landmarks += [
                int(round(min(px, w - 1))),
                int(round(min(py, h - 1))),
                1 if r < 0.08 + p_occ else 2,
            ]
    area = (x2 - x1) * (y2 - y1) / (w * h)
    scale = 1 if area < 0.1 else (2 if area < 0.3 else 3)
    return {
        "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]],
        "scale": scale,
        "viewpoint": 1 if shop and rng.random() < 0.6 else int(rng.choice([2, 3], p=[0.7, 0.3])),
        "zoom_in": _attr_value(rng, (0.6, 0.3, 0.1)),
        "landmarks": landmarks,
        "style": style,
        "bounding_box": [int(x1), int(y1), int(x2), int(y2)],
        "category_id": cat.id,
        "occlusion": occlusion,
        "category_name": cat.name,
    }


def generate_split(
    out_dir: str,
    num_images: int,
    seed: int = 0,
    *,
    first_id: int = 1,
    size_range: tuple[int, int] = (96, 160),
    shop_fraction: float = 0.45,
    images_per_pair: int = 4,
) -> None:
    """
    Write ``num_images`` images and annotation files under ``out_dir/{image,annos}``. Images come
    in groups sharing a ``pair_id`` (one outfit worn/sold in user and shop photos); within a group,
    items with ``style > 0`` keep their look, so the same style looks the same everywhere.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out_dir, "image"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "annos"), exist_ok=True)
    written, pair_id = 0, 0
    while written < num_images:
        pair_id += 1
        cats = _outfit(rng)
        looks = [_look(rng) for _ in cats]
        # distinct styles within an outfit: (pair_id, style) names one garment
        styles = [int(s) for s in rng.permutation(len(cats)) + 1]
        n = min(images_per_pair, num_images - written)
        sources = ["shop" if rng.random() < shop_fraction else "user" for _ in range(n)]
        if n > 1:  # every group has both sides, so every paired style has a match
            sources[:2] = ["user", "shop"]
        for source in sources:
            shop = source == "shop"
            # a photo shows the outfit, sometimes only part of it; some items are unpaired
            keep = [i for i in range(len(cats)) if rng.random() < 0.85] or [0]
            sub_styles = [styles[i] if rng.random() < 0.9 else 0 for i in keep]
            sub_looks = [looks[i] if s > 0 else _look(rng) for i, s in zip(keep, sub_styles)]
            img, items = _render_image(rng, [cats[i] for i in keep], sub_looks, shop, size_range)
            image_id = first_id + written
            stem = f"{image_id:06d}"
            img.save(os.path.join(out_dir, "image", stem + ".jpg"), quality=90)
            anno = {"source": source, "pair_id": pair_id}
            for k, (it, style) in enumerate(zip(items, sub_styles)):
                anno[f"item{k + 1}"] = _item_json(rng, it, img.size[0], img.size[1], style, shop)
            with open(os.path.join(out_dir, "annos", stem + ".json"), "wb") as f:
                f.write(orjson.dumps(anno))
            written += 1


MINI_SPLITS = {"train": (400, 0), "validation": (120, 1)}  # images, seed offset
# Bumped whenever the generator's output changes, so stale embedded sets are regenerated.
GENERATOR_VERSION = 4


def mini_root() -> str:
    """The embedded default set: $DF2_MINI_ROOT, else $DETECTRON2_DATASETS/deepfashion2_mini."""
    if "DF2_MINI_ROOT" in os.environ:
        return os.environ["DF2_MINI_ROOT"]
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "deepfashion2_mini")


def ensure_mini_split(split: str, root: str | None = None, seed: int = 2019) -> str:
    """
    Generate the embedded default split once (deterministic); return its folder. Safe when
    several processes ask at once (a multi-process launch): one generates under a file lock while
    the others wait, and the folder appears complete or not at all.
    """
    root = root or mini_root()
    out = os.path.join(root, split)
    stamp = f"generator {GENERATOR_VERSION} seed {seed}"

    def done() -> bool:
        try:
            with open(os.path.join(out, ".complete")) as f:
                return f.read() == stamp
        except OSError:
            return False

    if done():
        return out
    os.makedirs(root, exist_ok=True)
    with locked(os.path.join(root, f".{split}.lock")):
        if not done():  # nobody generated it while this process waited
            num, offset = MINI_SPLITS[split]
            remove_dead_temporaries(root)  # of generators killed midway
            tmp = temporary_folder(root)
            logger.warning(
                f"Generating the embedded synthetic set's {split} split ({num} images, seed "
                f"{seed}) in {out}: first use only, about {num // 40 + 1} s."
            )
            generate_split(tmp, num, seed + offset, first_id=1 + 100000 * offset)
            with open(os.path.join(tmp, ".complete"), "w") as f:
                f.write(stamp)
            shutil.rmtree(out, ignore_errors=True)  # a set from an older generator
            os.rename(tmp, out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="Write a synthetic DeepFashion2 split.")
    p.add_argument("--out", required=True, help="split folder; image/ and annos/ are created")
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    generate_split(args.out, args.num_images, args.seed)


if __name__ == "__main__":
    main()
