"""Operators' tools: the logic behind the ops page (``web/ops.py``) and ``python -m ops``.

One implementation for both: ``failed`` (Dramatiq's dead letters), ``dead`` (dead-lettered stream
entries), ``audit`` (the record every action leaves) and ``health`` (the processes' reports,
queues, stream lag). The page and the command line only parse their input and print or serve the
rows these return (docs/architecture.md, "Ops page" and "Ops command line").
"""

from __future__ import annotations

MAX_BATCH = 100  # ids per destructive call (and per audit entry); a bigger selection is batched
MAX_LIST = 500  # rows per listing
