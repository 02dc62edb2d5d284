from detectron2.config import CfgNode as CN


def add_deepfashion2_config(cfg: CN) -> None:
    """
    Add the DeepFashion2 options to a Detectron2 config. The landmark head itself is configured
    with the stock keys (``MODEL.ROI_KEYPOINT_HEAD.NAME: CategoryKeypointHead``,
    ``NUM_KEYPOINTS: 294``); the OKS sigmas come from the dataset metadata unless
    ``TEST.KEYPOINT_OKS_SIGMAS`` is set.
    """
    cfg.DEEPFASHION2 = CN()
    # Lenient loading of the builtin splits: skip malformed items (counted and logged).
    cfg.DEEPFASHION2.LENIENT = False
