"""Shared fixtures: a real redis-server for the whole session, a clean namespace per test.

Without REDIS_URL the session starts its own redis-server on a free port with its data in a
temporary folder; each test starts from an empty database and may stop, kill and restart the
server (``redis_control``). With REDIS_URL set, that server is used instead: each test then works
in a namespace of its own and deletes only the keys of that namespace afterwards, and tests that
need to stop the server are skipped.

`make test` runs the suite on two pytest-xdist workers (``-n 2``): each worker has its own
session, so its own redis-server; tests that share something fixed (the demo's ports and folder)
or must not overlap are grouped (GROUPS below) and run one after the other on one worker.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from core.config import Settings
from core.keys import Keys
from demo.redis_server import RedisServer

FIXTURES = Path(__file__).parent / "fixtures"
EXTERNAL_URL = os.environ.get("REDIS_URL")


def exchange_info() -> dict[str, Any]:
    """Return the recorded exchangeInfo response (line 1: `<url> -> <time>: <json>`)."""
    first_line = (FIXTURES / "exchange-info-2021-07-22.txt").read_text().splitlines()[0]
    return orjson.loads(first_line.split(": ", 1)[1])  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def _redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    if EXTERNAL_URL:
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop(save=False)


@pytest.fixture
def redis_url(_redis_session: RedisServer | None) -> str:
    if _redis_session is None:
        assert EXTERNAL_URL
        return EXTERNAL_URL
    if not _redis_session.running:  # a previous test stopped it and failed before restarting
        _redis_session.start()
    return _redis_session.url


@pytest.fixture
def namespace(redis_url: str, _redis_session: RedisServer | None) -> Iterator[str]:
    """Return a key namespace no other test uses; the database is clean for it."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    admin = redis.Redis.from_url(redis_url)
    if _redis_session is not None:
        admin.flushall()  # our own server: every test starts from an empty database
    yield ns
    if _redis_session is not None and not _redis_session.running:
        _redis_session.start()
    for key in admin.scan_iter(match=f"{ns}:*", count=1000):
        admin.delete(key)
    admin.close()


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace=namespace, shards=4)


@pytest.fixture
def make_settings(redis_url: str, namespace: str) -> Callable[..., Settings]:
    """Build Settings for this test: its Redis, its namespace, demo secrets, and overrides."""

    def make(**overrides: str) -> Settings:
        env = {"REDIS_URL": redis_url, "TP_NAMESPACE": namespace, "TP_DEMO": "1",
               "TP_STREAM_SHARDS": "4", **overrides}  # fmt: skip
        return Settings.from_env(env)

    return make


@pytest.fixture
def redis_control(_redis_session: RedisServer | None) -> RedisServer:
    """Return the session's redis-server to stop, kill or restart mid-test (owned server only)."""
    if _redis_session is None:
        pytest.skip("needs a redis-server this test run started (REDIS_URL is set)")
    return _redis_session


# --- parallel runs (pytest-xdist, `make test`) -------------------------------------------------

# Tests that must not run at the same time as another of their group, by node id prefix. Each
# group is one unit of work for one worker, its tests one after the other; the other worker goes
# on with the rest meanwhile.
GROUPS = {
    # The demo's fixed ports (the simulator's 8765 and 8766: the Procfile's line) and its .demo
    # folder (Redis data, secrets): two demos at once would collide.
    "demo": ("tests/e2e/test_demo.py::",),
    # A Chromium and a whole stack each: two at once on two cores slow each other past their waits.
    "browser": ("tests/e2e/test_web_page.py::", "tests/e2e/test_ops.py::test_the_page_"),
    # The two heaviest tests (several processes each at a high trade rate): never both at once.
    "heavy": ("tests/e2e/test_candles.py::test_candles_equal_the_exchanges_klines",
              "tests/e2e/test_chaos.py::"),
    # One stack for the module (a module-scoped fixture): on one worker, it is built once.
    "haproxy": ("tests/e2e/test_web_haproxy.py::",),
    # A 6-node Redis Cluster and 8 processes each: one at a time.
    "cluster": ("tests/e2e/test_scale_out.py::",),
}  # fmt: skip


def xdist_group_of(nodeid: str) -> str | None:
    return next((g for g, prefixes in GROUPS.items() if nodeid.startswith(prefixes)), None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Schedule test by test (xdist's ``load``), but each of GROUPS as one unit.

    Not xdist's ``--dist loadgroup`` with ``xdist_group`` marks: it renames the items by setting
    ``item._nodeid``, which pytest 9.2 no longer reads (xdist 3.8), so the marks did nothing.
    Work goes out in collection order (tests/e2e first, the longest among the first).
    """
    if config.getoption("dist") not in ("load", "loadgroup"):
        return None  # another mode asked for by name: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid) or nodeid

    return GroupScheduling(config, log)


# --- the deploy test's virtual environment (tests/e2e/test_deploy.py) -------------------------

DEPLOY_TEST = "tests/e2e/test_deploy.py::test_a_heroku"
ROOT = Path(__file__).resolve().parents[1]


class VenvBuild:
    """``python -m venv`` + ``pip install -r requirements.txt``, started in the background.

    It takes ~30 s of mostly one core; started as the session starts when its tests include the
    deploy test, it runs while the earlier tests wait on their processes. Under pytest-xdist the
    controller builds it (it lives for the whole session, a worker may not) and the worker that
    runs the deploy test waits for the exit status the build writes to ``rc``.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.owner = folder is None  # the process that made the folder removes it
        self.dir = folder or Path(tempfile.mkdtemp(prefix="deploy-venv-"))
        self.venv = self.dir / "venv"
        self.log = self.dir / "pip.log"
        self.rc = self.dir / "rc"
        self.proc: subprocess.Popen[bytes] | None = None
        if self.owner:
            atexit.register(self.remove)

    def start(self) -> None:
        if self.proc is not None:
            return
        script = (f'"{sys.executable}" -m venv "{self.venv}" && "{self.venv}/bin/pip" install '
                  f'--quiet --no-compile --require-hashes -r "{ROOT / "requirements.txt"}"; '
                  f'echo $? > "{self.rc}.tmp" && mv "{self.rc}.tmp" "{self.rc}"')  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(["/bin/sh", "-c", script], stdout=out, stderr=out,
                                         start_new_session=True)  # fmt: skip

    def wait(self, timeout_s: float = 600) -> Path:
        deadline = time.monotonic() + timeout_s
        while not self.rc.exists():
            assert time.monotonic() < deadline, f"venv build unfinished: {self.tail()}"
            time.sleep(0.5)
        assert self.rc.read_text().strip() == "0", self.tail()
        return self.venv

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else "(no log)"

    def remove(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the shell and the pip it started
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_deploy_build: VenvBuild | None = None


def deploy_venv(config: pytest.Config) -> VenvBuild:
    """This session's build: the controller's folder on an xdist worker, else its own."""
    global _deploy_build
    if _deploy_build is None:
        folder = getattr(config, "workerinput", {}).get("deploy_venv")
        _deploy_build = VenvBuild(Path(folder) if folder else None)
    return _deploy_build


def _runs_deploy_test(nodeids: Sequence[str]) -> bool:
    return any(nodeid.startswith(DEPLOY_TEST) for nodeid in nodeids)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without xdist: start the build now, if the deploy test will run."""
    if not hasattr(session.config, "workerinput") and _runs_deploy_test(
        [item.nodeid for item in session.items]
    ):
        deploy_venv(session.config).start()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: tell each worker where the build is (started once collected)."""
    node.workerinput["deploy_venv"] = str(deploy_venv(node.config).dir)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: Sequence[str]) -> None:
    """xdist controller: start the build as soon as a worker has collected the deploy test."""
    if _runs_deploy_test(ids):
        deploy_venv(node.config).start()


@pytest.fixture(scope="module")
def runtime_venv(request: pytest.FixtureRequest) -> Path:
    """A virtual environment with requirements.txt installed, nothing else."""
    build = deploy_venv(request.config)
    if build.owner:
        build.start()  # no-op when already started at collection
    return build.wait()
