"""honcho's process manager, with its stop fixed for a signal that comes during start-up.

honcho's ``Manager`` learns each child's pid from the child's "started" message, which its loop
reads 0.1 s at a time. A SIGTERM or Ctrl-C that arrives before every message was read made it
signal only the pids it knew (``os.killpg(None)`` for the others, an error swallowed nowhere),
mark itself terminating, and never come back to the rest: they ran on until honcho's kill
timeout (30 s here), and ``make demo`` stopped 30 s late or not cleanly. Here a child whose pid
is not known yet is signalled as soon as it is, whatever happens meanwhile.
"""

from __future__ import annotations

from honcho.manager import Manager


class DemoManager(Manager):  # type: ignore[misc]
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._late: dict[str, bool] = {}  # process name -> to be killed (not terminated)

    def _killall(self, force: bool = False) -> None:
        for name, p in self._processes.items():
            if "returncode" in p:
                continue
            if p.get("pid") is None:  # started, but its pid not read yet: signalled once it is
                self._late[name] = force or self._late.get(name, False)
                continue
            self._signal(name, p["pid"], force)

    def _all_started(self) -> bool:
        # The loop asks this every turn (0.1 s), after reading a message: the moment a late pid
        # is known.
        for name, force in list(self._late.items()):
            pid = self._processes[name].get("pid")
            if pid is not None:
                del self._late[name]
                self._signal(name, pid, force)
        return bool(super()._all_started())

    def _signal(self, name: str, pid: int, force: bool) -> None:
        self._system_print(f"sending {'SIGKILL' if force else 'SIGTERM'} to {name} (pid {pid})\n")
        if force:
            self._procmgr.kill(pid)
        else:
            self._procmgr.terminate(pid)
