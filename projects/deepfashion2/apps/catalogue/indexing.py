"""Index a folder of shop images into a catalogue: batched, resumable, on GPUs or CPU processes."""

from __future__ import annotations

import logging
import os

from tqdm import tqdm

from ...engine import launch
from ...retrieval import Catalogue
from .embed import GarmentEmbedder, list_images, model_identity

logger = logging.getLogger(__name__)


def index_images(
    cfg,
    images_dir: str,
    output: str,
    *,
    config_name: str = "",
    batch_size: int = 4,
    images_per_shard: int = 32,
    num_procs: int = 1,
    progress: bool = True,
) -> Catalogue:
    """
    Detect and embed every garment of every image under ``images_dir`` (the evaluator's gallery
    policy: ``DEEPFASHION2.RETRIEVAL.GALLERY_PER_IMAGE`` best detections with score >=
    ``MIN_SCORE``) into the catalogue at ``output``. Images already in it are skipped, so a rerun
    (after an interruption, or when images were added) indexes only the rest. ``num_procs``
    processes (GPUs, or CPU processes) share the work.
    """
    cat = Catalogue.create(
        output, model_identity(cfg, config_name), cfg.dump(), images_root=images_dir
    )
    cat.remove_unfinished()
    done = cat.indexed_images()
    todo = [p for p in list_images(images_dir) if p not in done]
    logger.info(f"Indexing {len(todo)} images ({len(done)} already in {output}).")
    if todo:
        args = (cfg, images_dir, output, todo, batch_size, images_per_shard, progress)
        if num_procs > 1:
            launch(_worker, num_procs, dist_url="auto", args=args)
        else:
            _index_part(*args, rank=0, world=1)
    return Catalogue(output)


def _worker(cfg, images_dir, output, todo, batch_size, images_per_shard, progress):
    from detectron2.utils import comm

    _index_part(
        cfg, images_dir, output, todo, batch_size, images_per_shard, progress,
        rank=comm.get_rank(), world=comm.get_world_size(),
    )  # fmt: skip


def _index_part(
    cfg, images_dir, output, todo, batch_size, images_per_shard, progress, *, rank, world
):
    """This process's share of ``todo``, one atomic shard per ``images_per_shard`` images."""
    cat = Catalogue(output)
    embedder = GarmentEmbedder(cfg, batch_size)
    mine = todo[rank::world]
    bar = tqdm(total=len(mine), desc="Indexing", unit="image", disable=not progress or rank != 0)
    for s in range(0, len(mine), images_per_shard):
        part = mine[s : s + images_per_shard]
        cat.add(part, embedder.gallery([os.path.join(images_dir, p) for p in part]))
        bar.update(len(part))
    bar.close()
