"""WSGI entry point: ``gunicorn -k gevent -w 1 web.wsgi:app`` (Procfile ``web``).

Monkey-patching comes first, before any other import (docs/stack.md, "gevent and websockets"): a
module that imports ``socket`` or ``ssl`` before it would block every greenlet of the process.

Garbage collection: a full collection stops every greenlet for as long as it takes to scan every
tracked object: 0.5-0.7 s with 2,000 clients, 4-5 times a minute (bench/RESULTS.md), which was
the tail of the fan-out's latency. With Python's default thresholds a young collection runs
every 700 net allocations, so whatever is briefly alive at that moment (a stream read being
applied) is promoted, and the promotions soon trigger a full collection. Here:

* young collections wait for ``GC_THRESHOLDS[0]`` net allocations (Python's default is 700), so
  most short-lived objects die first, and the middle generation is collected every
  ``GC_THRESHOLDS[1]`` young ones. A young pause grows with the generation it scans: with
  50,000 and 20 one took 55-85 ms of CPU at 2,000 clients (130-300 ms on the busy machine), and
  every trade command and order event of the process waited for it; with 5,000 and 5 the
  longest took <= 20 ms of CPU, <= 25 ms in all (bench/RESULTS.md, Execution, "The web
  process's pauses");
* greenlets do not record the stack that spawned them (gevent's default keeps frame records for
  each, the largest kind of object in the heap);
* what exists once the app is built (modules, functions, classes: it lives as long as the
  process) is frozen out of every later scan, and so is what survives each full collection
  (the connections' objects), except every ``UNFREEZE_EVERY_S`` (web/fanout.py
  ``FreezeSurvivors``): with 5,000 and 5 a full collection ran about once a minute, ~230 ms.

Cyclic garbage is still collected: the full collection still runs once the survivors of young
collections reach a quarter of what it scans (the frozen objects' cycles wait for the next scan
of everything). ``gc_ms_max``, ``gc_ms_max_gen``, ``gc_cpu_ms_max`` and
``gc_full`` in ``<ns>:web:health`` show the pauses.
"""

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import resource  # noqa: E402

import gevent  # noqa: E402

gevent.config.track_greenlet_tree = False
GC_THRESHOLDS = (5_000, 5, 10)
UNFREEZE_EVERY_S = 600.0

# One file descriptor per client: take the hard limit (gunicorn --worker-connections 4000).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard == resource.RLIM_INFINITY or _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(_hard, 65536) if _hard > 0 else 65536, _hard))

from core.config import load_settings  # noqa: E402
from core.logs import setup_logging  # noqa: E402
from core.redis_clients import wait_for_market_redis  # noqa: E402
from web.app import create_app  # noqa: E402
from web.fanout import FreezeSurvivors  # noqa: E402

settings = load_settings()
setup_logging(settings.log_level, process="web")
wait_for_market_redis(settings.market_redis())  # a cluster client reads the slot map when made
app = create_app(settings)
gc.collect()
gc.freeze()
gc.set_threshold(*GC_THRESHOLDS)
gc.callbacks.append(FreezeSurvivors(UNFREEZE_EVERY_S))
