"""Binance USD-M: stream routing (streams.py), frame parsing (parse.py), connections (client.py)."""
