"""
``DetectionCheckpointer`` that cannot be made to run code on ``--resume`` and loses nothing when
a run is killed while it writes.

- Checkpoints and ``last_checkpoint`` are written to a temporary file in the same folder, flushed
  to disk, then renamed over the old one: a run killed at any moment leaves either the old or the
  new file, never a truncated one.
- ``--resume`` follows ``last_checkpoint`` only to a file of ``OUTPUT_DIR`` (a bare ``.pth`` file
  name), and reads it with ``torch.load(weights_only=True)``. If it is missing, unreadable or
  names something else, the newest intact checkpoint of the folder is used instead, with a warning.

The initial weights (``MODEL.WEIGHTS``) are the user's choice and load as Detectron2 loads them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import zipfile

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.files import atomic_write

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"model_(\d+|final)\.pth")
# temporary files of atomic_write, left behind by a run killed while writing
_TEMPORARY = re.compile(r"\.(model_(\d+|final)\.pth|last_checkpoint)\..+\.tmp")
# what a truncated, empty or foreign file raises from torch.load
_UNREADABLE = (
    EOFError,
    RuntimeError,
    OSError,
    ValueError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


class DeepFashion2Checkpointer(DetectionCheckpointer):
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

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        if self.save_dir and os.path.isdir(self.save_dir):
            for name in os.listdir(self.save_dir):
                if _TEMPORARY.fullmatch(name):
                    with contextlib.suppress(FileNotFoundError):  # another rank removed it
                        os.remove(os.path.join(self.save_dir, name))
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        for candidate in self._resume_candidates():
            try:
                self._resuming = True
                return self.load(candidate)
            except _UNREADABLE as e:
                logger.warning(f"Cannot resume from {candidate} ({type(e).__name__}: {e}).")
            finally:
                self._resuming = False
                # Detectron2 main's load() asserts this is None on entry and resets it only when
                # it returns: after a failed candidate it must be cleared for the next one
                self._parsed_url_during_load = None
        raise RuntimeError(
            f"--resume: no intact checkpoint in {self.save_dir}; remove its last_checkpoint to "
            "start from MODEL.WEIGHTS"
        )

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
        if getattr(self, "_resuming", False):
            # one of our own checkpoints: tensors and plain containers only, no code
            loaded = torch.load(filename, map_location="cpu", weights_only=True)
            return loaded if "model" in loaded else {"model": loaded}
        return super()._load_file(filename)
