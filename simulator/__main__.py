"""``python -m simulator``: run the exchange simulator until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from core.logs import setup_logging
from simulator.app import SimConfig, Simulator
from simulator.cli import config_from_args


async def serve(config: SimConfig) -> None:
    """Run a Simulator until a termination signal arrives."""
    sim = Simulator(config)
    await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    config, level = config_from_args(argv)
    setup_logging(level, process="simulator")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(config))
    except OSError as exc:  # most often: the port is taken (another demo still running?)
        print(f"simulator: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
