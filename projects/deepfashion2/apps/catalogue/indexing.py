"""Index a folder of shop images into a catalogue: batched, resumable, on GPUs or CPU processes."""

from __future__ import annotations

import logging
import os

from tqdm import tqdm

from ...engine import launch
from ...retrieval import Catalogue
from ...retrieval.milvus import push
from .embed import ExportedEmbedder, GarmentEmbedder, list_images, model_identity

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
    retry_skipped: bool = False,
    lenient: bool = False,
    model: str | None = None,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
) -> Catalogue:
    """
    Detect and embed every garment of every image under ``images_dir`` (the evaluator's gallery
    policy: ``DEEPFASHION2.RETRIEVAL.GALLERY_PER_IMAGE`` best detections with score >=
    ``MIN_SCORE``) into the catalogue at ``output``. Images already in it are skipped, so a rerun
    (after an interruption, or when images were added) indexes only the rest. An image that
    cannot be read is skipped, named in the log and recorded in the catalogue, so that a rerun
    does not try it again unless ``retry_skipped``. ``num_procs`` processes (GPUs, or CPU
    processes) share the work, on each of ``num_machines`` machines (Detectron2's launcher:
    ``machine_rank``, ``dist_url``; the catalogue and the image folder on a file system they
    share, at the same path): the first process's list of images to do is split among all, each
    writing its own shards. ``lenient``: damaged shards are skipped (their images indexed
    again) instead of refused. ``model``: an exported model (``.onnx`` / ``.ts``) instead of
    ``cfg``'s (which may then be None).
    """
    identity = ExportedEmbedder(model).identity if model else model_identity(cfg, config_name)
    cat = Catalogue.create(
        output,
        identity,
        "" if model else cfg.dump(),
        images_root=images_dir,
        lenient=lenient,
    )
    cat.remove_unfinished()
    done = cat.indexed_images(with_skipped=not retry_skipped)
    todo = [p for p in list_images(images_dir) if p not in done]
    logger.info(f"Indexing {len(todo)} images ({len(done)} already in {output}).")
    if todo or num_machines > 1:  # every machine joins, even one that sees nothing to do
        args = (cfg, images_dir, output, todo, batch_size, images_per_shard, progress, lenient,
                model)  # fmt: skip
        if num_procs * num_machines > 1:
            launch(_worker, num_procs, num_machines, machine_rank, dist_url, args=args)
        else:
            _index_part(*args, rank=0, world=1)
    if cat.uses_milvus and machine_rank == 0:  # the new garments reach Milvus
        push(cat)
    # the same object: the shards it verified above are not read again, only the new ones
    todo_set = set(todo)
    skipped = {p: r for p, r in cat.skipped_images().items() if p in todo_set}
    if skipped:
        logger.warning(
            f"{len(skipped)} of {len(todo)} images could not be read and were skipped (recorded "
            "in the catalogue; --retry-skipped tries them again):\n"
            + "\n".join(f"  {r}" for r in skipped.values())
        )
    return cat


def _worker(cfg, images_dir, output, todo, *rest):
    from detectron2.utils import comm

    # the first process's list: each machine listed the folder at its own moment, and another
    # machine's first shards may already be in it, so their lists can differ
    todo = comm.all_gather(todo if comm.get_rank() == 0 else None)[0]
    _index_part(cfg, images_dir, output, todo, *rest, rank=comm.get_rank(),
                world=comm.get_world_size())  # fmt: skip
    comm.synchronize()  # every machine's shards are in before any reports


def _index_part(
    cfg, images_dir, output, todo, batch_size, images_per_shard, progress, lenient, model, *,
    rank, world,
):  # fmt: skip
    """This process's share of ``todo``, one atomic shard per ``images_per_shard`` images."""
    cat = Catalogue(output, lenient=lenient)
    embedder = ExportedEmbedder(model) if model else GarmentEmbedder(cfg, batch_size)
    mine = todo[rank::world]
    bar = tqdm(total=len(mine), desc="Indexing", unit="image", disable=not progress or rank != 0)
    for s in range(0, len(mine), images_per_shard):
        part = mine[s : s + images_per_shard]
        found = embedder.gallery([os.path.join(images_dir, p) for p in part])
        ok = [(p, f) for p, f in zip(part, found) if not isinstance(f, Exception)]
        skipped = {p: str(f) for p, f in zip(part, found) if isinstance(f, Exception)}
        cat.add([p for p, _ in ok], [f for _, f in ok], skipped=skipped)
        bar.update(len(part))
    bar.close()
