"""
The DeepFashion2 landmark scheme: the one definition every other module reads.

294 landmarks in all; each of the 13 categories owns a contiguous slice of them, in category order.
Numbers come from the dataset's public README and official evaluation code (OKS sigmas) and the
left/right pairs of a public landmark codebase, corrected where they disagree with the mirrored
sigmas (short sleeve outwear: pairs (2, 6) and (4, 26)). Flip pairs are 1-based within a category,
as the dataset's documentation numbers landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

NUM_CATEGORIES = 13
NUM_LANDMARKS = 294

# (category id, name as in the annotation files, name of the official COCO converter, #landmarks)
_CATEGORIES = [
    (1, "short sleeve top", "short_sleeved_shirt", 25),
    (2, "long sleeve top", "long_sleeved_shirt", 33),
    (3, "short sleeve outwear", "short_sleeved_outwear", 31),
    (4, "long sleeve outwear", "long_sleeved_outwear", 39),
    (5, "vest", "vest", 15),
    (6, "sling", "sling", 15),
    (7, "shorts", "shorts", 10),
    (8, "trousers", "trousers", 14),
    (9, "skirt", "skirt", 8),
    (10, "short sleeve dress", "short_sleeved_dress", 29),
    (11, "long sleeve dress", "long_sleeved_dress", 37),
    (12, "vest dress", "vest_dress", 19),
    (13, "sling dress", "sling_dress", 19),
]

# fmt: off
_FLIP_PAIRS_1BASED = {
    1: [
        (2, 6), (3, 5), (7, 25), (8, 24), (9, 23), (10, 22), (11, 21), (12, 20), (13, 19),
        (14, 18), (15, 17),
    ],
    2: [
        (2, 6), (3, 5), (7, 33), (8, 32), (9, 31), (10, 30), (11, 29), (12, 28), (13, 27),
        (14, 26), (15, 25), (16, 24), (17, 23), (18, 22), (19, 21),
    ],
    3: [
        (2, 6), (3, 5), (4, 26), (7, 25), (8, 24), (9, 23), (10, 22), (11, 21), (12, 20),
        (13, 19), (14, 18), (15, 17), (16, 29), (27, 30), (28, 31),
    ],
    4: [
        (2, 6), (3, 5), (4, 34), (7, 33), (8, 32), (9, 31), (10, 30), (11, 29), (12, 28),
        (13, 27), (14, 26), (15, 25), (16, 24), (17, 23), (18, 22), (19, 21), (20, 37),
        (35, 38), (36, 39),
    ],
    5: [
        (2, 6), (3, 5), (7, 15), (8, 14), (9, 13), (10, 12),
    ],
    6: [
        (2, 6), (3, 5), (7, 15), (8, 14), (9, 13), (10, 12),
    ],
    7: [
        (1, 3), (4, 10), (5, 9), (6, 8),
    ],
    8: [
        (1, 3), (4, 14), (5, 13), (6, 12), (7, 11), (8, 10),
    ],
    9: [
        (1, 3), (4, 8), (5, 7),
    ],
    10: [
        (2, 6), (3, 5), (7, 29), (8, 28), (9, 27), (10, 26), (11, 25), (12, 24), (13, 23),
        (14, 22), (15, 21), (16, 20), (17, 19),
    ],
    11: [
        (2, 6), (3, 5), (7, 37), (8, 36), (9, 35), (10, 34), (11, 33), (12, 32), (13, 31),
        (14, 30), (15, 29), (16, 28), (17, 27), (18, 26), (19, 25), (20, 24), (21, 23),
    ],
    12: [
        (2, 6), (3, 5), (7, 19), (8, 18), (9, 17), (10, 16), (11, 15), (12, 14),
    ],
    13: [
        (2, 6), (3, 5), (7, 19), (8, 18), (9, 17), (10, 16), (11, 15), (12, 14),
    ],
}
# fmt: on

# Lines of the official landmark figure ('Definitions of landmarks and skeletons'), as pairs of
# 1-based landmark indices within the category. Lower-body garments are numbered waist
# left-to-right (1, 2, 3), then down the left side, across the hem and up the right side: their
# outline is 1-2-3 plus 1-4 ... k-3, not a loop. Slings and sling dresses join the neck points
# to the strap tips and to the sides. Short sleeve outwear is given in the annotations' order
# (2 = shoulder-neck point, 4 = top of the front opening, as for long sleeve outwear); its figure
# prints 2 and 4 the other way round, which the official OKS sigmas contradict.
# fmt: off
_SKELETONS_1BASED = {
    1: [  # short sleeve top
        (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1), (2, 7), (7, 8), (8, 9), (9, 10),
        (10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16), (16, 17), (17, 18),
        (18, 19), (19, 20), (20, 21), (21, 22), (22, 23), (23, 24), (24, 25), (25, 6),
    ],
    2: [  # long sleeve top
        (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1), (2, 7), (7, 8), (8, 9), (9, 10),
        (10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16), (16, 17), (17, 18),
        (18, 19), (19, 20), (20, 21), (21, 22), (22, 23), (23, 24), (24, 25), (25, 26),
        (26, 27), (27, 28), (28, 29), (29, 30), (30, 31), (31, 32), (32, 33), (33, 6),
    ],
    3: [  # short sleeve outwear
        (1, 2), (1, 6), (2, 3), (3, 4), (6, 5), (5, 26), (2, 7), (7, 8), (8, 9), (9, 10),
        (10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16), (16, 31), (31, 30), (30, 4),
        (6, 25), (17, 18), (18, 19), (19, 20), (20, 21), (21, 22), (22, 23), (23, 24), (24, 25),
        (17, 29), (29, 28), (28, 27), (27, 26),
    ],
    4: [  # long sleeve outwear
        (1, 2), (1, 6), (2, 3), (3, 4), (6, 5), (5, 34), (2, 7), (7, 8), (8, 9), (9, 10),
        (10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16), (16, 17), (17, 18),
        (18, 19), (19, 20), (20, 39), (39, 38), (38, 4), (6, 33), (21, 22), (22, 23), (23, 24),
        (24, 25), (25, 26), (26, 27), (27, 28), (28, 29), (29, 30), (30, 31), (31, 32),
        (32, 33), (21, 37), (37, 36), (36, 35), (35, 34),
    ],
    5: [  # vest
        (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1), (2, 7), (7, 8), (8, 9), (9, 10),
        (10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 6),
    ],
    6: [  # sling
        (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1), (2, 7), (6, 15), (2, 8), (8, 9),
        (9, 10), (10, 11), (11, 12), (12, 13), (13, 14), (14, 6),
    ],
    7: [  # shorts
        (1, 2), (2, 3), (1, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10), (10, 3),
    ],
    8: [  # trousers
        (1, 2), (2, 3), (1, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10), (10, 11),
        (11, 12), (12, 13), (13, 14), (14, 3),
    ],
    9: [  # skirt
        (1, 2), (2, 3), (1, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 3),
    ],
    10: [  # short sleeve dress
        (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1), (2, 7), (7, 8), (8, 9), (9, 10),
        (10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16), (16, 17), (17, 18),
        (18, 19), (19, 20), (20, 21), (21, 22), (22, 23), (23, 24), (24, 25), (25, 26),
        (26, 27), (27, 28), (28, 29), (29, 6),
    ],
    11: [  # long sleeve dress
        (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1), (2, 7), (7, 8), (8, 9), (9, 10),
        (10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16), (16, 17), (17, 18),
        (18, 19), (19, 20), (20, 21), (21, 22), (22, 23), (23, 24), (24, 25), (25, 26),
        (26, 27), (27, 28), (28, 29), (29, 30), (30, 31), (31, 32), (32, 33), (33, 34),
        (34, 35), (35, 36), (36, 37), (37, 6),
    ],
    12: [  # vest dress
        (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1), (2, 7), (7, 8), (8, 9), (9, 10),
        (10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16), (16, 17), (17, 18),
        (18, 19), (19, 6),
    ],
    13: [  # sling dress
        (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1), (2, 7), (6, 19), (2, 8), (8, 9),
        (9, 10), (10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16), (16, 17), (17, 18),
        (18, 6),
    ],
}
# fmt: on

# Per-landmark OKS sigmas of the official evaluation, in the 294 layout.
# fmt: off
OKS_SIGMAS = np.array(
    [
        # 1 short sleeve top
        0.012, 0.0158, 0.0169, 0.0165, 0.0169, 0.0158, 0.0298, 0.0329, 0.0321, 0.0323, 0.034,
        0.0388, 0.0452, 0.0574, 0.0492, 0.0352, 0.0492, 0.0574, 0.0452, 0.0388, 0.034, 0.0323,
        0.0321, 0.0329, 0.0298,
        # 2 long sleeve top
        0.0194, 0.017, 0.0185, 0.0193, 0.0185, 0.017, 0.0286, 0.0471, 0.0547, 0.0526, 0.043,
        0.0392, 0.0513, 0.0566, 0.0509, 0.0564, 0.0542, 0.0604, 0.0599, 0.052, 0.0599, 0.0604,
        0.0542, 0.0564, 0.0509, 0.0566, 0.0513, 0.0392, 0.043, 0.0526, 0.0547, 0.0471, 0.0286,
        # 3 short sleeve outwear
        0.0074, 0.0085, 0.0165, 0.0248, 0.0165, 0.0085, 0.0156, 0.0231, 0.0296, 0.0137, 0.0195,
        0.025, 0.0347, 0.038, 0.0257, 0.037, 0.0257, 0.038, 0.0347, 0.025, 0.0195, 0.0137, 0.0296,
        0.0231, 0.0156, 0.0248, 0.0469, 0.0632, 0.037, 0.0469, 0.0632,
        # 4 long sleeve outwear
        0.0137, 0.0153, 0.0243, 0.0377, 0.0243, 0.0153, 0.0203, 0.0366, 0.0467, 0.0433, 0.0393,
        0.0329, 0.0418, 0.0477, 0.0399, 0.0331, 0.042, 0.0492, 0.0436, 0.0478, 0.0436, 0.0492,
        0.042, 0.0331, 0.0399, 0.0477, 0.0418, 0.0329, 0.0393, 0.0433, 0.0467, 0.0366, 0.0203,
        0.0377, 0.0645, 0.0573, 0.0478, 0.0645, 0.0573,
        # 5 vest
        0.0352, 0.0158, 0.021, 0.0214, 0.021, 0.0158, 0.0196, 0.05, 0.0489, 0.0404, 0.0401,
        0.0404, 0.0489, 0.05, 0.0196,
        # 6 sling
        0.0276, 0.0548, 0.0283, 0.0204, 0.0283, 0.0548, 0.0369, 0.0726, 0.0677, 0.064, 0.0251,
        0.064, 0.0677, 0.0726, 0.0369,
        # 7 shorts
        0.0308, 0.0216, 0.0308, 0.0506, 0.0494, 0.0463, 0.0477, 0.0463, 0.0494, 0.0506,
        # 8 trousers
        0.0275, 0.0202, 0.0275, 0.0651, 0.0451, 0.035, 0.028, 0.0392, 0.0362, 0.0392, 0.028,
        0.035, 0.0451, 0.0651,
        # 9 skirt
        0.0253, 0.0195, 0.0253, 0.0513, 0.0543, 0.0415, 0.0543, 0.0513,
        # 10 short sleeve dress
        0.0153, 0.023, 0.0167, 0.0145, 0.0167, 0.023, 0.0332, 0.0391, 0.0391, 0.0396, 0.044,
        0.0452, 0.0498, 0.0514, 0.0585, 0.0655, 0.0635, 0.0602, 0.0635, 0.0655, 0.0585, 0.0514,
        0.0498, 0.0452, 0.044, 0.0396, 0.0391, 0.0391, 0.0332,
        # 11 long sleeve dress
        0.0121, 0.0134, 0.0158, 0.0162, 0.0158, 0.0134, 0.0246, 0.0406, 0.047, 0.0404, 0.0463,
        0.0466, 0.0435, 0.0499, 0.0455, 0.044, 0.0411, 0.049, 0.0576, 0.0685, 0.0618, 0.0483,
        0.0618, 0.0685, 0.0576, 0.049, 0.0411, 0.044, 0.0486, 0.0499, 0.0435, 0.0466, 0.0463,
        0.0404, 0.047, 0.0406, 0.0246,
        # 12 vest dress
        0.0116, 0.0167, 0.016, 0.018, 0.016, 0.0167, 0.0196, 0.0385, 0.0421, 0.0497, 0.0562,
        0.0528, 0.0428, 0.0528, 0.0562, 0.0497, 0.0421, 0.0385, 0.0196,
        # 13 sling dress
        0.0244, 0.0297, 0.0244, 0.0208, 0.0244, 0.0297, 0.0173, 0.0616, 0.0659, 0.0712, 0.0707,
        0.0685, 0.0339, 0.0685, 0.0707, 0.0712, 0.0659, 0.0616, 0.0173,
    ],
    dtype=np.float64,
)
# fmt: on

# Attribute values as the dataset README's table headers name them.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "scale": ("small", "moderate", "large"),
    "occlusion": ("slight", "medium", "heavy"),
    "zoom_in": ("no", "medium", "large"),
    "viewpoint": ("no_wear", "frontal", "side_or_back"),
}
SOURCES = ("user", "shop")

# Categories whose first six landmarks are a neckline (tops, outwear, dresses).
NECKLINE_CATEGORIES = frozenset({1, 2, 3, 4, 5, 6, 10, 11, 12, 13})
# Categories open at the front: the neckline runs down to the top of the opening (4).
OUTWEAR_CATEGORIES = frozenset({3, 4})


@dataclass(frozen=True)
class Category:
    id: int  # 1-based, as in the files
    name: str
    coco_name: str
    num_landmarks: int
    start: int  # first index into the 294 layout

    @property
    def contiguous_id(self) -> int:
        return self.id - 1

    @property
    def landmark_slice(self) -> slice:
        return slice(self.start, self.start + self.num_landmarks)

    @property
    def flip_pairs(self) -> list[tuple[int, int]]:
        """0-based pairs within the category's own landmark list."""
        return [(a - 1, b - 1) for a, b in _FLIP_PAIRS_1BASED[self.id]]

    @cached_property
    def flip_indices(self) -> np.ndarray:
        """(K,) permutation: landmark i of a flipped item is landmark perm[i] of the original."""
        perm = np.arange(self.num_landmarks)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @property
    def skeleton(self) -> list[tuple[int, int]]:
        """0-based lines within the category, as the official landmark figure draws them."""
        return [(a - 1, b - 1) for a, b in _SKELETONS_1BASED[self.id]]


def _build() -> list[Category]:
    out, start = [], 0
    for cid, name, coco_name, k in _CATEGORIES:
        out.append(Category(cid, name, coco_name, k, start))
        start += k
    assert start == NUM_LANDMARKS
    return out


CATEGORIES: list[Category] = _build()
CATEGORY_BY_ID: dict[int, Category] = {c.id: c for c in CATEGORIES}
CATEGORY_NAMES: list[str] = [c.name for c in CATEGORIES]

# (13,) first landmark index and count of each contiguous category id, for vectorised code.
LANDMARK_START = np.array([c.start for c in CATEGORIES], dtype=np.int64)
LANDMARK_COUNT = np.array([c.num_landmarks for c in CATEGORIES], dtype=np.int64)
# (294,) contiguous category id owning each landmark.
LANDMARK_CATEGORY = np.repeat(np.arange(NUM_CATEGORIES), LANDMARK_COUNT)


def detectron2_metadata() -> dict:
    """The scheme as Detectron2's metadata holds it (every DeepFashion2 split's, the drawings')."""
    return {
        "thing_classes": list(CATEGORY_NAMES),
        "thing_dataset_id_to_contiguous_id": {c.id: c.contiguous_id for c in CATEGORIES},
        "keypoint_names": keypoint_names(),
        "keypoint_flip_map": keypoint_flip_map(),
        "keypoint_connection_rules": keypoint_connection_rules(),
        "keypoint_oks_sigmas": OKS_SIGMAS.tolist(),
        "landmark_slices": [(c.start, c.num_landmarks) for c in CATEGORIES],
    }


def keypoint_names() -> list[str]:
    """294 names, "<coco_name>_<1-based index>", in the 294 layout."""
    return [f"{c.coco_name}_{i + 1}" for c in CATEGORIES for i in range(c.num_landmarks)]


def flip_indices_294() -> np.ndarray:
    """(294,) permutation of the full layout; only ever maps within a category."""
    return np.concatenate([c.start + c.flip_indices for c in CATEGORIES])


def keypoint_flip_map() -> list[tuple[str, str]]:
    """Detectron2 metadata: pairs of keypoint names swapped by a horizontal flip."""
    names = keypoint_names()
    return [(names[c.start + a], names[c.start + b]) for c in CATEGORIES for a, b in c.flip_pairs]


def keypoint_connection_rules(color: tuple[int, int, int] = (255, 64, 64)) -> list:
    """Detectron2 metadata for drawing: (name_a, name_b, rgb) per skeleton edge."""
    names = keypoint_names()
    return [
        (names[c.start + a], names[c.start + b], color) for c in CATEGORIES for a, b in c.skeleton
    ]


# Coordinates. The annotation files (and the official result files) hold landmarks as integer
# pixel indices; Detectron2 works in continuous coordinates, where pixel i spans [i, i + 1): its
# COCO loader adds 0.5 to keypoints so that a horizontal flip is ``W - x``, and results are
# exported with 0.5 taken off again. Only landmarks that carry a position are shifted: unlabelled
# ones (v = 0, and a prediction's zeros outside its category) stay at exactly (0, 0).
PIXEL_CENTRE = 0.5


def to_continuous(landmarks: np.ndarray) -> np.ndarray:
    """(K, 3) file convention -> Detectron2's: x, y of labelled (v > 0) landmarks + 0.5 (a copy)."""
    out = np.array(landmarks, dtype=np.float64)
    out[out[:, 2] > 0, :2] += PIXEL_CENTRE
    return out


def to_pixel_indices(landmarks: np.ndarray, placed: np.ndarray | None = None) -> np.ndarray:
    """
    (..., 3) Detectron2's convention -> the files': x, y - 0.5 where a landmark is ``placed``
    (default: v > 0; predictions pass their non-zero entries). A copy.
    """
    out = np.array(landmarks, dtype=np.float64)
    placed = out[..., 2] > 0 if placed is None else placed
    out[..., :2] -= PIXEL_CENTRE * placed[..., None]
    return out


def expand_landmarks(category_id: int, compact: np.ndarray) -> np.ndarray:
    """(K_c, 3) landmarks of a 0-based category -> (294, 3), zeros outside its slice."""
    full = np.zeros((NUM_LANDMARKS, 3), dtype=compact.dtype)
    c = CATEGORIES[category_id]
    if compact.shape != (c.num_landmarks, 3):
        raise ValueError(f"{c.name} has {c.num_landmarks} landmarks, got shape {compact.shape}")
    full[c.landmark_slice] = compact
    return full


def compact_landmarks(category_id: int, full: np.ndarray) -> np.ndarray:
    """(294, 3) -> (K_c, 3) of a 0-based category (a view)."""
    return full[CATEGORIES[category_id].landmark_slice]
