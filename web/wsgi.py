"""WSGI entry point: ``gunicorn -k gevent -w 1 web.wsgi:app`` (Procfile ``web``).

Monkey-patching comes first, before any other import (stack-notes C1): a module that imports
``socket`` or ``ssl`` before it would block every greenlet of the process.
"""

from gevent import monkey

monkey.patch_all()

import resource  # noqa: E402

# One file descriptor per client: take the hard limit (gunicorn --worker-connections 4000).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard == resource.RLIM_INFINITY or _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(_hard, 65536) if _hard > 0 else 65536, _hard))

from core.config import load_settings  # noqa: E402
from core.logs import setup_logging  # noqa: E402
from web.app import create_app  # noqa: E402

settings = load_settings()
setup_logging(settings.log_level, process="web")
app = create_app(settings)
