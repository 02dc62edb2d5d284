"""The benchmark scoring core on hand-built cases with known answers, and against pycocotools."""

import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_util
from reference import coco_gt_for_task, reference_ap
from simulate import simulate_results

from deepfashion2 import landmarks as L
from deepfashion2.data import load_deepfashion2
from deepfashion2.data.coco_export import dicts_to_coco
from deepfashion2.evaluation import Detections, GroundTruth, ResultFormatError, evaluate, subsets
from deepfashion2.evaluation.scoring import _labelled_counts

SHORTS = L.CATEGORY_BY_ID[7]  # 10 landmarks


def item(cat=7, box=(10, 10, 60, 80), v=2, occlusion=1, scale=2, **attrs):
    """One annotation as our loader makes it (+0.5 on labelled landmarks, XYXY box)."""
    k = L.CATEGORY_BY_ID[cat].num_landmarks
    x1, y1, x2, y2 = box
    lm = np.zeros((k, 3))
    lm[:, 0] = np.linspace(x1 + 2, x2 - 2, k) + 0.5
    lm[:, 1] = np.linspace(y1 + 2, y2 - 2, k) + 0.5
    lm[:, 2] = v
    poly = [float(c) for c in (x1, y1, x2, y1, x2, y2, x1, y2)]
    return {
        "bbox": list(box),
        "category_id": cat - 1,
        "segmentation": [np.array(poly)],
        "landmarks": lm,
        "style": 0,
        "scale": scale,
        "occlusion": occlusion,
        "zoom_in": attrs.get("zoom_in", 1),
        "viewpoint": attrs.get("viewpoint", 2),
    }


def image(image_id, *items, h=100, w=100):
    return {"image_id": image_id, "height": h, "width": w, "annotations": list(items)}


def perfect(gt: GroundTruth, score=0.9) -> Detections:
    """The ground truth itself as official results."""
    entries = {"bbox": [], "segm": [], "keypoints": []}
    for j in range(gt.num_items):
        k = gt.image[j]
        base = {
            "image_id": int(gt.image_ids[k]),
            "category_id": int(gt.category[j]),
            "score": score,
        }
        rle = mask_util.merge(mask_util.frPyObjects(gt.polygons[j], gt.heights[k], gt.widths[k]))
        full = L.expand_landmarks(
            int(gt.category[j]) - 1, gt.landmarks[gt.lm_ptr[j] : gt.lm_ptr[j + 1]]
        )
        entries["bbox"].append({**base, "bbox": gt.boxes[j].tolist()})
        entries["segm"].append(
            {**base, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}
        )
        entries["keypoints"].append({**base, "keypoints": full.reshape(-1).tolist()})
    return _merge(entries, gt)


def _merge(entries, gt) -> Detections:
    b = Detections.from_results(entries["bbox"], "bbox", gt)
    b.masks = Detections.from_results(entries["segm"], "segm", gt).masks
    k = Detections.from_results(entries["keypoints"], "kp", gt)
    b.kp_ptr, b.keypoints, b.kp_outside = k.kp_ptr, k.keypoints, k.kp_outside
    return b


def run(gt, dets, tasks=("bbox", "segm", "keypoints", "keypoints_vis")):
    return evaluate(gt, {t: dets for t in tasks})


def test_perfect_predictions_score_one_in_every_non_empty_subset(synthetic_split):
    dicts = load_deepfashion2(synthetic_split + "/annos", synthetic_split + "/image")
    gt = GroundTruth.from_dicts(dicts)
    res = run(gt, perfect(gt))
    for task, r in res.items():
        assert r["AP"] == pytest.approx(1.0), task
        counted = np.ones(gt.num_items, bool)
        if task.startswith("keypoints"):
            counted = _labelled_counts(gt, task) > 0
        for attr, value in subsets():
            present = (gt.subset_mask(attr, value) & counted).any()
            for metric in ("AP", "AP50", "AP75"):
                v = r[f"{metric}/{attr}:{value}"]
                assert v == pytest.approx(1.0) if present else math.isnan(v), (task, attr, value)
    assert sum(math.isnan(v) for v in res["bbox"].values()) > 0  # the split has empty subsets


def _one_item_gt(**kw):
    return GroundTruth.from_dicts([image(1, item(**kw))])


def _kp_dets(gt, lms, cat=7, score=0.9, box=None):
    full = np.zeros((L.NUM_LANDMARKS, 3))
    full[L.CATEGORY_BY_ID[cat].landmark_slice] = lms
    e = {"image_id": 1, "category_id": cat, "score": score, "keypoints": full.reshape(-1).tolist()}
    e["bbox"] = list(box if box is not None else gt.boxes[0])
    return Detections.from_results([e], "mem", gt)


def expected_ap(oks: float) -> float:
    """One ground truth, one detection: AP = share of the 10 OKS thresholds the detection passes."""
    return float(np.mean(np.linspace(0.5, 0.95, 10) <= oks + 1e-12))


def test_shifted_landmark_lowers_keypoint_ap_as_oks_says():
    gt = _one_item_gt()
    lms = gt.landmarks.copy()
    k = len(lms)
    sigma = L.OKS_SIGMAS[SHORTS.start + 3]
    area = gt.area[0]
    # shift landmark 3 so that its own OKS term is 0.2: total OKS (k - 1 + 0.2) / k = 0.92
    d = math.sqrt(-math.log(0.2) * 2 * area * (2 * sigma) ** 2)
    lms[3, 0] += d
    oks = (k - 1 + 0.2) / k
    res = run(gt, _kp_dets(gt, lms), ("keypoints",))
    assert res["keypoints"]["AP"] == pytest.approx(expected_ap(oks))
    assert res["keypoints"]["AP"] == pytest.approx(0.9)


def test_occluded_landmark_error_counts_in_keypoints_only():
    gt_dicts = [image(1, item())]
    gt_dicts[0]["annotations"][0]["landmarks"][:6, 2] = 1  # six of ten occluded
    gt = GroundTruth.from_dicts(gt_dicts)
    lms = gt.landmarks.copy()
    lms[:6, :2] += 40  # every occluded landmark far off: OKS ~ 0.4 on all labelled ones
    res = run(gt, _kp_dets(gt, lms), ("keypoints", "keypoints_vis"))
    assert res["keypoints_vis"]["AP"] == pytest.approx(1.0)
    assert res["keypoints"]["AP"] == pytest.approx(0.0)
    lms2 = gt.landmarks.copy()
    lms2[:2, :2] += 40  # two occluded landmarks off: OKS = 0.8
    res = run(gt, _kp_dets(gt, lms2), ("keypoints", "keypoints_vis"))
    assert res["keypoints"]["AP"] == pytest.approx(expected_ap(0.8))
    assert res["keypoints_vis"]["AP"] == pytest.approx(1.0)


def test_wrong_category_never_matches():
    gt = _one_item_gt(cat=7)
    d = perfect(gt)
    d.category[:] = 8  # trousers with the shorts' box and mask
    d.kp_outside = {0: np.zeros((L.NUM_LANDMARKS, 3))}
    res = run(gt, d, ("bbox", "segm"))
    assert res["bbox"]["AP"] == 0.0 and res["segm"]["AP"] == 0.0
    assert math.isnan(res["bbox"]["AP-trousers"])  # no trousers in the ground truth


def test_empty_predictions_and_images_without_ground_truth():
    gt = GroundTruth.from_dicts([image(1, item()), image(2)])
    empty = Detections.from_results([], "empty", gt)
    res = run(gt, empty, ("bbox",))
    assert res["bbox"]["AP"] == 0.0
    # a perfect detection plus a higher-scoring one on the image without ground truth
    d = perfect(gt, score=0.5)
    fp = {"image_id": 2, "category_id": 7, "bbox": [0, 0, 30, 30], "score": 0.9}
    both = Detections.concat(
        [
            Detections.from_results([fp], "fp", gt),
            Detections.from_results(d.to_results("bbox"), "d", gt),
        ]
    )
    res = run(gt, both, ("bbox",))
    # precision 1/2 at recall 1, interpolated to every recall point
    assert res["bbox"]["AP"] == pytest.approx(0.5)


def test_subset_ignores_other_items_like_an_area_range():
    heavy = item(box=(10, 10, 40, 40), occlusion=3)
    slight = item(box=(50, 50, 95, 95), occlusion=1)
    gt = GroundTruth.from_dicts([image(1, heavy, slight)])
    d = perfect(gt)
    d.score[:] = [0.5, 0.9]  # the detection of the slight item ranks first
    miss = {"image_id": 1, "category_id": 7, "bbox": [0, 60, 20, 20], "score": 0.7}
    res = run(gt, d, ("bbox",))["bbox"]
    assert res["AP/occlusion:heavy"] == pytest.approx(1.0)  # matched-to-ignored: neither TP nor FP
    assert math.isnan(res["AP/occlusion:medium"])
    boxes = Detections.from_results(d.to_results("bbox"), "d", gt)
    with_fp = Detections.concat([boxes, Detections.from_results([miss], "fp", gt)])
    res = run(gt, with_fp, ("bbox",))["bbox"]
    # the unmatched detection (0.7) outranks the heavy item's (0.5): precision 1/2 at recall 1
    assert res["AP/occlusion:heavy"] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_pycocotools_on_random_cases(synthetic_split, seed):
    dicts = load_deepfashion2(synthetic_split + "/annos", synthetic_split + "/image")
    gt = GroundTruth.from_dicts(dicts)
    sim = simulate_results(gt, seed, duplicate=0.5, wrong_category=0.1, jitter=0.08)
    ours = evaluate(
        gt,
        {
            "bbox": Detections.from_results(sim["bbox"], "b", gt),
            "segm": Detections.from_results(sim["segm"], "s", gt),
            "keypoints": Detections.from_results(sim["keypoints"], "k", gt),
            "keypoints_vis": Detections.from_results(sim["keypoints"], "k", gt),
        },
    )
    coco = dicts_to_coco(sorted(dicts, key=lambda d: d["image_id"]))
    checked = 0
    for task in ("bbox", "segm", "keypoints", "keypoints_vis"):
        cg = coco_gt_for_task(coco, task)
        res = sim["keypoints" if task.startswith("keypoints") else task]
        for sub in [None] + subsets()[::4]:
            ignored = () if sub is None else np.flatnonzero(~gt.subset_mask(*sub)) + 1
            suffix = "" if sub is None else f"/{sub[0]}:{sub[1]}"
            ref = reference_ap(cg, res, task, ignored.tolist() if len(ignored) else ())
            for r, m in zip(ref, ("AP", "AP50", "AP75")):
                mine = ours[task][m + suffix]
                if r == -1:
                    assert math.isnan(mine)
                else:
                    assert abs(mine - r) < 1e-9, (task, sub, m, mine, r)
                    checked += 1
    assert checked >= 30
    assert 0.05 < ours["bbox"]["AP"] < 0.95  # a non-trivial case


def test_result_files_round_trip_through_tools_evaluate(synthetic_split, tmp_path):
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location(
        "evaluate_tool", os.path.join(os.path.dirname(__file__), "..", "tools", "evaluate.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    dicts = load_deepfashion2(synthetic_split + "/annos", synthetic_split + "/image")
    gt = GroundTruth.from_dicts(dicts)
    sim = simulate_results(gt, 3)
    dets = _merge(sim, gt)
    files = []
    for task in ("bbox", "segm", "keypoints"):
        files.append(str(tmp_path / f"{task}.json"))
        with open(files[-1], "w") as f:
            json.dump(dets.to_results(task), f)
    out = tmp_path / "metrics.json"
    res = tool.main(
        [
            "--anno-dir",
            synthetic_split + "/annos",
            "--image-dir",
            synthetic_split + "/image",
            "--results",
            *files,
            "--output-json",
            str(out),
            "--output-dir",
            str(tmp_path / "tables"),
        ]
    )
    direct = run(gt, dets)
    saved = json.loads(out.read_text())
    for task in direct:
        for k, v in direct[task].items():
            if math.isnan(v):
                assert saved[task][k] is None
            else:
                assert saved[task][k] == pytest.approx(100 * v, abs=1e-9)
                assert res[task][k] == pytest.approx(100 * v, abs=1e-9)
    md = (tmp_path / "tables" / "deepfashion2_tables.md").read_text()
    for title in ("Clothes detection", "Landmark estimation", "Clothes segmentation"):
        assert title in md
    assert md.count("| AP |") == 2 and "| AP (visible) |" in md


def test_bad_result_entries_name_file_entry_and_field():
    gt = _one_item_gt()
    good = {"image_id": 1, "category_id": 7, "score": 0.5, "bbox": [1, 2, 3, 4]}
    cases = [
        ({**good, "image_id": 99}, "image_id"),
        ({**good, "category_id": 14}, "category_id"),
        ({**good, "score": float("nan")}, "score"),
        ({**good, "bbox": [1, 2, 3]}, "bbox"),
        ({**good, "bbox": [1, 2, -3, 4]}, "bbox"),
    ]
    for bad, fld in cases:
        with pytest.raises(ResultFormatError) as e:
            Detections.from_results([good, bad], "boxes.json", gt)
        assert "boxes.json" in str(e.value) and "entry 1" in str(e.value) and fld in str(e.value)
        assert e.value.field == fld


def test_other_oks_sigmas_give_other_landmark_ap_as_coco_evaluator_takes_them():
    """``TEST.KEYPOINT_OKS_SIGMAS`` reaches the DeepFashion2 evaluator (it was ignored)."""
    import torch
    from detectron2.structures import Boxes, Instances

    from deepfashion2.config import ConfigError
    from deepfashion2.evaluation import DeepFashion2Evaluator

    dicts = [image(1, item())]
    gt = GroundTruth.from_dicts(dicts)
    kp = np.zeros((1, L.NUM_LANDMARKS, 3), np.float32)
    lms = gt.landmarks.copy() + 0.5  # Detectron2's coordinates
    lms[:, 0] += 3.0  # every landmark 3 px off: OKS well below 1 with the official sigmas
    kp[0, SHORTS.start : SHORTS.start + len(lms)] = lms
    kp[0, SHORTS.start : SHORTS.start + len(lms), 2] = 1.0
    inst = Instances((100, 100), pred_boxes=Boxes(torch.tensor([[10.0, 10, 60, 80]])),
                     scores=torch.tensor([0.9]), pred_classes=torch.tensor([SHORTS.id - 1]),
                     pred_keypoints=torch.from_numpy(kp))  # fmt: skip

    def keypoint_ap(sigmas=()):
        ev = DeepFashion2Evaluator("df2_test_sigmas", tasks=("keypoints",), distributed=False,
                                   load_dicts=lambda: dicts, kpt_oks_sigmas=sigmas)  # fmt: skip
        ev.process([{"image_id": 1}], [{"instances": inst}])
        return ev.evaluate()["keypoints"]["AP"]

    official = keypoint_ap()
    assert official == keypoint_ap(L.OKS_SIGMAS.tolist()) < 100
    assert keypoint_ap((L.OKS_SIGMAS * 10).tolist()) == pytest.approx(100)  # wide: 3 px forgiven
    with pytest.raises(ConfigError, match="TEST.KEYPOINT_OKS_SIGMAS: 17 values; DeepFashion2"):
        keypoint_ap([0.1] * 17)


def test_ground_truth_from_the_store_is_the_one_from_the_dicts(synthetic_split, samples):
    """GroundTruth.from_store (no dicts, no +0.5 put on and taken off) equals from_dicts, on the
    synthetic split and on the real samples (their items in the files' key order)."""
    import dataclasses
    import glob
    import os
    import shutil
    import tempfile

    from deepfashion2.data import load_split_store

    real = tempfile.mkdtemp()
    try:
        os.makedirs(f"{real}/annos"), os.makedirs(f"{real}/image")
        for img in glob.glob(os.path.join(samples, "image", "[0-9]*.jpg")):
            stem = os.path.basename(img)[:-4]
            anno = os.path.join(samples, "annos", stem + ".json")
            if os.path.exists(anno):  # (two images belong to the COCO sample only)
                shutil.copy(anno, f"{real}/annos")
                os.symlink(img, f"{real}/image/{stem}.jpg")
        for folder in (synthetic_split, real):
            store = load_split_store(f"{folder}/annos", f"{folder}/image", use_cache=False)
            a, b = GroundTruth.from_store(store), GroundTruth.from_dicts(store.to_dicts(""))
            for f in dataclasses.fields(GroundTruth):
                x, y = getattr(a, f.name), getattr(b, f.name)
                if isinstance(x, np.ndarray):
                    assert x.dtype == y.dtype and np.array_equal(x, y), f.name
                else:
                    assert x == y, f.name
            assert a.num_items > 30
    finally:
        shutil.rmtree(real)
