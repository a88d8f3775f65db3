"""The trader's page (web/static/) in a real Chromium, against the served app and a live pipeline.

Playwright drives Debian's Chromium (``make test`` installs it when missing; ``CHROMIUM``
points elsewhere). The wallet is the only stand-in: an EIP-1193 provider injected into the page
whose ``request()`` calls back into Python, where an eth_account key signs.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
from eth_account import Account
from eth_account.messages import encode_defunct
from playwright.sync_api import Page, expect

LIVE_MS = 20_000

# Each candle row as the trader reads it: open time and every cell.
ROWS_JS = """() => [...document.querySelectorAll('#candles tr[data-open-time]')]
    .map((tr) => tr.dataset.openTime + ' ' + tr.textContent)"""

WALLET_JS = """window.ethereum = {
    request: ({ method, params }) => window.tpTestWallet(method, params ?? []),
};"""


def test_the_page_lists_symbols_and_shows_candles_live(web_stack: Any, page: Page) -> None:
    universe = orjson.loads(web_stack.redis.get(web_stack.keys.universe()))
    page.goto(web_stack.base_url + "/")
    expect(page.locator("#status")).to_have_text("connected")
    expect(page.locator("#symbol option")).to_have_count(len(universe))
    assert page.locator("#symbol option").all_inner_texts() == universe

    # The snapshot fills the table, then live updates change a row or add one.
    expect(page.locator("#candles tr[data-open-time]").first).to_be_attached()
    seen = page.evaluate(ROWS_JS)
    page.wait_for_function(
        f"(seen) => ({ROWS_JS})().some((row) => !seen.includes(row))", arg=seen, timeout=LIVE_MS
    )
    expect(page.locator("#bid")).to_have_text(re.compile(r"^\d+(\.\d+)?$"), timeout=LIVE_MS)
    expect(page.locator("#age-candles")).to_have_text(re.compile(r"\d s$"))

    # Another timeframe: the table switches to its candles (1 s apart, not 1 min).
    page.select_option("#timeframe", "1s")
    page.wait_for_function(
        """() => {
            const t = [...document.querySelectorAll('#candles tr[data-open-time]')]
                .map((tr) => Number(tr.dataset.openTime));
            return t.length >= 2 && t[0] - t[1] < 60000;
        }""",
        timeout=LIVE_MS,
    )
    expect(page.locator("#status")).to_have_text("connected")


def test_sign_in_with_ethereum_then_log_out(web_stack: Any, page: Page) -> None:
    account = Account.create()
    signed: list[str] = []

    def wallet(method: str, params: list[Any]) -> Any:
        if method == "eth_requestAccounts":
            return [account.address.lower()]  # as MetaMask answers: the page must checksum it
        if method == "personal_sign":
            message, address = params
            assert address.lower() == account.address.lower()
            text = bytes.fromhex(message[2:]).decode() if message.startswith("0x") else message
            signed.append(text)
            signature = account.sign_message(encode_defunct(text=text)).signature
            return "0x" + signature.hex().removeprefix("0x")
        raise ValueError(f"the test wallet does not do {method}")

    def families() -> list[bytes]:
        return list(web_stack.redis.scan_iter(match=web_stack.keys.auth_family("*")))

    page.expose_function("tpTestWallet", wallet)
    page.add_init_script(WALLET_JS)
    page.goto(web_stack.base_url + "/")
    expect(page.locator("#status")).to_have_text("connected")
    assert families() == []

    page.click("#signin")
    expect(page.locator("#address")).to_have_text(account.address)
    expect(page.locator("#logout")).to_be_visible()
    expect(page.locator("#status")).to_have_text("connected")
    lines = signed[0].split("\n")
    assert lines[:2] == [
        f"{urlsplit(web_stack.origin).netloc} wants you to sign in with your Ethereum account:",
        account.address,
    ]
    assert f"Chain ID: {web_stack.chain_id}" in lines
    assert len(families()) == 1  # the server-side session

    page.click("#logout")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#address")).to_have_text("")
    deadline = time.monotonic() + 5
    while families() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert families() == []
    expect(page.locator("#status")).to_have_text("connected")  # anonymous again
