"""
The demo application (``make demo``): train the small CPU model on the embedded synthetic set,
evaluate the four benchmarks once, compare them with chance, and leave tables, figures and
``metrics.json`` in one folder. ``run_demo`` chains the steps of :mod:`.training`, :mod:`.chance`,
:mod:`.report` and :mod:`.figures`.
"""

from .run import DEMO_SEED, run_demo

__all__ = ["DEMO_SEED", "run_demo"]
