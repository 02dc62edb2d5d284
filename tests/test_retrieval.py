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


# Rules of the official script on a hand-built split. Image 1 (consumer) lists an unpaired top
# (style 0) above paired trousers; image 2 lists a paired skirt, then a paired top whose garment
# no shop image holds. Queries: B, C, D (3); the style-0 item A is only a target for assignment.
RULES_Q = [
    {"query_image_id": 1, "bbox": [0, 0, 100, 100], "cls": 1, "style": 0, "pair_id": 5},  # A
    {"query_image_id": 1, "bbox": [0, 100, 100, 300], "cls": 8, "style": 1, "pair_id": 5},  # B
    {"query_image_id": 2, "bbox": [0, 0, 100, 100], "cls": 9, "style": 2, "pair_id": 6},  # C
    {"query_image_id": 2, "bbox": [200, 0, 300, 100], "cls": 1, "style": 1, "pair_id": 6},  # D
]
RULES_G = [
    {"gallery_image_id": 10, "bbox": [0, 100, 100, 300], "style": 1, "pair_id": 5},
    {"gallery_image_id": 11, "bbox": FULL, "style": 2, "pair_id": 6},
]
B_HIT = [(10, [0, 100, 100, 300])]
C_HIT = [(11, FULL)]


def rules(entries):
    rgt = RetrievalGroundTruth.from_official(RULES_Q, RULES_G)
    return score_submission(Submission.from_json(entries, "sub.json"), rgt)


def test_style0_items_are_not_queries_and_unreachable_queries_stay_in_the_denominator():
    res = rules([entry(1, [0, 100, 100, 300], 8, 0.9, B_HIT), entry(2, FULL, 9, 0.9, C_HIT)])
    # B and C found at rank 1; D has no shop item: 2 of 3 (not 2 of 4, not 2 of 2)
    assert res["num_queries"] == 3 and res["num_unreachable"] == 1
    assert res["top1"] == pytest.approx(2 / 3) and res["top20"] == pytest.approx(2 / 3)


def test_a_box_overlapping_nothing_goes_to_the_first_listed_item():
    # image 2's first listed item is C (skirt): the box represents C when classified as a skirt
    res = rules([entry(2, WRONG, 9, 0.9, C_HIT)])
    assert res["num_represented"] == 1 and res["top1"] == pytest.approx(1 / 3)
    # ... and is lost when classified as a top, although D is a top
    res = rules([entry(2, WRONG, 1, 0.9, [(11, FULL)])])
    assert res["num_represented"] == 0 and res["top20"] == 0
    # image 1's first listed item is the unpaired A: a box overlapping nothing is lost there
    res = rules([entry(1, WRONG, 8, 0.9, B_HIT)])
    assert res["num_represented"] == 0 and res["top20"] == 0


def test_a_box_overlapping_a_style0_item_most_is_lost_to_it():
    # [0, 0, 100, 150]: IoU 0.667 with A (style 0), 0.167 with B; classified as trousers (B's)
    res = rules([entry(1, [0, 0, 100, 150], 8, 0.9, B_HIT)])
    assert res["num_represented"] == 0 and res["top20"] == 0
    # [0, 90, 100, 300] overlaps B most: it represents B
    res = rules([entry(1, [0, 90, 100, 300], 8, 0.9, B_HIT)])
    assert res["top1"] == pytest.approx(1 / 3)


def test_equal_scores_the_first_entry_represents():
    wrong = B_HIT  # another garment's shop item
    res = rules([entry(2, FULL, 9, 0.5, wrong), entry(2, [0, 0, 90, 90], 9, 0.5, C_HIT)])
    assert res["top20"] == 0
    res = rules([entry(2, FULL, 9, 0.5, C_HIT), entry(2, [0, 0, 90, 90], 9, 0.5, wrong)])
    assert res["top1"] == pytest.approx(1 / 3)


def test_fewer_than_20_results_are_scored_and_counted():
    short = [(99, FULL), (98, FULL)] + C_HIT  # correct at rank 3 of 3
    res = rules([entry(2, FULL, 9, 0.9, short), entry(1, [0, 100, 100, 300], 8, 0.9, B_HIT * 20)])
    assert res["num_short_lists"] == 1
    assert res["top1"] == pytest.approx(1 / 3) and res["top5"] == pytest.approx(2 / 3)


def test_inconsistent_pair_ids_of_one_query_image_are_refused():
    bad = [dict(RULES_Q[0]), {**RULES_Q[1], "pair_id": 7}]
    with pytest.raises(ValueError, match="q.json, entry 1, field 'pair_id'"):
        RetrievalGroundTruth.from_official(bad, RULES_G, "q.json")


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
    from test_retrieval_official import official_files

    q, g = official_files()
    rgt = RetrievalGroundTruth.from_official(q, g)
    # 15,752 rows, 12,550 of them paired items (the official denominator)
    assert rgt.num_queries == 12550 and len(rgt.g_image) == 24012
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
    has_match = np.mean([(e["pair_id"], e["style"]) in items for e in q if e["style"] > 0])
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


def _tool(name):
    from conftest import script_module

    return script_module(("tools/" if name == "evaluate" else "datasets/") + name + ".py")


def test_split_annotations_and_official_files_written_from_them_score_identically(
    synthetic_split, tmp_path
):
    from test_retrieval_official import random_submission

    annos, images = synthetic_split + "/annos", synthetic_split + "/image"
    gt_dir = tmp_path / "gt"
    prepare = _tool("prepare_deepfashion2")
    assert (
        prepare.main(["--anno-dir", annos, "--image-dir", images, "--retrieval-gt", str(gt_dir)])
        == 0
    )
    queries = json.loads((gt_dir / "query_gt.json").read_text())
    gallery = json.loads((gt_dir / "gallery_gt.json").read_text())
    # the official layout: field order, integer boxes, style-0 query rows, no style-0 gallery rows
    assert list(queries[0]) == ["style", "pair_id", "query_image_id", "bbox", "cls"]
    assert list(gallery[0]) == ["gallery_image_id", "style", "pair_id", "bbox"]
    assert all(isinstance(v, int) for e in queries + gallery for v in e["bbox"])
    assert any(e["style"] == 0 for e in queries) and all(e["style"] > 0 for e in gallery)
    dicts = {d["image_id"]: d for d in load_deepfashion2(annos, images)}
    for e in queries:  # every item of a consumer image with a paired item, in file order
        d = dicts[e["query_image_id"]]
        assert d["source"] == "user" and any(a["style"] > 0 for a in d["annotations"])
    rows = [(e["query_image_id"], e["bbox"]) for e in queries]
    expected = [
        (i, [int(v) for v in a["bbox"]])
        for i, d in sorted(dicts.items())
        if d["source"] == "user" and any(a["style"] > 0 for a in d["annotations"])
        for a in d["annotations"]
    ]
    assert rows == expected

    tool = _tool("evaluate")
    for seed in range(3):
        path = tmp_path / f"retrieval{seed}.json"
        path.write_text(json.dumps(random_submission(queries, gallery, seed)))
        split = tool.main(["--anno-dir", annos, "--image-dir", images, "--results", str(path)])
        files = tool.main(
            ["--results", str(path), "--query-gt", str(gt_dir / "query_gt.json")]
            + ["--gallery-gt", str(gt_dir / "gallery_gt.json"), "--output-json", str(path) + ".m"]
        )
        overall = {k: v for k, v in split["retrieval"].items() if "/" not in k}
        assert files["retrieval"] == overall  # to the last digit
        assert 0 < overall["top20"] < 100
        # the split knows the attributes: per-subset top-k, each over its own queries
        assert "top20/occlusion:heavy" in split["retrieval"]
        saved = json.loads((tmp_path / f"retrieval{seed}.json.m").read_text())["retrieval"]
        assert saved["top20"] == files["retrieval"]["top20"]


def test_grouped_index_saved_and_loaded_ranks_the_same():
    from deepfashion2.evaluation.gallery import GroupedIndex

    rng = np.random.default_rng(3)
    emb = rng.normal(size=(3000, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cats = rng.integers(1, 4, 3000)
    queries, q_cats = emb[:50] + 0.01, cats[:50]
    built = GroupedIndex(emb, cats, kind="faiss")
    files = built.to_files()
    assert sorted(files) == ["1.faiss", "2.faiss", "3.faiss"]  # one FAISS index per category
    loaded = GroupedIndex.from_files(files, emb, cats, same_category=True)
    s1, r1 = built.search(queries, q_cats, 10)
    s2, r2 = loaded.search(queries, q_cats, 10)
    assert (r1 == r2).all() and np.allclose(s1, s2)
    assert (cats[r1] == q_cats[:, None]).all()  # within the query's category
    exact = GroupedIndex(emb, cats, kind="exact")
    assert (exact.search(queries, q_cats, 1)[1][:, 0] == np.arange(50)).all()
