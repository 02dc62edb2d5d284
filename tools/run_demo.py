#!/usr/bin/env python
"""
`make demo`: generate the embedded synthetic DeepFashion2 set (fixed seed), fine-tune the small
CPU model from ImageNet weights (EfficientNet-Lite0-FPN: detector + masks + landmarks + matching
head; ``--config-file configs/Mini-CPU.yaml``: the model trained from scratch), evaluate the four
benchmarks and leave tables, figures and metrics.json in --output. ``--dataset DIR`` uses a real
DeepFashion2 folder (``DIR/{train,validation}/{annos,image}``) instead, with the R50-FPN config on
a GPU; a folder of annotated photos without splits (``DIR/{annos,image}``) is where the model
trained on the synthetic set is evaluated. A malformed item stops it with one line
(``DEEPFASHION2.LENIENT True``, ``LENIENT=1`` for ``make demo``, skips such items).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

# torch and Detectron2 warn about their own internals (torch.jit, TypedStorage, meshgrid, ...):
# nothing a user of the demo can act on. Hidden here and in the training processes (which inherit
# the environment), unless PYTHONWARNINGS says otherwise.
if not os.environ.get("PYTHONWARNINGS"):
    os.environ["PYTHONWARNINGS"] = (
        "ignore::FutureWarning,ignore::UserWarning,ignore::DeprecationWarning"
    )
    for category in (FutureWarning, UserWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    print(
        "(warnings from torch's and Detectron2's internals are hidden; PYTHONWARNINGS=default "
        "shows them)",
        file=sys.stderr,
    )

from deepfashion2.apps.demo import DEMO_SEED, run_demo  # noqa: E402
from deepfashion2.utils.cli import tool_main  # noqa: E402


@tool_main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", help="a real DeepFashion2 folder with <split>/{annos,image}")
    p.add_argument("--output", default="output/demo")
    p.add_argument(
        "--config-file", help="default: EfficientNet-Lite0-CPU on CPU, R50-FPN 1x on a GPU"
    )
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="data order and initialisation")
    p.add_argument(
        "--num-processes",
        type=int,
        help="training processes (default: 2 on CPU, sharing the cores; 1 on a GPU)",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args()
    run_demo(
        args.output,
        args.dataset,
        args.config_file,
        args.opts,
        seed=args.seed,
        num_processes=args.num_processes,
    )


if __name__ == "__main__":
    main()
