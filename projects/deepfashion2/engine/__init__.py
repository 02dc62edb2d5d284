from .checkpoint import CheckpointMismatchError, DeepFashion2Checkpointer
from .launch import launch
from .trainer import Trainer

__all__ = ["CheckpointMismatchError", "DeepFashion2Checkpointer", "Trainer", "launch"]
