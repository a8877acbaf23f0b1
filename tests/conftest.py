"""Shared fixtures: the real model and a real index of the seeds, built once per session."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
QUESTIONS = ROOT / "tests" / "questions.jsonl"
ARTIFACTS = ROOT / "artifacts"
# Set by .ci/run: tests whose data or tools are absent (../shared, chromium) fail instead of
# skipping, so CI cannot pass without running them.
REQUIRE_ALL = os.environ.get("QA_REQUIRE_ALL") == "1"


def write_files(folder: Path, files: dict) -> None:
    """Each name (a path below folder) with its content, text as UTF-8 or bytes as they are."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def require_shared_data(reason: str) -> None:
    """Skip with the reason on a plain clone; fail with it under QA_REQUIRE_ALL=1 (CI)."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason}; QA_REQUIRE_ALL=1 requires it (see /work/shared/beir/SOURCES.md)")
    pytest.skip(f"{reason}; set it up to run this test (CI requires it)")


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory) -> Path:
    """The encoder's and the readers' ONNX exports go to a folder of this session, not ~/.cache
    (CI may point QA_ONNX_CACHE at one folder for all its tiers: each exports once)."""
    path = Path(os.environ.get("QA_ONNX_CACHE") or tmp_path_factory.mktemp("onnx-cache"))
    os.environ["QA_ONNX_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def encoder(onnx_cache):
    """The encoder the product uses: all-MiniLM-L6-v2 through ONNX Runtime."""
    from qa.embed import load_encoder

    return load_encoder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def torch_encoder():
    """The same model through sentence-transformers on torch: the reference for the ONNX path."""
    from qa.embed import SentenceEncoder

    return SentenceEncoder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def model_tokenizer():
    """The model's tokenizer as transformers loads it: the reference for word-piece counts."""
    from transformers import AutoTokenizer

    from qa.embed import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))


@pytest.fixture(scope="session")
def seeds_index(tmp_path_factory, encoder) -> Path:
    """A real index of seeds/, built once; tests must not modify it (copy it first)."""
    from qa.settings import Settings
    from qa.build import build

    path = tmp_path_factory.mktemp("seeds-index")
    build([SEEDS], Settings(index_dir=path), encoder=encoder, progress=False)
    return path


@pytest.fixture(scope="session")
def engine(seeds_index):
    from qa.engine import QA
    from qa.settings import Settings

    return QA.open(Settings(index_dir=seeds_index))


@pytest.fixture(scope="session")
def questions() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class FakeEncoder:
    """A tiny deterministic encoder for unit tests: hashed bag of words, unit length; a
    qa.embed.Encoder like the real one (test_embed.py checks)."""

    name: str = "fake"
    dim: int = 64
    max_seq_length: int = 64

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


# ---------------------------------------------------------------- a Ray cluster on loopback

def ray_or_fail() -> None:
    """Skip without the [ray] extra; fail under QA_REQUIRE_ALL=1 (CI installs it)."""
    import importlib.util

    from conftest import REQUIRE_ALL

    if importlib.util.find_spec("ray") is None:
        if REQUIRE_ALL:
            pytest.fail("ray is not installed; QA_REQUIRE_ALL=1 requires it "
                        "(bash scripts/setup.sh --test --ray)")
        pytest.skip("ray is not installed; pip install -e .[ray] to run the cluster tests")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_cluster(temp_dir: str, port: int) -> None:
    """End the processes of this cluster only (found by its own temp folder, or for the Ray client
    server by its head's port) and their children, never by name: `ray stop` would end every Ray
    cluster on the machine."""
    import psutil

    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.pid != os.getpid() and any(temp_dir in part or (part.startswith("--address=") and
                                                                part.endswith(f":{port}"))
                                           for part in cmdline):
            found[proc.pid] = proc
            try:
                found.update({c.pid: c for c in proc.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
    for proc in found.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(found.values()), timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def _ray_start(*args: str) -> None:
    """`ray start` with the test cluster's node settings: one CPU, loopback, a small store."""
    # The GCS health-checks each raylet every 3 s by default and marks it dead after 5 misses; at
    # 1 s a killed node is dead within about 5 s, while a busy live one still has 10 s to answer.
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                        "RAY_health_check_period_ms": "1000"}
    out = subprocess.run([str(Path(sys.executable).with_name("ray")), "start", *args,
                          "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                          "--object-store-memory", str(300 * 2 ** 20), "--disable-usage-stats"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def start_second_node(address: str) -> None:
    """The test cluster's second node, with its own resource `node2` (again after a test killed
    it)."""
    _ray_start("--address", address, "--resources", '{"node2": 1}')


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A 2-node Ray cluster on loopback: a head and a second node with its own resource
    (`node2`), one CPU each; ended at the end of the module. Yields the head's address."""
    import shutil
    import tempfile

    ray_or_fail()
    # QA_TEST_RAY_PORT: a fixed head port, where ports are shared out between users of the machine.
    port = int(os.environ.get("QA_TEST_RAY_PORT") or _free_port())
    # Short: Ray's unix sockets live under it and their paths are limited to 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="qa-ray-", dir="/tmp")
    try:
        _ray_start("--head", "--port", str(port), "--include-dashboard=false",
                   "--temp-dir", temp_dir)
        start_second_node(f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster(temp_dir, port)
        shutil.rmtree(temp_dir, ignore_errors=True)
