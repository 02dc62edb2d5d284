"""
Every difference between the Detectron2 this project runs on and what it needs, in one place.

The project supports two Detectron2s: v0.6 as ``tools/install_detectron2.py`` builds it from the
package index (official v0.6 Python sources, no compiled ops), and the main branch, which most GPU
users build from source. Both report ``__version__ == "0.6"``, so each back-port below detects
its own need by probing the behaviour, and is applied only where the installed Detectron2 needs it.

Each entry: the difference; which Detectron2 needs it; where it is applied.

- ``from detectron2 import _C`` optional (deformable convs, rotated boxes), and pycocotools'
  ``COCOeval`` when ``fast_eval_api`` is missing; ``np.bool/int/float/object`` -> builtins (removed
  in numpy 1.24); ``Image.LINEAR`` -> ``BILINEAR`` (removed in Pillow 10). v0.6 wheel. Install
  time, by ``tools/install_detectron2.py`` (the modules fail to import before any run-time fix).
- ``MapDataset`` retries a skipped sample (a mapper returning ``None``) by sampling a *set*, which
  Python 3.11 removed; main samples a list. v0.6. :func:`apply_backports`.
- ``hooks.LRScheduler`` checkpoints only ``_LRScheduler`` subclasses, so torch's own schedulers
  (``LRScheduler`` subclasses since torch 2.0) restart on ``--resume``. v0.6.
  :func:`apply_backports`.
- The optimizer state (momentum) is not checkpointed. v0.6 (main's ``DefaultTrainer`` saves
  ``"_trainer"``). :class:`deepfashion2.engine.Trainer` ``state_dict``.
- Multi-process ``launch`` without GPUs (gloo). v0.6 (main falls back to gloo itself).
  :func:`deepfashion2.engine.launch`.
- ``create_ddp_model`` passes ``device_ids`` for a CPU model, which DDP rejects. v0.6 and main.
  :func:`cpu_ddp`, around the trainer's construction only.
- Detectron2 private names the project uses, all here: ``launch._find_free_port`` (a free TCP
  port for ``dist_url="auto"``; v0.6 and main) and ``comm._LOCAL_PROCESS_GROUP`` (v0.6 has no
  public setter; main's is ``create_local_process_group``): :func:`free_port`,
  :func:`set_local_process_group`; ``DefaultTrainer._trainer``, the inner trainer that holds the
  optimizer (v0.6 and main): :func:`trainer_optimizer`, and :class:`deepfashion2.engine.Trainer`
  saving its state on v0.6 (above).
- Protected methods the project's subclasses extend, as Detectron2's own projects do (the same
  on v0.6 and main; ``GeneralizedRCNNWithTTA``'s file is identical on both):
  ``GeneralizedRCNNWithTTA._get_augmented_inputs / _get_augmented_boxes / _merge_detections /
  _rescale_detected_boxes / _reduce_pred_masks / _turn_off_roi_heads``
  (:class:`deepfashion2.modeling.DeepFashion2RCNNWithTTA`), and ``Checkpointer._load_file /
  _load_model / _log_incompatible_keys`` (:class:`deepfashion2.engine.DeepFashion2Checkpointer`).
  ``tests/`` runs both on both Detectron2s.
- ``default_setup`` logs Detectron2's environment table, whose ``detectron2._C  not built
  correctly`` row (and torch's "No CUDA runtime is found" warning on a machine without CUDA) reads
  like a broken install on the v0.6 wheel, which has no compiled ops by design.
  :func:`explain_environment_table`, called by ``tools/train_net.py`` before ``default_setup``.

What the v0.6 wheel cannot do at all (no compiled ops): rotated boxes (``RotatedBoxes`` ops,
``ROIAlignRotated``), deformable convolutions, the ``fast_eval_api`` COCO evaluation (pycocotools'
``COCOeval`` is used instead); the caffe2 export was removed from torch.
"""

from __future__ import annotations

import contextlib
import logging
import re

import torch

logger = logging.getLogger(__name__)

_applied: list[str] | None = None  # None until apply_backports has probed this Detectron2


def _map_dataset_needs_fix() -> bool:
    """v0.6's ``MapDataset`` fails on Python >= 3.11 when the mapper skips a sample."""
    from detectron2.data.common import MapDataset

    ds = MapDataset([0, 1], lambda x: None if x == 0 else x)
    try:
        ds[0]
    except TypeError:
        return True
    return False


def _map_dataset_getitem(self, idx):
    """``MapDataset.__getitem__`` as Detectron2's main branch has it (samples a list)."""
    retry_count = 0
    cur_idx = int(idx)
    while True:
        data = self._map_func(self._dataset[cur_idx])
        if data is not None:
            self._fallback_candidates.add(cur_idx)
            return data
        # the mapper skipped this index: try a random other one from the pool
        retry_count += 1
        self._fallback_candidates.discard(cur_idx)
        cur_idx = self._rng.sample(list(self._fallback_candidates), k=1)[0]
        if retry_count >= 3:
            logging.getLogger("detectron2.data.common").warning(
                f"Failed to apply `_map_func` for idx: {idx}, retry count: {retry_count}"
            )


def _lr_scheduler_hook_needs_fix() -> bool:
    """v0.6's ``hooks.LRScheduler`` returns ``{}`` for torch's own schedulers."""
    from detectron2.engine import hooks

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    hook = hooks.LRScheduler(opt, torch.optim.lr_scheduler.StepLR(opt, 1))
    return hook.state_dict() == {}


def _scheduler_state_dict(self):
    if isinstance(self.scheduler, torch.optim.lr_scheduler.LRScheduler):
        return self.scheduler.state_dict()
    return {}


def _scheduler_load_state_dict(self, state_dict):
    if isinstance(self.scheduler, torch.optim.lr_scheduler.LRScheduler):
        logging.getLogger("detectron2.engine.hooks").info("Loading scheduler from state_dict ...")
        self.scheduler.load_state_dict(state_dict)


def apply_backports() -> list[str]:
    """
    Apply the run-time back-ports the installed Detectron2 needs (idempotent); returns their
    names. Called by :class:`deepfashion2.engine.Trainer` before it builds anything.
    """
    global _applied
    if _applied is None:
        from detectron2.data.common import MapDataset
        from detectron2.engine import hooks

        applied = []
        if _map_dataset_needs_fix():
            MapDataset.__getitem__ = _map_dataset_getitem
            applied.append("MapDataset.__getitem__")
        if _lr_scheduler_hook_needs_fix():
            hooks.LRScheduler.state_dict = _scheduler_state_dict
            hooks.LRScheduler.load_state_dict = _scheduler_load_state_dict
            applied.append("hooks.LRScheduler.state_dict")
        if applied:
            logger.info(f"Detectron2 back-ports applied (compat): {', '.join(applied)}")
        _applied = applied
    return list(_applied)


def trainer_saves_optimizer() -> bool:
    """Whether ``DefaultTrainer`` checkpoints its inner trainer (optimizer state): main does."""
    from detectron2.engine import DefaultTrainer

    return "state_dict" in vars(DefaultTrainer)


def launch_supports_cpu() -> bool:
    """Main's ``launch`` starts gloo process groups without GPUs; v0.6 asserts CUDA."""
    from detectron2.utils import comm

    return hasattr(comm, "create_local_process_group")


@contextlib.contextmanager
def cpu_ddp():
    """
    While active, Detectron2's ``create_ddp_model`` wraps a CPU model without ``device_ids``
    (both v0.6 and main pass ``[local_rank]``, which DDP rejects for CPU modules). Scoped to the
    call that builds the trainer, so nothing else in the process sees the change.
    """
    import detectron2.engine.defaults as defaults

    stock = defaults.create_ddp_model

    def create_ddp_model(model, *, fp16_compression=False, **kwargs):
        if "device_ids" not in kwargs and next(model.parameters()).device.type == "cpu":
            kwargs["device_ids"] = None
        return stock(model, fp16_compression=fp16_compression, **kwargs)

    defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        defaults.create_ddp_model = stock


def free_port() -> int:
    """A free TCP port on this machine (Detectron2's private ``launch._find_free_port``)."""
    from detectron2.engine.launch import _find_free_port

    return _find_free_port()


def set_local_process_group(group) -> None:
    """
    The process group of this machine's processes, for ``comm.get_local_rank`` and friends: v0.6
    keeps it in the private ``comm._LOCAL_PROCESS_GROUP`` and has no setter.
    """
    from detectron2.utils import comm

    assert comm._LOCAL_PROCESS_GROUP is None, "the local process group is already set"
    comm._LOCAL_PROCESS_GROUP = group


def trainer_optimizer(trainer):
    """The optimizer of a ``DefaultTrainer`` (kept by its inner ``_trainer``), or None."""
    return getattr(getattr(trainer, "_trainer", None), "optimizer", None)


_C_ROW = re.compile(r"^(detectron2\._C\s+)not built correctly:.*$", re.M)
_C_NOTE = "not built: Python-only install (the project needs none of its compiled ops)"


class _EnvironmentTableNote(logging.Filter):
    """Rewrites the ``detectron2._C`` row of ``default_setup``'s environment table."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Environment info:"):
            record.msg = _C_ROW.sub(lambda m: m.group(1) + _C_NOTE, record.msg)
        return True


def explain_environment_table() -> None:
    """
    Before Detectron2's ``default_setup``: its environment table says that ``detectron2._C`` is
    "not built correctly" and torch warns "No CUDA runtime is found" on a CPU machine, which read
    like a broken install; on a Python-only Detectron2 without CUDA neither is a fault, so the row
    says what it means and torch's warning is not shown. Idempotent.
    """
    if not torch.cuda.is_available():  # with CUDA, a missing CUDA runtime is worth a warning
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    d2 = logging.getLogger("detectron2")
    if not any(isinstance(f, _EnvironmentTableNote) for f in d2.filters):
        d2.addFilter(_EnvironmentTableNote())
