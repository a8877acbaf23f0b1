"""Two ONNX Runtime levers on the seeds' latency, measured against what ships:

- spinning: ONNX Runtime's waiting threads spin instead of sleeping (qa.onnxrt.Session turns it
  off); each setting answers every seeds question in a fresh process, the settings alternating.
- fusion: the reader exported with eager attention and fused by onnxruntime.transformers'
  optimizer (Attention, SkipLayerNormalization, BiasGelu), then quantized to int8 as the shipped
  reader is; timed on the pair lists the engine hands the reader for the seeds questions, every
  variant on every list in turn, with how far its logits move.

Usage: PYTHONPATH=$PWD python scripts/ort_options.py [spinning|fusion] [--rounds 2]
  (the seeds index in index/, as `qa build` makes it)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "tests" / "questions.jsonl"


def questions() -> list[str]:
    return [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line]


def one_setting(spin: str) -> None:
    """In a child process: every seeds question answered with spinning `spin`; prints p50 ms."""
    import qa.onnxrt as onnxrt

    original = onnxrt.Session.__init__

    def init(self, path, threads=0):
        original(self, path, threads)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    onnxrt.Session.__init__ = init
    from qa.bench import percentile, timed
    from qa.engine import QA

    qa = QA.open()
    print(percentile(timed(qa.ask, questions(), 330), 50) * 1000)


def spinning(rounds: int) -> None:
    got: dict[str, list[float]] = {"0": [], "1": []}
    for _ in range(rounds):
        for spin in got:
            out = subprocess.run([sys.executable, __file__, "--child", spin], capture_output=True,
                                 text=True, check=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
            got[spin].append(float(out.stdout.split()[-1]))
    for spin, ms in got.items():
        print(f"spinning {'on ' if spin == '1' else 'off'}: seeds answer p50 "
              f"{', '.join(f'{m:.1f}' for m in ms)} ms (load average {os.getloadavg()[0]:.1f})")


def fusion(rounds: int) -> None:
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel

    from qa.engine import QA
    from qa.reader import PROBE

    qa = QA.open()
    reader = qa.picker.reader
    calls = []
    score = reader.score
    reader.score = lambda q, pairs: calls.append((q, pairs)) or score(q, pairs)
    for q in questions():
        qa.ask(q)
    feeds = [reader._encode(*c) for c in calls]
    load = AutoModel.from_pretrained
    AutoModel.from_pretrained = lambda *a, **k: load(*a, attn_implementation="eager", **k)
    model = reader._torch_model()
    probe = reader._encode(*PROBE)
    names = list(probe)
    tmp = Path(tempfile.mkdtemp())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(torch.from_numpy(probe[n]) for n in names),
                          str(tmp / "eager.onnx"), dynamo=False, opset_version=17,
                          input_names=names, output_names=["output"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
    fused = optimizer.optimize_model(str(tmp / "eager.onnx"), model_type="bert", num_heads=12,
                                     hidden_size=384)
    print("fused:", {k: v for k, v in fused.get_fused_operator_statistics().items() if v})
    fused.save_model_to_file(str(tmp / "fused.onnx"))
    variants = {"shipped (int8 MatMul)": str(reader.onnx_path)}
    for name, ops in (("fused, int8 MatMul and Attention", ["MatMul", "Attention"]),
                      ("fused, int8 everything", None)):
        path = tmp / f"{len(variants)}.onnx"
        quantize_dynamic(str(tmp / "fused.onnx"), str(path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=ops, per_channel=True, reduce_range=True,
                         extra_options={"DefaultTensorType": 1})
        variants[name] = str(path)
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {k: ort.InferenceSession(v, options, providers=["CPUExecutionProvider"])
                for k, v in variants.items()}
    seconds: dict[str, list[float]] = {k: [] for k in sessions}
    logits: dict[str, list[np.ndarray]] = {k: [] for k in sessions}
    for r in range(rounds):
        for feed in feeds:
            for name, session in sessions.items():
                started = time.perf_counter()
                out = session.run(None, feed)[0].ravel()
                seconds[name].append(time.perf_counter() - started)
                if r == 0:
                    logits[name].append(out)
    base = logits["shipped (int8 MatMul)"]
    print(f"{len(feeds)} pair lists, {rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    for name in sessions:
        gap = max(float(np.abs(a - b).max()) for a, b in zip(logits[name], base))
        moved = np.mean([a.argmax() != b.argmax() for a, b in zip(logits[name], base)])
        print(f"{name}: p50 {np.median(seconds[name]) * 1000:.2f} ms, logits within {gap:.2f} "
              f"of the shipped, best pair changed in {moved:.1%} of lists")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        one_setting(sys.argv[2])
        sys.exit()
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["spinning", "fusion"])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    spinning(args.rounds) if args.what == "spinning" else fusion(args.rounds)
