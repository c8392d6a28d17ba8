"""Shared fixtures: the real default model (loaded once), a live server, real photographs."""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# converted weights for every server the suite starts, kept out of the user's own cache
os.environ.setdefault("OMNILOOM_CACHE_DIR", str(Path(tempfile.gettempdir()) / "omniloom-tests"))
REPO = Path(__file__).resolve().parents[1]


def benchmark_module(name: str):
    """``benchmarks/NAME.py`` imported as a module (the scripts import their siblings by name)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def png_bytes(array: np.ndarray, fmt: str = "PNG", **save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **save_kwargs)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_of_data_url(url: str, mime: str = "image/jpeg") -> Image.Image:
    """The picture a data URL of type ``mime`` holds, as RGB."""
    header, data = url.split(",", 1)
    assert header == f"data:{mime};base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    from skimage import data

    return png_bytes(data.astronaut(), "JPEG", quality=90)


@pytest.fixture(scope="session")
def default_model():
    from omniloom.models.registry import load_model

    return load_model(dtype="float32")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    log: Path  # stdout and stderr: the server's JSON logs
    proc: subprocess.Popen


def start_server(
    log: Path, *args: str, launcher: str = "omniloom.cli", env: dict | None = None
) -> ServerProcess:
    """``omniloom serve`` on a free loopback port, healthy when this returns. ``launcher``: the
    module run with ``python -m`` (one that wraps the CLI, for fault injection); ``env``: more
    environment variables."""
    port = free_port()
    env = {**os.environ, "OMNILOOM_DTYPE": "float32", **(env or {})}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", launcher, "serve", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", log, proc)
    try:
        _wait_healthy(server.url, proc, log)
    except RuntimeError:
        proc.kill()
        raise
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One ``omniloom serve`` process shared by the end-to-end tests."""
    server = start_server(tmp_path_factory.mktemp("server") / "server.log")
    try:
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def server_url(server) -> str:
    return server.url


CLUSTER_ENV = {
    "OMNILOOM_CLUSTER_NUM_CPUS": "4",  # Ray's logical CPUs: room for every replica on 2 cores
    "OMNILOOM_CLUSTER_MEDIA_REPLICAS": "2",
    "OMNILOOM_CLUSTER_MIN_REPLICAS": "2",  # the pools keep their size for the whole session
    "OMNILOOM_CLUSTER_MAX_REPLICAS": "2",
}


@pytest.fixture(scope="session")
def cluster_metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def cluster_server(tmp_path_factory, cluster_metrics_port):
    """``omniloom serve --cluster local``: a Ray instance with the ingress, one encoder, two
    media engine replicas and one text engine replica."""
    env = CLUSTER_ENV | {"OMNILOOM_CLUSTER_METRICS_PORT": str(cluster_metrics_port)}
    log = tmp_path_factory.mktemp("cluster") / "server.log"
    server = start_server(log, "--cluster", "local", env=env)
    try:
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=120)


@contextlib.contextmanager
def ray_driver(server: ServerProcess):
    """This process attached to the Ray instance a ``--cluster local`` server started (by the
    address it prints, so other Ray instances on the machine cannot be mistaken for it)."""
    import ray
    from ray.serve import context

    found = re.search(r"omniloom: Ray at (\S+)", server.log.read_text())
    assert found, server.log.read_text()[-2000:]
    ray.init(address=found.group(1), log_to_driver=False)
    try:
        yield
    finally:
        # Serve caches its controller's handle by job id, which repeats across fresh Ray
        # instances: forget it, or the next instance's serve.status() asks a dead controller
        context._disconnect()
        ray.shutdown()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"server did not become healthy:\n{log.read_text()}")
