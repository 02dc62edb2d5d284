"""``train`` of the DeepFashion2 LazyConfigs: Detectron2's (configs/common/train.py), plus the
seed and how many periodic checkpoints to keep."""

from detectron2.model_zoo import get_config

train = get_config("common/train.py").train
train.seed = -1  # -1: a random one, logged
train.checkpointer.max_to_keep = 100
# test-time augmentation after the plain evaluation (the YAML's TEST.AUG; Detectron2's sizes)
train.tta = dict(enabled=False, min_sizes=[400, 500, 600, 700, 800, 900, 1000, 1100, 1200],
                 max_size=4000, flip=True)  # fmt: skip
