"""The Binance USD-M adapter: everything that speaks the exchange's protocols.

* ``streams.py``: stream names, their routed paths, how streams are spread over connections (pure)
* ``parse.py``: websocket frames -> :mod:`core.schemas` records (pure)
* ``market_ws.py``: one market-data websocket connection (I/O)
* ``rest.py``: market-data REST inside one weight budget, with the ban state every process shares
* ``exchange_info.py``: the symbol universe from ``/fapi/v1/exchangeInfo`` and its loader

It imports only :mod:`core` (and third-party libraries), never the processes' packages or the
simulator.
"""
