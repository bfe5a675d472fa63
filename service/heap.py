"""The process's heap, tuned for a server that holds a large, long-lived memo.

CPython's full collection walks every tracked object. Left at its defaults, a serving
process with a warm memo paused for 35-130 ms at each full pass on the 2-core benchmark
machine (bench/README.md, "Profile"), and those pauses were GET's p99.
"""

from __future__ import annotations

import gc

# The youngest generation's threshold: at CPython's 700, a burst of requests promoted the
# objects of those still in flight, and each promotion brought the next full pass nearer.
YOUNG_THRESHOLD = 50_000


def tune() -> None:
    """Collect the young generations less often (a pass still costs only what is young)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def freeze() -> None:
    """Move all that start-up built (modules, the app, its services) out of the collector's
    sight: nothing of it is ever garbage while the process serves."""
    gc.collect()
    gc.freeze()
