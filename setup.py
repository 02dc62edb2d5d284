"""Installs the ``deepfashion2`` package from projects/deepfashion2 (Detectron2-project layout)."""

import os

from setuptools import find_packages, setup

# Ship configs/ inside the package (deepfashion2.model_zoo.get_config_file), the way Detectron2
# ships its model-zoo configs: a link created at build time.
_here = os.path.dirname(os.path.abspath(__file__))
_link = os.path.join(_here, "projects", "deepfashion2", "model_zoo", "configs")
if not os.path.exists(_link) and os.path.isdir(os.path.join(_here, "configs")):
    os.symlink(os.path.join("..", "..", "..", "configs"), _link)

setup(
    name="deepfashion2",
    version="0.1.0",
    description="DeepFashion2 for Detectron2: datasets, landmark head, benchmarks, retrieval",
    # deepfashion2_runtime: an exported model without Detectron2 (numpy, onnxruntime, Pillow)
    package_dir={
        "deepfashion2": "projects/deepfashion2",
        "deepfashion2_runtime": "projects/deepfashion2_runtime",
    },
    packages=["deepfashion2", "deepfashion2_runtime"]
    + ["deepfashion2." + p for p in find_packages("projects/deepfashion2")],
    package_data={
        "deepfashion2.model_zoo": [
            "configs/*.yaml",
            "configs/*/*.yaml",
            "configs/lazy/*.py",
            "configs/lazy/*/*.py",
            "configs/lazy/*/*/*.py",
        ],
        "deepfashion2.apps.serve": ["page.html"],
    },
    python_requires=">=3.9",
    install_requires=[
        "detectron2",
        "numpy",
        "orjson",
        "imagesize",
        "tqdm",
        "Pillow",
        "pycocotools",
        "faiss-cpu",
        "timm",
        "opencv-python-headless",
    ],
)
