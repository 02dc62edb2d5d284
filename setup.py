"""Installs the ``deepfashion2`` package from projects/deepfashion2 (Detectron2-project layout)."""

from setuptools import find_packages, setup

setup(
    name="deepfashion2",
    version="0.1.0",
    description="DeepFashion2 for Detectron2: datasets, landmark head, benchmarks, retrieval",
    package_dir={"deepfashion2": "projects/deepfashion2"},
    packages=["deepfashion2"]
    + ["deepfashion2." + p for p in find_packages("projects/deepfashion2")],
    python_requires=">=3.9",
    install_requires=["detectron2", "numpy", "orjson", "imagesize", "tqdm", "Pillow"],
)
