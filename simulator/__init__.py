"""Binance USD-M futures exchange simulator: its own process (``python -m simulator``).

REST on one port (aiohttp), websocket market and user-data streams on another (``websockets``),
with Binance's URLs, payloads, limits and errors, a synthetic market with exact ground truth,
replay of recorded traffic and faults on demand. See docs/simulator.md. The product never
imports this package; tests, the demo and benchmarks do.
"""
