"""The trader's page on the demo: how long until the first candles are on screen.

Run by hand (not part of the test suite)::

    .venv/bin/python bench/page_load.py --loads 7

Starts ``python -m demo`` (embedded Redis, simulator, every process type) on a free port, waits
until BTCUSDT has 1m candles in Redis, then opens the page ``--loads`` times in Debian's Chromium
(Playwright, as the page tests do), each time in a new browser context: the first load of each
context has an empty cache ("cold"); a reload in the same context is "warm" (static files
revalidated by ETag). For each load it prints, in ms from the navigation's start
(``performance.now()`` in the page):

* ``html``: the document's responseEnd;
* ``socket``: the Socket.IO connection is up;
* ``candles``: the first candles are drawn (the chart holds them; ``window.tpPage``);
* bytes transferred (``performance`` resource entries' ``transferSize``).

Medians over the loads at the end. The demo is stopped (Ctrl-C, as a user would) when done.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
MEASURE_JS = """async () => {
    const t0 = performance.now();
    while (!(window.tpPage && window.tpPage.market.candles.size > 0)) {
        if (performance.now() - t0 > 20000) return null;
        await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => requestAnimationFrame(() => r()));  // drawn
    const nav = performance.getEntriesByType('navigation')[0];
    const bytes = [nav, ...performance.getEntriesByType('resource')]
        .reduce((sum, e) => sum + (e.transferSize || 0), 0);
    return {html: nav.responseEnd, candles: performance.now(), bytes,
            socket: window.tpBenchSocketAt ?? null};
}"""
SOCKET_HOOK_JS = """
    const t = setInterval(() => {
        const s = document.getElementById('status');
        if (s && s.dataset.state === 'connected') { window.tpBenchSocketAt = performance.now();
                                                    clearInterval(t); }
    }, 2);
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_demo(port: int) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TP_") and k != "REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "demo"], cwd=ROOT, text=True,
                            env={**env, "PORT": str(port)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    assert proc.stdout is not None
    redis_url = ""
    for line in proc.stdout:
        if "redis://" in line and not redis_url:
            redis_url = line[line.index("redis://") :].split()[0]
        if line.startswith("Processes"):
            break
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, redis_url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loads", type=int, default=7)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from core.keys import Keys

    port = free_port()
    proc, redis_url = start_demo(port)
    base = f"http://localhost:{port}"
    try:
        r = redis.Redis.from_url(redis_url)
        key = Keys("tp", 4).candles("BTCUSDT", "1m")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not r.zcard(key):
            time.sleep(0.5)
        assert r.zcard(key), "no BTCUSDT 1m candles after 120 s"
        httpx.get(base + "/", timeout=10)  # the web process is up
        print(f"demo at {base}; {r.zcard(key)} BTCUSDT 1m candles stored")
        rows: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])  # fmt: skip
            for i in range(args.loads):
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.add_init_script(SOCKET_HOOK_JS)
                for kind in ("cold", "warm"):
                    if kind == "cold":
                        page.goto(base + "/")
                    else:
                        page.reload()
                    m = page.evaluate(MEASURE_JS)
                    assert m is not None, "no candles within 20 s"
                    rows[kind].append(m)
                    print(f"load {i + 1} {kind}: html {m['html']:.0f} ms, socket "
                          f"{(m['socket'] or 0):.0f} ms, candles {m['candles']:.0f} ms, "
                          f"{m['bytes'] / 1024:.0f} KiB")  # fmt: skip
                context.close()
            browser.close()
        for kind, ms in rows.items():
            med = {
                f: statistics.median(x[f] or 0 for x in ms)
                for f in ("html", "socket", "candles", "bytes")
            }
            print(f"median {kind} ({len(ms)}): html {med['html']:.0f} ms, socket "
                  f"{med['socket']:.0f} ms, candles {med['candles']:.0f} ms, "
                  f"{med['bytes'] / 1024:.0f} KiB")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


if __name__ == "__main__":
    main()
