"""The release checks (``python -m release``): each returns a line, or raises CheckFailed."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import httpx

from binance.exchange_info import EXCHANGE_INFO_PATH, resolve_universe
from core.config import Settings
from core.keys import Keys
from core.redis_clients import market_client, redacted, sync_client
from core.vault import Vault

CREDENTIAL_FIELDS = ("secret", "candidate", "keypair")
EXCHANGE_TIMEOUT_S = 10.0


class CheckFailed(Exception):
    """A check's reason, printed as ``FAIL <check>: <reason>``."""


def check_redis(settings: Settings) -> str:
    url = settings.require_redis_url()
    client = sync_client(url, max_connections=1, client_name="release")
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
    except Exception as exc:
        hint = (
            " (a self-signed certificate: set TP_REDIS_TLS=no-verify, or TP_REDIS_CA_FILE)"
            if "CERTIFICATE" in str(exc).upper()
            else ""
        )
        raise CheckFailed(f"{redacted(url)} does not answer: {exc}{hint}") from None
    finally:
        client.close()
    return f"Redis {version} at {redacted(url)}"


def check_market_redis(settings: Settings) -> str:
    """The market-data Redis answers (a cluster: every slot served, ``cluster_state:ok``)."""
    market = settings.market_redis()
    if market.shared:
        return "market data on the control Redis (TP_MARKET_REDIS_URL unset)"
    where = ", ".join(redacted(u) for u in market.urls)
    try:
        client: Any = market_client(market, None, max_connections=1,  # type: ignore[arg-type]
                                    client_name="release")  # fmt: skip
    except Exception as exc:  # a cluster client reads the slot map when it is made
        raise CheckFailed(f"{where} does not answer: {exc}") from None
    try:
        client.ping()
        if market.cluster:
            info = client.cluster_info()
            if info.get("cluster_state") != "ok":
                raise CheckFailed(f"cluster at {where}: cluster_state {info.get('cluster_state')}")
            return f"Redis Cluster at {where}: {info.get('cluster_known_nodes')} nodes, state ok"
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(f"{where} does not answer: {exc}") from None
    finally:
        client.close()
    return f"market data on {where}"


# Dramatiq queues no process consumes any more: the release deletes what an older deploy left in
# them (``candles``: the candle builds' triggers, session 16; the consumer builds candles now).
RETIRED_QUEUES = ("candles",)


def retire_queues(settings: Settings) -> str:
    """Delete the retired queues' keys (Dramatiq's layout, docs/stack.md): their waiting, delayed
    and dead messages, and what dead workers held of them. Nothing would ever read them."""
    keys = Keys.of(settings)
    ns = keys.dramatiq_namespace()
    client = sync_client(settings.require_redis_url(), max_connections=1, client_name="release")
    deleted = 0
    try:
        for queue in RETIRED_QUEUES:
            doomed = [f"{keys.dramatiq_queue(q)}{suffix}" for q in (queue, f"{queue}.DQ")
                      for suffix in ("", ".msgs")]  # fmt: skip
            doomed += [keys.dramatiq_failed(queue), keys.dramatiq_failed_messages(queue)]
            doomed += client.scan_iter(match=f"{ns}:__acks__.*.{queue}", count=1000)
            doomed += client.scan_iter(match=f"{ns}:__acks__.*.{queue}.DQ", count=1000)
            deleted += client.delete(*doomed)
    finally:
        client.close()
    return f"{', '.join(RETIRED_QUEUES)}: {deleted} leftover keys deleted"


def check_credentials(settings: Settings) -> str:
    keys = Keys.of(settings)
    vault = Vault.from_setting(settings.namespace, settings.key_encryption_key)
    configured = {kid for kid, _ in vault.keys}
    client: Any = sync_client(settings.require_redis_url(), max_connections=1,
                              client_name="release")  # fmt: skip
    seen = 0
    missing: dict[str, int] = {}
    try:
        for key in client.scan_iter(match=keys.accounts_pattern(), count=500):
            for token in client.hmget(key, CREDENTIAL_FIELDS):
                if token is None:
                    continue
                seen += 1
                kid = vault.kid_of(token.decode())
                if kid not in configured:
                    missing[kid] = missing.get(kid, 0) + 1
    finally:
        client.close()
    if missing:
        which = ", ".join(f"{n} under {kid!r}" for kid, n in sorted(missing.items()))
        raise CheckFailed(
            f"stored credentials use key ids TP_KEY_ENCRYPTION_KEY no longer holds ({which}): put"
            " the old key back after the new one, run `python -m execution.rekey`, then drop it"
        )
    return f"{seen} stored credentials, all under configured keys"


def check_formulas(settings: Settings) -> str:
    for module in settings.signals.modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise CheckFailed(f"TP_FORMULA_MODULES: {module} does not import: {exc!r}") from None
    return f"{len(settings.signals.modules)} formula modules import"


def check_exchange(settings: Settings) -> str:
    market = settings.market
    if market.source == "sim":
        return "exchange: the simulator (a process type of this deploy), not checked"
    url = market.rest_url + EXCHANGE_INFO_PATH
    try:
        response = httpx.get(url, timeout=EXCHANGE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise CheckFailed(
            f"{market.rest_url} does not answer ({exc!r}): check TP_MARKET={market.source},"
            " TP_REST_URL and the network route to it"
        ) from None
    if response.status_code == 451:
        raise CheckFailed(
            f"{market.rest_url} answered 451: Binance serves no client from this location;"
            " run the deploy in a region it serves"
        )
    if response.status_code != 200:
        raise CheckFailed(f"{url} answered HTTP {response.status_code}")
    try:
        universe = resolve_universe(settings.symbols, response.json())
    except ValueError as exc:
        raise CheckFailed(f"TP_SYMBOLS: {exc}") from None
    return f"exchange {market.rest_url}: {len(universe)} symbols to follow"


CHECKS: tuple[tuple[str, Callable[[Settings], str]], ...] = (
    ("redis", check_redis),
    ("market redis", check_market_redis),
    ("credentials", check_credentials),
    ("retired queues", retire_queues),
    ("formulas", check_formulas),
    ("exchange", check_exchange),
)
