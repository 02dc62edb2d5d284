from .checkpoint import DeepFashion2Checkpointer
from .launch import launch
from .trainer import Trainer

__all__ = ["DeepFashion2Checkpointer", "Trainer", "launch"]
