"""Training speed of the experiments' own models: NumPy engine vs PyTorch eager, one thread each.

Models (what ``normlab reproduce`` spends its time on), each trained the way its experiment
trains it, on random data of the experiment's shapes:

* ``conv-bn CNN``: conv3x3 16 -> BN -> ReLU -> maxpool2 -> conv3x3 32 -> BN -> ReLU -> maxpool2
  -> Linear on 14x14 images, batch 60, plain SGD (``experiments/conv_bn.py``);
* ``batch-size CNN``: the same plus Linear 128 -> BN -> ReLU before the output, batch 32
  (``experiments/batch_size.py``, BN over the whole batch);
* ``conv-bn CNN eval``: the eval forward of the conv-bn CNN (with BN) on 400 images, what
  each of its ~24 validation passes per quick run is; "steps" are forwards, after three
  training steps that move the running statistics off their initial values;
* ``rnn-norm LSTM/<norm>``: LSTM (hidden 64) over 28 steps of 28 inputs + Linear head on the
  last step, batch 64, global gradient norm clipped at 1, SGD (``experiments/rnn_norm.py``),
  for each of its four norms. torch: ``torch.nn.LSTM`` for "none", else ``torch_lstm.py``.

One step = forward, loss, backward, (clip,) SGD update, zero_grad, as the experiment runs it;
the NumPy engine's steps are its trainers' ``train_step`` itself (``engines.numpy``'s
NumpyTrainer, ``engines.numpy_lstm``'s NumpyLstmTrainer), torch's CNN step is
``TorchTrainer.train_step`` on the twin built from the same weights. Both engines run with
one thread (as ``normlab reproduce``'s workers do), alternating round by round; the ratio is
of the medians. ``layer_shares`` times every layer's forward and backward of the NumPy engine
(perf_counter around each call) and reports the share of the step per layer type.

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_models.py \
        [--steps 40] [--rounds 5] [--clock wall|cpu] [--json PATH]

``normlab bench`` runs this file in a subprocess with those variables set (OpenBLAS reads its
thread count when NumPy loads), so both engines get the one thread a reproduce worker has.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

IMAGE, CLASSES = (14, 14), 10
SEQ_STEPS, SEQ_INPUTS, HIDDEN = 28, 28, 64
CNNS = {"conv-bn CNN": dict(batch=60, hidden=None), "batch-size CNN": dict(batch=32, hidden=128)}
EVALS = {"conv-bn CNN eval": dict(images=400)}
LSTM_NORMS = ("none", "layer", "recurrent_batch", "sequence_batch")
MODELS = (*CNNS, *EVALS, *(f"rnn-norm LSTM/{n}" for n in LSTM_NORMS))
Step = Callable[[int], object]


def _one_thread() -> None:
    """One BLAS/torch thread, as the reproduce workers run (OPENBLAS_NUM_THREADS is read when
    NumPy loads, so a caller that wants it single-threaded sets it before importing)."""
    import torch
    torch.set_num_threads(1)


def _images(batch: int, seed: int = 0, n: int = 8):
    rng = np.random.default_rng(seed)
    return [(rng.random((batch, 1, *IMAGE), dtype=np.float32),
             rng.integers(0, CLASSES, batch)) for _ in range(n)]


def _cnn_trainer(name: str, engine: str):
    """The trainer of CNNS[name] with BN, the same initial weights on either engine."""
    from normlab.engines import make_trainer
    from normlab.runner.cnn import cnn_spec

    spec = cnn_spec(IMAGE, CLASSES, "batch", hidden=CNNS[name]["hidden"])
    return make_trainer(engine, spec, 0.01, np.random.default_rng(0), 0.1)


def _cnn_step(name: str, engine: str) -> tuple[Step, object]:
    trainer = _cnn_trainer(name, engine)
    data = _images(CNNS[name]["batch"])

    def step(i: int) -> float:
        return trainer.train_step(*data[i % len(data)])

    return step, trainer.model


def _cnn_eval(name: str, engine: str) -> tuple[Step, object]:
    trainer = _cnn_trainer("conv-bn CNN", engine)
    for x, y in _images(CNNS["conv-bn CNN"]["batch"], n=3):
        trainer.train_step(x, y)
    images = _images(EVALS[name]["images"], seed=1, n=1)[0][0]

    def step(i: int) -> np.ndarray:
        return trainer.forward_eval(images)[0]

    return step, trainer.model


def _sequences(seed: int = 0, n: int = 8):
    rng = np.random.default_rng(seed)
    return [(rng.random((64, SEQ_STEPS, SEQ_INPUTS), dtype=np.float32),
             rng.integers(0, CLASSES, 64)) for _ in range(n)]


def _numpy_lstm_step(norm: str) -> tuple[Step, object]:
    from normlab.engines.numpy_lstm import NumpyLstmTrainer, build_lstm
    from normlab.experiments.rnn_norm import H0_NOISE
    from normlab.runner.rnn_train import initial_state

    rng = np.random.default_rng(0)
    lstm, head = build_lstm(SEQ_INPUTS, HIDDEN, CLASSES, norm, rng)
    trainer = NumpyLstmTrainer(lstm, head, "sgd", 0.5, 1.0)
    data, noise = _sequences(), H0_NOISE.get(norm, 0.0)

    def step(i: int) -> float:
        x, y = data[i % len(data)]
        return trainer.train_step(x, y, initial_state(noise, len(x), HIDDEN, rng))

    return step, (lstm, head)


def _torch_lstm_step(norm: str) -> tuple[Step, object]:
    import torch

    twin = _sibling("torch_lstm")
    torch.manual_seed(0)
    lstm = twin.make_lstm(SEQ_INPUTS, HIDDEN, norm, SEQ_STEPS)
    head = torch.nn.Linear(HIDDEN, CLASSES)
    params = list(lstm.parameters()) + list(head.parameters())
    opt, data = torch.optim.SGD(params, lr=0.5), _sequences()
    noise = 0.1 if norm == "recurrent_batch" else 0.0

    def step(i: int) -> float:
        x, y = (torch.from_numpy(a) for a in data[i % len(data)])
        hx = None
        if noise:
            hx = (torch.randn(1, len(x), HIDDEN) * noise, torch.zeros(1, len(x), HIDDEN))
        out, _ = lstm(x, hx)
        loss = torch.nn.functional.cross_entropy(head(out[:, -1]), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return loss.item()

    return step, lstm


def _sibling(name: str):
    """A module from this folder (normlab.bench loads this file by path, so it is not a package)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_normlab_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_step(model: str, engine: str) -> tuple[Step, object]:
    """(step(i) -> loss, the model) for one of MODELS on "numpy" or "torch"."""
    if model in CNNS:
        return _cnn_step(model, engine)
    if model in EVALS:
        return _cnn_eval(model, engine)
    norm = model.rsplit("/", 1)[1]
    return _numpy_lstm_step(norm) if engine == "numpy" else _torch_lstm_step(norm)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _rate(step: Step, steps: int, start: int = 0, clock=time.perf_counter) -> float:
    t0 = clock()
    for i in range(start, start + steps):
        step(i)
    return steps / (clock() - t0)


def steps_per_second(model: str, steps: int, rounds: int, engines=("numpy", "torch"),
                     clock: str = "wall") -> dict[str, list[float]]:
    """Training steps/s of every round per engine, the engines alternating round by round;
    ``clock="cpu"`` divides by the process's CPU time instead of wall time (both engines run one
    thread, so on a machine shared with other jobs it counts only this process's work)."""
    _one_thread()
    steppers = {e: make_step(model, e)[0] for e in engines}
    for step in steppers.values():   # warm-up: numba compile or cache load, allocator
        for i in range(3):
            step(i)
    rates: dict[str, list[float]] = {e: [] for e in engines}
    for r in range(rounds):
        for e in engines:
            rates[e].append(_rate(steppers[e], steps, 3 + r * steps, CLOCKS[clock]))
    return rates


# -- share of time per layer type (NumPy engine) ---------------------------------------------
def _timed(obj, method: str, key: str, totals: dict[str, float], active: set[str]) -> None:
    """Replace ``obj.method`` by a wrapper adding its wall time to ``totals[key]``; a call made
    while another of the same key runs (a norm's forward_seq calling its forward_step) is
    inside that one's time already and is not counted again."""
    inner = getattr(obj, method)

    def wrapper(*args, **kwargs):
        if key in active:
            return inner(*args, **kwargs)
        active.add(key)
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0
            active.discard(key)

    object.__setattr__(obj, method, wrapper)


def layer_shares(model: str, steps: int) -> dict[str, float]:
    """Share of the NumPy engine's training step per layer type (forward + backward), the rest
    (loss, gradient clipping, SGD, Python between the layers) as "other"."""
    step, net = make_step(model, "numpy")
    totals: dict[str, float] = defaultdict(float)
    active: set[str] = set()
    if model in CNNS or model in EVALS:
        for layer in net:
            for method in ("forward", "backward", "backward_params"):
                _timed(layer, method, type(layer).__name__, totals, active)
        if model in EVALS:   # BN -> ReLU -> max-pool groups that run fused skip their layers
            from normlab import kernels

            _timed(kernels.load("fused"), "relu_max_pool_2x2", "BN-ReLU-MaxPool2d fused",
                   totals, active)
    else:
        lstm, head = net
        for method in ("forward", "backward", "backward_params"):
            _timed(lstm, method, "LSTM", totals, active)
            _timed(head, method, "Linear", totals, active)
        for norm in (lstm.norm_ih, lstm.norm_hh, lstm.norm_c):
            if norm is not None:
                for method in ("forward_seq", "backward_seq", "forward_step", "backward_step"):
                    _timed(norm, method, "LSTM norms", totals, active)
    for i in range(3):
        step(i)
    totals.clear()
    t0 = time.perf_counter()
    for i in range(3, 3 + steps):
        step(i)
    total = time.perf_counter() - t0
    if "LSTM norms" in totals:   # the norms run inside the LSTM's forward and backward
        totals["LSTM"] -= totals["LSTM norms"]
    shares = {k: v / total for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def model_rows(steps: int, rounds: int, models=MODELS, clock: str = "wall") -> list[dict]:
    """One dict per model: steps/s per round for both engines, medians, ratio, shares."""
    rows = []
    for model in models:
        lstm = model.startswith("rnn-norm")
        n = max(1, steps // 4) if lstm else steps   # an LSTM step costs ~4 CNN steps
        rates = steps_per_second(model, n, rounds, clock=clock)
        medians = {e: statistics.median(v) for e, v in rates.items()}
        rows.append({"model": model, "steps": n, "rounds": rounds, "clock": clock,
                     "steps_per_s": rates,
                     "numpy_steps_per_s": medians["numpy"],
                     "torch_steps_per_s": medians["torch"],
                     "ratio": medians["numpy"] / medians["torch"],
                     "shares": layer_shares(model, n)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="time steps by wall clock or by this process's CPU time")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = model_rows(args.steps, args.rounds, args.models, args.clock)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    for row in rows:
        rates = row["steps_per_s"]
        print(f"{row['model']:28s} numpy {row['numpy_steps_per_s']:7.1f} steps/s "
              f"[{min(rates['numpy']):.0f}..{max(rates['numpy']):.0f}]  torch "
              f"{row['torch_steps_per_s']:7.1f} [{min(rates['torch']):.0f}.."
              f"{max(rates['torch']):.0f}]  ratio {row['ratio']:.2f}x")
        print("    " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in row["shares"].items()))


if __name__ == "__main__":
    main()
