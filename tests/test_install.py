"""The package works outside the checkout: its wheel, installed into a fresh venv, builds an index
of the bundled seeds and answers from another folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def run(args: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900,
                          **kwargs)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_wheel_installs_and_answers_from_another_folder(tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "-w", dist, ROOT])
    [wheel] = dist.glob("qa-*.whl")

    # A fresh venv that sees the test venv's dependencies (torch, the model...) through a plain
    # path entry, so nothing is downloaded, but not its editable install of this checkout.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                    ).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QA_", "PYTHON"))}
    env["HF_HUB_OFFLINE"] = "1"
    where = run([python, "-c", "import qa, qa.settings as s; print(qa.__file__); print(s.SEEDS)"],
                cwd=elsewhere, env=env).stdout.split()
    assert all(str(site) in line for line in where), where  # the wheel's copy, not the checkout
    # qa bench and python -m qa.soak time the packaged questions, not the checkout's tests/
    asked = run([python, "-c", "from qa.bench import bench_questions; from qa.settings import "
                 "QUESTIONS; print(QUESTIONS); print(len(bench_questions(None)))"],
                cwd=elsewhere, env=env).stdout.split()
    assert str(site) in asked[0] and int(asked[1]) == len((ROOT / "tests" / "questions.jsonl")
                                                          .read_text().splitlines()), asked
    run([venv / "bin" / "qa", "build", "--quiet"], cwd=elsewhere, env=env)  # the packaged seeds
    assert (elsewhere / "index" / "CURRENT").is_file()  # ./index, not inside site-packages
    out = json.loads(run([venv / "bin" / "qa", "ask", "When was Dongguan's application approved?",
                          "--json"], cwd=elsewhere, env=env).stdout)
    assert out["answer"]["doc_id"] == "003_fa579be8430ff762", out["answer"]
    assert "April 2018" in out["answer"]["text"]
