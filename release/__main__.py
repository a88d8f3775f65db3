"""``python -m release``: the release phase (Procfile: release). Checks a deploy before it starts.

Heroku runs the ``release`` process type once per deploy and config change, and starts the new
dynos only if it exits 0 (https://devcenter.heroku.com/articles/release-phase). It checks what
would otherwise fail later, in every process at once, or quietly:

1. the configuration (every ``TP_`` setting, ``REDIS_URL`` and the secrets are required);
2. Redis answers at ``REDIS_URL`` with the TLS settings given;
3. every stored exchange credential is encrypted under a key id ``TP_KEY_ENCRYPTION_KEY`` still
   holds (a rotation that dropped an old key too early would lock those users out);
4. the Dramatiq queues no process reads any more are deleted (release/checks.py, RETIRED_QUEUES);
5. the formula plugins of ``TP_FORMULA_MODULES`` import;
6. outside the simulator, the exchange answers exchangeInfo and trades every ``TP_SYMBOLS``.

It prints one line per check and exits 0, or 1 naming what failed and what to set (2: the
configuration itself is wrong, one line per problem).
"""

from __future__ import annotations

import sys

from core.config import load_settings
from release.checks import CHECKS, CheckFailed


def main() -> int:
    settings = load_settings()  # exits 2 with one line per problem
    failed = False
    for name, check in CHECKS:
        if failed and name in ("credentials", "retired queues"):  # need Redis
            continue
        try:
            print(f"ok   {name}: {check(settings)}", flush=True)
        except CheckFailed as exc:
            print(f"FAIL {name}: {exc}", flush=True)
            failed = True
    print("release check " + ("failed: the new release is not started" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
