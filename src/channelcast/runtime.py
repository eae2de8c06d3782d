"""Process-level settings for channelcast's own long-running commands (not the library).

Only the commands (``serve``, ``bench``) call these; a library must not change a host
application's interpreter settings behind its back.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Move every object alive now into the collector's permanent generation.

    After start-up the process holds tens of thousands of objects that live as long as it
    does (modules, classes, functions, configuration). CPython's full collections walk
    all of them, and every thread waits meanwhile: 7-12 ms for the ~40,000 objects a
    gateway or benchmark process holds here, a pause every message in flight pays.
    Frozen, they are skipped (and never freed, which for start-up objects changes
    nothing). Returns how many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
