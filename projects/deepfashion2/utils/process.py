"""Child processes that end with their parent."""

from __future__ import annotations

import ctypes
import os
import signal


def die_with_parent(parent: int) -> None:
    """
    Call in a child process: it is killed (SIGKILL) when ``parent`` exits, however the parent
    ends (SIGKILL included), so no worker outlives the command that started it.
    """
    try:  # Linux: the kernel sends SIGKILL to this process when its parent exits
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
