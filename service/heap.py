"""The process's heap, tuned for a server that holds a large, long-lived memo.

CPython's full collection walks every tracked object. Left at its defaults, a serving
process with a warm memo paused for 35-127 ms at each full pass on the 2-core benchmark
machine (bench/README.md, "The garbage collector: GET's p99"), and those pauses were GET's p99.
"""

from __future__ import annotations

import gc


def freeze() -> None:
    """Move all that start-up built (modules, the app, its services) out of the collector's
    sight: nothing of it is ever garbage while the process serves."""
    gc.collect()
    gc.freeze()
