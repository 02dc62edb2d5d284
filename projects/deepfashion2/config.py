from detectron2.config import CfgNode as CN


def add_deepfashion2_config(cfg: CN) -> None:
    """Add the DeepFashion2 options to a Detectron2 config (defaults keep stock behaviour)."""
    _C = cfg
    _C.DEEPFASHION2 = CN()
    # Lenient loading: skip malformed items (counted and logged) instead of stopping.
    _C.DEEPFASHION2.LENIENT = False
