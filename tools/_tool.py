"""
Imported first by every tool, before torch and Detectron2: their warnings about their own
internals (``torch.jit.script is deprecated``, TypedStorage, meshgrid, ...) are nothing a user can
act on, so they are hidden here and in the processes a tool starts (which inherit the
environment), as in ``make demo``; ``PYTHONWARNINGS=default`` shows them.
"""

import os
import warnings

if not os.environ.get("PYTHONWARNINGS"):
    os.environ["PYTHONWARNINGS"] = (
        "ignore::FutureWarning,ignore::UserWarning,ignore::DeprecationWarning"
    )
    for _category in (FutureWarning, UserWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=_category)
