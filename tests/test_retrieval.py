"""Consumer-to-shop retrieval: protocol on hand-built cases, submission format, gallery index,
pair sampler, matching loss."""

import json

import numpy as np
import pytest
import torch

from deepfashion2.data import load_deepfashion2
from deepfashion2.data.samplers import PairTrainingSampler
from deepfashion2.evaluation import GalleryIndex, RetrievalGroundTruth, Submission
from deepfashion2.evaluation.retrieval import ItemSet, rank, score_submission
from deepfashion2.modeling import cross_image_contrastive_loss


def make_gt():
    """Two consumer queries (images 1, 2) and shop items in images 10, 11, 12."""
    queries = [
        {"query_image_id": 1, "bbox": [0, 0, 100, 100], "cls": 1, "style": 1, "pair_id": 5},
        {"query_image_id": 2, "bbox": [0, 0, 100, 100], "cls": 8, "style": 2, "pair_id": 6},
    ]
    gallery = [
        {"gallery_image_id": 10, "bbox": [0, 0, 100, 100], "style": 1, "pair_id": 5},
        {"gallery_image_id": 11, "bbox": [0, 0, 100, 100], "style": 1, "pair_id": 5},
        {"gallery_image_id": 12, "bbox": [0, 0, 100, 100], "style": 2, "pair_id": 6},
        {"gallery_image_id": 12, "bbox": [200, 0, 300, 100], "style": 1, "pair_id": 6},
    ]
    return RetrievalGroundTruth.from_official(queries, gallery)


def entry(img, box, cls, score, gallery):
    return {
        "query_image_id": img,
        "query_bbox": box,
        "query_cls": cls,
        "query_score": score,
        "gallery_image_id": [g[0] for g in gallery],
        "gallery_bbox": [g[1] for g in gallery],
    }


FULL = [0, 0, 100, 100]
WRONG = [500, 500, 600, 600]  # in no image's ground truth


def score(entries):
    return score_submission(Submission.from_json(entries, "sub.json"), make_gt())


def test_correct_at_rank_three_and_a_miss():
    res = score([entry(1, FULL, 1, 0.9, [(99, FULL), (12, FULL), (10, FULL)])])
    # query 1: first correct at rank 3 (image 12 holds pair 6, not 5); query 2: no detection
    assert res["top1"] == 0 and res["top5"] == pytest.approx(0.5)
    assert res["num_queries"] == 2 and res["num_represented"] == 1


def test_wrong_class_detection_does_not_represent():
    res = score([entry(1, FULL, 2, 0.9, [(10, FULL)])])
    assert res["num_represented"] == 0 and res["top20"] == 0


def test_two_detections_for_one_item_the_best_scoring_counts():
    good, bad = [(10, FULL)], [(99, FULL)]
    res = score([entry(1, FULL, 1, 0.5, good), entry(1, [0, 0, 90, 90], 1, 0.8, bad)])
    assert res["top20"] == 0  # the 0.8 detection represents the query, and it is wrong
    res = score([entry(1, FULL, 1, 0.9, good), entry(1, [0, 0, 90, 90], 1, 0.8, bad)])
    assert res["top1"] == pytest.approx(0.5)


def test_gallery_box_iou_below_half_does_not_count():
    # IoU of [0, 0, 100, 49] with [0, 0, 100, 100] is 0.49
    res = score([entry(1, FULL, 1, 0.9, [(10, [0, 0, 100, 49])])])
    assert res["top20"] == 0
    res = score([entry(1, FULL, 1, 0.9, [(10, [0, 0, 100, 50])])])
    assert res["top1"] == pytest.approx(0.5)


def test_same_pair_other_style_is_wrong_and_multiple_correct_items_count_once():
    # image 12 holds pair 6 style 1 at [200, 0, 300, 100]: wrong style for query 2 (style 2)
    res = score([entry(2, FULL, 8, 0.9, [(12, [200, 0, 300, 100]), (12, FULL), (12, FULL)])])
    assert res["top1"] == 0 and res["top5"] == pytest.approx(0.5)
    res = score([entry(1, FULL, 1, 0.9, [(10, FULL), (11, FULL)]), entry(2, FULL, 8, 1, [])])
    assert res["top1"] == pytest.approx(0.5) and res["top20"] == pytest.approx(0.5)


def test_query_box_overlapping_no_item_is_not_assigned():
    res = score([entry(1, WRONG, 1, 0.9, [(10, FULL)])])
    assert res["num_represented"] == 0


def test_submission_json_round_trip(tmp_path):
    entries = [entry(1, FULL, 1, 0.9, [(10, FULL), (11, [1.5, 2, 3, 4])])]
    sub = Submission.from_json(entries, "a.json")
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(sub.to_json()))
    back = json.loads(path.read_text())
    assert back == [{**entries[0], "gallery_bbox": [[0.0, 0.0, 100.0, 100.0], [1.5, 2, 3, 4]]}]
    with pytest.raises(ValueError, match="a.json, entry 0, field 'gallery_bbox'"):
        Submission.from_json([{**entries[0], "gallery_bbox": [FULL]}], "a.json")
    with pytest.raises(ValueError, match="entry 0, field 'query_cls'"):
        Submission.from_json([{k: v for k, v in entries[0].items() if k != "query_cls"}], "a.json")


def test_official_ground_truth_files_read(tmp_path):
    import os

    from conftest import SAMPLES

    folder = os.path.join(SAMPLES, "retrieval_gt_2019")
    if not os.path.isdir(folder):
        pytest.skip("../shared/df2_samples not available")
    with open(os.path.join(folder, "query_gt.json")) as f:
        q = json.load(f)
    with open(os.path.join(folder, "gallery_gt.json")) as f:
        g = json.load(f)
    rgt = RetrievalGroundTruth.from_official(q, g)
    assert rgt.num_queries == 15752 and len(rgt.g_image) == 24012
    assert rgt.q_box.shape == (15752, 4) and set(np.unique(rgt.q_cls)) <= set(range(1, 14))
    # a perfect submission (each query retrieves its own shop items) scores 1.0
    items = {}
    for e in g:
        items.setdefault((e["pair_id"], e["style"]), []).append(e)
    sub = []
    for e in q:
        hits = items.get((e["pair_id"], e["style"]), [])[:20]
        answers = [(x["gallery_image_id"], x["bbox"]) for x in hits]
        sub.append(entry(e["query_image_id"], e["bbox"], e["cls"], 1.0, answers))
    res = score_submission(Submission.from_json(sub, "perfect"), rgt)
    has_match = np.mean([(e["pair_id"], e["style"]) in items for e in q])
    assert res["top1"] == pytest.approx(has_match, abs=0.01)  # duplicates in one image aside


def test_exact_and_faiss_index_agree_on_small_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32))
    gallery = centres[rng.integers(0, 50, 2000)] + 0.1 * rng.normal(size=(2000, 32))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = gallery[:100] + 0.05 * rng.normal(size=(100, 32))
    exact = GalleryIndex(gallery, "exact")
    ivf = GalleryIndex(gallery, "faiss", nlist=16, nprobe=16)  # every cell probed: exact
    se, ie = exact.search(queries, 10)
    sf, i_f = ivf.search(queries, 10)
    assert exact.kind == "exact" and ivf.kind == "faiss"
    np.testing.assert_allclose(se, sf, rtol=1e-5, atol=1e-5)
    assert (ie == i_f).mean() > 0.98  # ties may order differently
    brute = np.argsort(-(queries @ gallery.T), axis=1)[:, :10]
    assert (ie == brute).mean() > 0.98
    assert GalleryIndex(gallery, "auto", exact_max=1000).kind == "faiss"
    s, i = exact.search(queries[:2], 3000)  # more than the gallery: padded
    assert i.shape == (2, 3000) and (i[:, 2000:] == -1).all()


def test_rank_restricts_to_the_query_category():
    emb = np.eye(4, dtype=np.float32)
    gallery = ItemSet(np.array([10, 11, 12, 13]), np.zeros((4, 4)), np.array([1, 2, 1, 2]),
                      np.ones(4), emb)  # fmt: skip
    queries = ItemSet(np.array([1]), np.zeros((1, 4)), np.array([2]), np.ones(1), emb[:1])
    sub = rank(queries, gallery, k=3)
    assert sub.gallery_image[0].tolist() == [11, 13, -1]  # only category 2, best first n/a
    sub = rank(queries, gallery, k=3, same_category=False)
    assert sub.gallery_image[0, 0] == 10


def test_pair_sampler_every_batch_holds_a_pair(synthetic_split):
    dicts = load_deepfashion2(synthetic_split + "/annos", synthetic_split + "/image")
    sampler = PairTrainingSampler(dicts, images_per_batch=3, seed=1)
    assert sampler.num_pairable_images > 0
    ids = [{(d["pair_id"], a["style"]) for a in d["annotations"] if a["style"] > 0} for d in dicts]
    it = iter(sampler)
    seen = set()
    for _ in range(50):
        batch = [next(it) for _ in range(3)]
        seen |= set(batch)
        pairs = [
            (i, j)
            for i in batch
            for j in batch
            if dicts[i]["source"] == "user" and dicts[j]["source"] == "shop" and ids[i] & ids[j]
        ]
        assert pairs, batch
    assert len(seen) > len(dicts) // 2  # not only the pairable images
    # two processes: same global stream, disjoint round-robin blocks
    a = PairTrainingSampler(dicts, 2, seed=4)
    a._rank, a._world = 0, 2
    b = PairTrainingSampler(dicts, 2, seed=4)
    b._rank, b._world = 1, 2
    ia, ib, whole = iter(a), iter(b), iter(PairTrainingSampler(dicts, 2, seed=4))
    stream = [next(whole) for _ in range(8)]
    assert [next(ia) for _ in range(4)] == stream[0:2] + stream[4:6]
    assert [next(ib) for _ in range(4)] == stream[2:4] + stream[6:8]
    with pytest.raises(ValueError, match="at least 2 images"):
        PairTrainingSampler(dicts, 1)


def test_contrastive_loss_prefers_matching_embeddings():
    ids = torch.tensor([1, 1, 2, 2])
    images = torch.tensor([0, 1, 0, 1])  # item 1 and 2 in a consumer photo (0) and a shop photo
    good = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.1], [0, 1], [0.1, 1]]))
    bad = good[[0, 2, 1, 3]]
    lg = cross_image_contrastive_loss(good, ids, images, 0.1)
    lb = cross_image_contrastive_loss(bad, ids, images, 0.1)
    assert lg < 0.01 < lb
    assert cross_image_contrastive_loss(good, torch.tensor([1, 2, 3, 4]), images, 0.1) is None


def test_tools_evaluate_scores_a_submission_against_a_split_or_official_files(
    synthetic_split, tmp_path
):
    import importlib.util
    import os

    from deepfashion2.evaluation import GroundTruth

    spec = importlib.util.spec_from_file_location(
        "evaluate_tool", os.path.join(os.path.dirname(__file__), "..", "tools", "evaluate.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    annos, images = synthetic_split + "/annos", synthetic_split + "/image"
    rgt = RetrievalGroundTruth.from_groundtruth(
        GroundTruth.from_dicts(load_deepfashion2(annos, images))
    )
    assert rgt.num_queries > 3
    # answer every other query with its own shop items, the rest with nothing
    sub = []
    for q in range(rgt.num_queries):
        same = np.flatnonzero((rgt.g_pair == rgt.q_pair[q]) & (rgt.g_style == rgt.q_style[q]))
        answers = [(int(rgt.g_image[j]), rgt.g_box[j].tolist()) for j in same] if q % 2 else []
        sub.append(
            entry(int(rgt.q_image[q]), rgt.q_box[q].tolist(), int(rgt.q_cls[q]), 1.0, answers)
        )
    answered = sum(
        1
        for q in range(rgt.num_queries)
        if q % 2 and ((rgt.g_pair == rgt.q_pair[q]) & (rgt.g_style == rgt.q_style[q])).any()
    )
    path = tmp_path / "retrieval.json"
    path.write_text(json.dumps(sub))
    res = tool.main(["--anno-dir", annos, "--image-dir", images, "--results", str(path)])
    assert res["retrieval"]["top1"] == pytest.approx(100 * answered / rgt.num_queries)
    # the same against official-format ground-truth files, without the annotation folder
    qf, gf = tmp_path / "q.json", tmp_path / "g.json"
    cols = zip(rgt.q_image, rgt.q_box, rgt.q_cls, rgt.q_style, rgt.q_pair)
    queries = [
        {"query_image_id": int(i), "bbox": b.tolist(), "cls": int(c), "style": int(s)}
        | {"pair_id": int(p)}
        for i, b, c, s, p in cols
    ]
    qf.write_text(json.dumps(queries))
    cols = zip(rgt.g_image, rgt.g_box, rgt.g_style, rgt.g_pair)
    gallery = [
        {"gallery_image_id": int(i), "bbox": b.tolist(), "style": int(s), "pair_id": int(p)}
        for i, b, s, p in cols
    ]
    gf.write_text(json.dumps(gallery))
    out = tmp_path / "m.json"
    res2 = tool.main(
        [
            "--results",
            str(path),
            "--query-gt",
            str(qf),
            "--gallery-gt",
            str(gf),
            "--output-json",
            str(out),
        ]
    )
    assert res2["retrieval"] == res["retrieval"]
    assert json.loads(out.read_text())["retrieval"]["top20"] == pytest.approx(
        res["retrieval"]["top20"]
    )
