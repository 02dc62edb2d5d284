"""
``DetectionCheckpointer`` that cannot be made to run code on ``--resume`` and loses nothing when
a run is killed while it writes.

- Checkpoints and ``last_checkpoint`` are written to a temporary file in the same folder, flushed
  to disk, then renamed over the old one: a run killed at any moment leaves either the old or the
  new file, never a truncated one.
- ``--resume`` follows ``last_checkpoint`` only to a file of ``OUTPUT_DIR`` (a bare ``.pth`` file
  name), and reads it with ``torch.load(weights_only=True)``. If it is missing, unreadable or
  names something else, the newest intact checkpoint of the folder is used instead, with a warning.

- A checkpoint found there must belong to the model being trained: every parameter and buffer,
  and every optimizer state tensor, has the shape the model's has. Another model's checkpoint is
  refused by name with the first difference (:class:`CheckpointMismatchError`), before anything is
  loaded: Detectron2 would skip the mismatched layers with a warning and then hand the optimizer
  state of the old shapes to the optimizer (a fused AdamW step then crashes the process).

The initial weights (``MODEL.WEIGHTS``) are the user's choice and load as Detectron2 loads them,
except where the caller reads weights named by someone else's folder (a catalogue):
``allow_pickle=False`` then refuses ``.pkl`` files and URLs that are not ``deepfashion2://`` names.
A ``.pth`` file is read with ``torch.load(weights_only=True)`` (explicitly where this module reads
it; through Detectron2 for ``MODEL.WEIGHTS``, by torch's default since 2.6, which the project
requires), which runs no code: one holding pickled objects is a :class:`CheckpointError`.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile

import torch
from detectron2.checkpoint import DetectionCheckpointer

from .. import compat
from ..errors import DeepFashion2Error, FileError
from ..utils.files import atomic_write, remove_dead_temporaries

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"model_(\d+|final)\.pth")
# what a truncated, empty or foreign file raises from torch.load
_UNREADABLE = (
    EOFError,
    RuntimeError,
    OSError,
    ValueError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


class CheckpointMismatchError(DeepFashion2Error, RuntimeError):
    """A checkpoint of another model than the one it would be loaded into."""


class CheckpointError(FileError, RuntimeError):
    """Weights or a checkpoint that cannot be read: ``path``, ``reason``, ``hint``."""


class UnsafeWeightsError(FileError, ValueError):
    """Weights someone else's folder names that could run code or come from anywhere."""


# keys Detectron2 itself tolerates when they are missing or extra (detection_checkpoint.py)
_TOLERATED = ("pixel_mean", "pixel_std")


def model_mismatch(model_state: dict, saved: dict) -> str | None:
    """The first difference between the model's state dict and a saved one, or None."""
    saved = {k[7:] if k.startswith("module.") else k: v for k, v in saved.items()}
    for k, v in model_state.items():
        if k not in saved:
            if k not in _TOLERATED:
                return f"no tensor for {k} {tuple(v.shape)} of this model"
        elif tuple(getattr(saved[k], "shape", ())) != tuple(v.shape):
            shape = tuple(getattr(saved[k], "shape", ()))
            return f"{k} has shape {shape} there, {tuple(v.shape)} in this model"
    extra = [k for k in saved if k not in model_state and "anchor_generator.cell_anchors" not in k]
    if extra:
        return f"{extra[0]} is not a tensor of this model ({len(extra)} such)"
    return None


def optimizer_mismatch(optimizer: torch.optim.Optimizer, saved: dict) -> str | None:
    """The first difference between an optimizer and its saved ``state_dict()``, or None."""
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        return f"{len(groups or [])} parameter groups there, {len(optimizer.param_groups)} here"
    shapes = {}
    for g, (old, new) in enumerate(zip(groups, optimizer.param_groups)):
        if len(old.get("params", ())) != len(new["params"]):
            return (
                f"parameter group {g} has {len(old['params'])} parameters there, "
                + str(len(new["params"]))
                + " here"
            )
        shapes.update({i: tuple(p.shape) for i, p in zip(old["params"], new["params"])})
    for i, state in saved.get("state", {}).items():
        for name, t in state.items():
            if isinstance(t, torch.Tensor) and t.dim() > 0 and tuple(t.shape) != shapes.get(i):
                return f"optimizer state {name!r} of parameter {i} has shape {tuple(t.shape)}, " + (
                    f"the parameter {shapes.get(i)}"
                )
    return None


def read_weights_only(filename: str) -> dict:
    """A ``.pth`` file as tensors and plain containers (no code runs); ``{"model": ...}`` form.
    A file that is not one (truncated, empty, pickled objects) is a :class:`CheckpointError`."""
    try:
        loaded = torch.load(filename, map_location="cpu", weights_only=True)
    except _UNREADABLE as e:
        raise CheckpointError(filename, _unreadable(e)) from None
    if not isinstance(loaded, dict):
        raise CheckpointError(filename, f"not a checkpoint (a {type(loaded).__name__})")
    return loaded if "model" in loaded else {"model": loaded}


def _unreadable(e: BaseException) -> str:
    """Why torch.load refused a file, in one line (its messages run to a page)."""
    if isinstance(e, pickle.UnpicklingError):
        return "refused: it holds pickled objects, not only weights (nothing in it was run)"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"unreadable, truncated or not a checkpoint ({type(e).__name__}: {first[:200]})"


class DeepFashion2Checkpointer(DetectionCheckpointer):
    def __init__(self, model, save_dir: str = "", *, allow_pickle: bool = True, **kwargs):
        """
        ``allow_pickle=False``: weights that someone else named (a catalogue's config) load only
        from a ``.pth`` file or a ``deepfashion2://`` name; ``.pkl`` and other URLs are refused.
        """
        super().__init__(model, save_dir, **kwargs)
        self.allow_pickle = allow_pickle

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename), mode="w")

    def load(self, path: str, *args, **kwargs) -> dict:
        if not path:  # fvcore would say "from scratch", also when a backbone holds ImageNet weights
            imagenet = [
                m.imagenet_weights
                for m in self.model.modules()
                if getattr(m, "imagenet_weights", "")
            ]
            self.logger.info(
                f"No MODEL.WEIGHTS: fine-tuning from ImageNet weights ({imagenet[0]})"
                if imagenet
                else "No MODEL.WEIGHTS: training from scratch"
            )
            return {}
        if not self.allow_pickle:
            refuse_unsafe_weights(path)
        if path and "://" not in path and not os.path.isfile(path):
            raise CheckpointError(
                path,
                "no such weights file (MODEL.WEIGHTS)",
                "name a .pth file; `make demo` writes output/demo/model_final.pth",
            )
        return super().load(path, *args, **kwargs)

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        if self.save_dir and os.path.isdir(self.save_dir):
            remove_dead_temporaries(self.save_dir)  # what a run killed while saving left
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        for candidate in self._resume_candidates():
            try:
                checkpoint = read_weights_only(candidate)  # one of ours: no code
            except CheckpointError as e:
                logger.warning(f"Cannot resume from {e}.")
                continue
            self._check_belongs(candidate, checkpoint)
            return self._restore(candidate, checkpoint)
        raise CheckpointError(
            self.save_dir,
            "--resume: no intact checkpoint here",
            "remove its last_checkpoint to start from MODEL.WEIGHTS",
        )

    def _check_belongs(self, filename: str, checkpoint: dict) -> None:
        """Refuse, before loading anything, a checkpoint of another model or optimizer."""
        problem = model_mismatch(self.model.state_dict(), checkpoint["model"])
        optimizer = compat.trainer_optimizer(self.checkpointables.get("trainer"))
        saved = checkpoint.get("trainer", {}).get("_trainer", {}).get("optimizer")
        if problem is None and optimizer is not None and saved is not None:
            problem = optimizer_mismatch(optimizer, saved)
        if problem:
            raise CheckpointMismatchError(
                f"--resume: {filename} is a checkpoint of another model: {problem}. Train into "
                "another OUTPUT_DIR, or start this one again without --resume."
            )

    def _restore(self, filename: str, checkpoint: dict) -> dict:
        """Detectron2's ``Checkpointer.load`` body, on a checkpoint already read and checked."""
        self.logger.info(f"Resuming from {filename}")
        incompatible = self._load_model(checkpoint)
        if incompatible is not None:
            self._log_incompatible_keys(incompatible)
        for key, obj in self.checkpointables.items():
            if key in checkpoint:
                obj.load_state_dict(checkpoint.pop(key))
        return checkpoint

    def _resume_candidates(self) -> list[str]:
        """``last_checkpoint``'s file if it is one of ours, then the others, newest first."""
        ours = sorted(
            (n for n in os.listdir(self.save_dir) if _CHECKPOINT.fullmatch(n)),
            key=lambda n: os.path.getmtime(os.path.join(self.save_dir, n)),
            reverse=True,
        )
        tag = os.path.join(self.save_dir, "last_checkpoint")
        try:
            with open(tag) as f:
                named = f.read().strip()
        except OSError:
            named = ""
        if named in ours:
            ours.remove(named)
            ours.insert(0, named)
        else:
            logger.warning(
                f"{tag} names {named!r}, not a checkpoint file of {self.save_dir}: ignored; "
                f"resuming from the newest checkpoint there ({ours[0] if ours else 'none'})."
            )
        return [os.path.join(self.save_dir, n) for n in ours]

    def _load_file(self, filename: str) -> dict:
        if not self.allow_pickle:
            refuse_unsafe_weights(filename)
            return read_weights_only(filename)
        try:
            return super()._load_file(filename)
        except _UNREADABLE as e:
            raise CheckpointError(filename, _unreadable(e)) from None


def refuse_unsafe_weights(path: str) -> None:
    """
    Weights named by someone else's folder: a local ``.pth`` file or a ``deepfashion2://`` name
    (checked against a hash the project pins or the user lists). Anything Detectron2 would unpickle
    (``.pkl``), fetch from a URL (``http://``, ``detectron2://``) or that carries its own hash is
    refused.
    """
    scheme = path.split("://", 1)[0] if "://" in path else ""
    if scheme and scheme != "deepfashion2":
        raise UnsafeWeightsError(path, f"weights from a {scheme}:// URL are refused here")
    if scheme == "deepfashion2" and "#" in path:
        raise UnsafeWeightsError(path, "a hash given beside the weights is not trusted here")
    if not path.split("#", 1)[0].endswith(".pth"):
        raise UnsafeWeightsError(
            path,
            "only .pth weights (read without running code) are accepted here; "
            ".pkl files are unpickled, which runs whatever code they hold",
        )
