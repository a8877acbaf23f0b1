"""Faults around the index on disk: kill -9 mid-build, corrupt files, read-only folders, two builds.

Every scenario runs the real `qa` command (or the real build code in a child process that is
killed with SIGKILL) against copies of the session's seeds index in tmp dirs, and then checks
that the previous index is intact and still answers, or that the error names the file and the fix.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from qa.settings import Settings, UserError
from qa.build import build
from qa.store import FILES, _digest, load

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
QA_BIN = Path(sys.executable).with_name("qa")
QUESTION = "When was Dongguan's application approved?"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def qa_cmd(*args: str) -> list[str]:
    return [str(QA_BIN), *args] if QA_BIN.exists() else [sys.executable, "-m", "qa.cli", *args]


def run_qa(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(qa_cmd(*args), capture_output=True, text=True, timeout=timeout, env=ENV)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """A user error: non-zero exit, one `error:` line naming what is wrong and the fix."""
    err = proc.stderr
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in proc.stdout, err[-2000:]
    assert "error:" in err, err[-2000:]
    for needle in needles:
        assert needle in err, (needle, err[-2000:])


def snapshot(index_dir: Path) -> dict[str, str]:
    """CURRENT and the digest of every file of the live build."""
    current = (index_dir / "CURRENT").read_text()
    build_dir = index_dir / current.strip()
    return {"CURRENT": current, **{f: _digest(build_dir / f) for f in (*FILES, "manifest.json")}}


@pytest.fixture
def index_copy(seeds_index, tmp_path) -> Path:
    """A private copy of the session's seeds index, free to damage."""
    target = tmp_path / "index"
    shutil.copytree(seeds_index, target)
    return target


@pytest.fixture(scope="module")
def seed_answer(engine) -> dict:
    return engine.to_json(engine.ask(QUESTION))


def assert_intact(index_dir: Path, before: dict[str, str], encoder, expected: dict) -> None:
    """The index is the one from before, loads, and gives the same answer."""
    from qa.engine import QA

    assert snapshot(index_dir) == before
    qa = QA(load(index_dir), encoder, Settings(index_dir=index_dir))
    out = qa.to_json(qa.ask(QUESTION))
    assert out["answer"] == expected["answer"] and out["answer"] is not None
    assert [p["char_start"] for p in out["passages"]] == [p["char_start"] for p in expected["passages"]]


# ---------------------------------------------------------------- kill -9 during `qa build`

# Each stage makes the child process send SIGKILL to itself at one point of the build: a real
# `kill -9` at a known moment, where a timer would only hit a random one.
KILL_POINTS = {
    "while writing the new build's files": "store.make_faiss_index",
    "after writing, before the rename": "store._fsync_tree",
    "after the rename, before CURRENT is switched": "store._replace",
}
CHILD = textwrap.dedent("""
    import hashlib, os, signal, sys
    import numpy as np
    import qa.embed
    import qa.store as store
    from qa import cli

    class Fake:  # the model plays no part in where the build is killed; keep the child fast
        dim, max_seq_length = 8, 256
        def encode(self, texts, batch_size=64, progress=False):
            v = np.array([[b for b in hashlib.md5(t.encode()).digest()[:8]] for t in texts], "float32")
            return v / np.linalg.norm(v, axis=1, keepdims=True)
        def count_tokens(self, texts):
            return [len(t.split()) for t in texts]

    qa.embed.load_encoder = lambda name: Fake()
    name = sys.argv[1].rsplit(".", 1)[1]
    original = getattr(store, name)
    def killed(*args, **kwargs):
        if name == "_fsync_tree":
            original(*args, **kwargs)
        print("KILLING", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    setattr(store, name, killed)
    sys.exit(cli.main(sys.argv[2:]))
""")


@pytest.mark.parametrize("stage", list(KILL_POINTS))
def test_kill_9_inside_build_keeps_previous_index(stage, index_copy, encoder, seed_answer, tmp_path):
    before = snapshot(index_copy)
    other = tmp_path / "other"
    other.mkdir()
    (other / "one.txt").write_text("A different corpus\n\nThis article is not one of the seeds at all.\n")
    proc = subprocess.run([sys.executable, "-c", CHILD, KILL_POINTS[stage], "build", str(other),
                           "--index", str(index_copy), "--quiet"],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == -signal.SIGKILL and "KILLING" in proc.stdout, proc.stderr[-2000:]
    assert_intact(index_copy, before, encoder, seed_answer)
    # The next build succeeds and clears what the killed one left behind.
    build([other], Settings(index_dir=index_copy), encoder=encoder, progress=False)
    assert [p.name for p in (index_copy / "builds").iterdir()] == \
        [(index_copy / "CURRENT").read_text().strip().split("/")[1]]
    assert list(load(index_copy).articles) == ["one"]


@pytest.mark.slow
def test_kill_9_from_outside_during_qa_build(index_copy, encoder, seed_answer, tmp_path):
    """`kill -9` of a real `qa build` process, sent while it embeds a corpus bigger than the seeds."""
    before = snapshot(index_copy)
    corpus = synthetic_corpus(tmp_path / "big", articles=25, seed=1)
    proc = subprocess.Popen(qa_cmd("build", str(corpus), "--index", str(index_copy)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + 240
    # The progress bar shows once embedding has started: the build holds the lock by then.
    while time.monotonic() < deadline and proc.poll() is None and not lock_holders(index_copy):
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the build ended before it could be killed; enlarge the corpus"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert_intact(index_copy, before, encoder, seed_answer)
    assert not lock_holders(index_copy), "the kernel drops the flock of a killed process"


# ---------------------------------------------------------------- corrupt index files

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(max(64, path.stat().st_size)))


DAMAGE = {"truncated": _truncate, "byte flipped": _flip, "empty": _empty, "random bytes": _garbage,
          "deleted": Path.unlink}
TARGETS = ["CURRENT", "manifest.json", "index.faiss", "passages.jsonl", "articles.jsonl",
           "bm25/params.index.json", "bm25/vocab.index.json", "bm25/data.csc.index.npy",
           "bm25/indices.csc.index.npy"]


def _target(index_dir: Path, name: str) -> Path:
    if name == "CURRENT":
        return index_dir / "CURRENT"
    return index_dir / (index_dir / "CURRENT").read_text().strip() / name


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("name", TARGETS)
def test_corrupt_index_file_is_named_with_the_fix(name, damage, index_copy):
    path = _target(index_copy, name)
    DAMAGE[damage](path)
    proc = run_qa("ask", QUESTION, "--index", str(index_copy))
    named = "no index in" if (name, damage) == ("CURRENT", "deleted") else name.split("/")[0]
    assert_clean_error(proc, named, f"qa build --index {index_copy}")
    assert proc.stdout == ""


@pytest.mark.parametrize("name", ["passages.jsonl", "articles.jsonl", "index.faiss",
                                  "bm25/params.index.json", "bm25/data.csc.index.npy"])
def test_corrupt_file_with_matching_checksum_is_still_named(name, index_copy):
    """Second line of defence: a file that passes its checksum but does not parse."""
    path = _target(index_copy, name)
    _truncate(path)
    manifest_path = _target(index_copy, "manifest.json")
    manifest = json.loads(manifest_path.read_text())
    top = name.split("/")[0]
    manifest["files"][top] = _digest(_target(index_copy, top))
    manifest_path.write_text(json.dumps(manifest))
    proc = run_qa("ask", QUESTION, "--index", str(index_copy))
    assert_clean_error(proc, top, "corrupt", f"qa build --index {index_copy}")


@pytest.mark.parametrize("manifest", [[], {"format_version": 1}, "null", {"files": []}])
def test_manifest_of_the_wrong_shape(manifest, index_copy):
    path = _target(index_copy, "manifest.json")
    path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    assert_clean_error(run_qa("ask", QUESTION, "--index", str(index_copy)), "manifest.json", "qa build")


def test_current_cannot_point_outside_the_index(index_copy, tmp_path):
    """CURRENT naming a folder outside builds/ is refused, even if that folder holds an index."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(index_copy / (index_copy / "CURRENT").read_text().strip(), elsewhere)
    (index_copy / "CURRENT").write_text(f"../../{elsewhere.name}\n")
    assert_clean_error(run_qa("ask", QUESTION, "--index", str(index_copy)), "CURRENT", "qa build")


# ---------------------------------------------------------------- an index folder we cannot write

def _read_only_mount_works(folder: Path) -> bool:
    probe = subprocess.run(["unshare", "--mount", "sh", "-c",
                            'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
                            '! touch "$1/.probe" 2>/dev/null', "sh", str(folder)],
                           capture_output=True, timeout=30)
    return probe.returncode == 0 and not (folder / ".probe").exists()


@pytest.mark.slow
def test_read_only_index_folder_refuses_to_build_and_still_answers(index_copy, encoder, seed_answer):
    """A read-only folder, read-only for root too.

    Tests run as root in CI, where `chmod a-w` stops nothing, so the folder is bind-mounted
    read-only in a private mount namespace (`unshare --mount`): writes fail with EROFS for any user.
    As another user `chmod -R a-w` is enough.
    """
    before = snapshot(index_copy)
    args = qa_cmd("build", str(SEEDS), "--index", str(index_copy), "--quiet")
    if os.geteuid() == 0:
        if not shutil.which("unshare") or not _read_only_mount_works(index_copy):
            pytest.skip("root without mount namespaces: no way to make a folder read-only for root")
        args = ["unshare", "--mount", "sh", "-c", 'd="$1"; shift; mount --bind "$d" "$d" && '
                'mount -o remount,bind,ro "$d" && exec "$@"', "sh", str(index_copy), *args]
    else:
        for p in [index_copy, *index_copy.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=ENV)
    finally:
        for p in [index_copy, *index_copy.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert_clean_error(proc, f"cannot write the index to {index_copy}", "--index")
    assert_intact(index_copy, before, encoder, seed_answer)
    if os.geteuid() == 0:  # reading needs no write access: ask through the read-only mount
        ask = subprocess.run(["unshare", "--mount", "sh", "-c", 'd="$1"; shift; mount --bind "$d" "$d"'
                              ' && mount -o remount,bind,ro "$d" && exec "$@"', "sh", str(index_copy),
                              *qa_cmd("ask", QUESTION, "--index", str(index_copy), "--json")],
                             capture_output=True, text=True, timeout=300, env=ENV)
        assert ask.returncode == 0, ask.stderr[-2000:]
        assert json.loads(ask.stdout)["answer"] == seed_answer["answer"]


@pytest.mark.parametrize("where", ["a file in place of the folder", "under /proc"])
def test_unwritable_index_path_is_a_clear_error(where, tmp_path, encoder, capsys):
    """Paths that refuse writes even to root, through the real CLI code (in-process)."""
    from qa import cli

    if where == "under /proc":
        target = Path("/proc/self/qa-index")
    else:
        target = tmp_path / "index"
        target.write_text("not a folder")
    assert cli.main(["build", str(SEEDS), "--index", str(target), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"cannot write the index to {target}" in err and "--index" in err, err


# ---------------------------------------------------------------- two builds at once

def lock_holders(index_dir: Path) -> list[str]:
    """Processes holding a flock on index_dir/.lock, from /proc/locks."""
    lock = index_dir / ".lock"
    if not lock.exists():
        return []
    inode = lock.stat().st_ino
    return [line for line in Path("/proc/locks").read_text().splitlines()
            if "FLOCK" in line and line.split()[5].endswith(f":{inode}")]


def synthetic_corpus(folder: Path, articles: int, seed: int) -> Path:
    """A corpus.jsonl of articles made of shuffled seed paragraphs, each article distinct."""
    rng = random.Random(seed)
    paragraphs = [line.strip() for f in sorted(SEEDS.glob("*.txt"))
                  for line in f.read_text().splitlines() if len(line.split()) > 12]
    folder.mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for n in range(articles):
            body = rng.sample(paragraphs, k=min(8, len(paragraphs)))
            out.write(json.dumps({"_id": f"s{seed}-{n}", "title": f"Report {seed}-{n}",
                                  "text": "\n".join(body)}) + "\n")
    return folder


def _doc_ids(index_dir: Path) -> set[str]:
    return set(load(index_dir).articles)


WARM_BUILD = textwrap.dedent("""
    import sys
    from qa import cli
    from qa.embed import load_encoder
    load_encoder("all-MiniLM-L6-v2")  # cached: the build below reaches its lock within a second
    print("READY", flush=True)
    sys.stdin.readline()
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_second_concurrent_build_refuses_and_index_is_never_a_mix(index_copy, tmp_path, encoder):
    """Two real `qa build` runs on one folder: the second, started while the first holds the
    lock, refuses at once; the index is then the first corpus, whole."""
    first = synthetic_corpus(tmp_path / "first", articles=15, seed=1)
    second = tmp_path / "second"
    second.mkdir()
    (second / "lone.txt").write_text("The second corpus\n\nIt holds one article and nothing else.\n")
    # The second build loads its model first and waits: loading takes longer than the first
    # build holds the lock, so a cold start would arrive after it is released.
    b = subprocess.Popen([sys.executable, "-c", WARM_BUILD, "build", str(second), "--index",
                          str(index_copy), "--quiet"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert b.stdout.readline().strip() == "READY", b.stderr.read()[-2000:]
    a = subprocess.Popen(qa_cmd("build", str(first), "--index", str(index_copy), "--quiet"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 240
    while not lock_holders(index_copy) and a.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert a.poll() is None, "the first build ended before the second started; enlarge the corpus"
    out, err = b.communicate("go\n", timeout=120)
    assert a.poll() is None, "the first build ended before the second reached the lock"
    assert_clean_error(subprocess.CompletedProcess(b.args, b.returncode, out, err),
                       "another `qa build` is writing", "wait for it to finish")
    out, err = a.communicate(timeout=300)
    assert a.returncode == 0, err[-2000:]
    # The index is the first corpus, whole: checksums, counts and documents agree.
    index = load(index_copy)
    assert set(index.articles) == {f"s1-{n}" for n in range(15)}
    assert index.manifest.sources == (str(first.resolve()),)
    assert len(index.passages) == index.manifest.passages == index.faiss_index.ntotal
    assert {p.doc_id for p in index.passages} == set(index.articles)
    assert len(list((index_copy / "builds").iterdir())) == 1
    # Once the first is done, the second corpus builds normally.
    build([second], Settings(index_dir=index_copy), encoder=encoder, progress=False)
    assert set(load(index_copy).articles) == {"lone"}


def test_readers_never_see_a_mix_while_builds_replace_the_index(tmp_path, fake_encoder):
    """load() in a loop while another thread rebuilds the folder from two corpora in turn."""
    corpora = [synthetic_corpus(tmp_path / f"c{seed}", articles=6, seed=seed) for seed in (1, 2)]
    expected = [{f"s{seed}-{n}" for n in range(6)} for seed in (1, 2)]
    settings = Settings(index_dir=tmp_path / "index")
    build([corpora[0]], settings, encoder=fake_encoder, progress=False)
    stop, errors, builds = threading.Event(), [], [0]

    def rebuild():
        try:
            while not stop.is_set() and builds[0] < 20:
                build([corpora[(builds[0] + 1) % 2]], settings, encoder=fake_encoder, progress=False)
                builds[0] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            stop.set()

    thread = threading.Thread(target=rebuild)
    thread.start()
    loads = 0
    try:
        while not stop.is_set():
            try:
                index = load(settings.index_dir)
            except UserError as e:
                errors.append(e)
                break
            ids = set(index.articles)
            assert ids in expected
            assert {p.doc_id for p in index.passages} == ids
            assert len(index.passages) == index.faiss_index.ntotal == index.manifest.passages
            loads += 1
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[0]
    assert builds[0] >= 5 and loads >= 5, (builds[0], loads)
