"""The DDP trainer on 2 gloo processes (normlab.engines.torch.ddp) against one process.

* per-worker BN, P = 2, batch B = 8 == ghost BN with groups of N = 4 in one process (the GN
  paper's per-GPU statistics): losses, weights, running statistics, eval logits;
* sync_bn == plain BN over the whole batch in one process;
* state() / load_state() mid-run, then continuing == the uninterrupted run, bit for bit;
* a worker's error reaches the parent as one line and stops every worker;
* the parent killed with SIGKILL leaves no worker (and no scratch folder) behind.

Tolerance (rtol 1e-5, atol 1e-6, float32): the two sides compute the same sums in a different
order -- the gradient as the mean of two half-batch gradients (DDP's all-reduce) vs one sum,
the running statistics as the mean of two EMAs vs the EMA of the groups' mean -- so each step
differs by a few float32 ulps (2^-24 ~ 6e-8 relative). Measured over these 10 steps (both
tests): losses within 2.4e-7, weights 1.8e-7, eval logits 4.2e-7, running statistics 1.4e-6
absolute on values up to 5.5 (2.6e-7 relative). A semantic difference is far larger: with the
running-statistics averaging removed, the eval logits after step 5 are up to 0.047 off (checked
when this test was written).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from normlab.engines import make_trainer
from normlab.runner.cnn import cnn_spec

P, BATCH, STEPS, LR, INIT_STD, SEED = 2, 8, 10, 0.2, 0.1, 7
TOL = {"rtol": 1e-5, "atol": 1e-6}


def spec(virtual: int | None = None):
    return cnn_spec((8, 8), 10, "batch", channels=(4,), hidden=8, virtual=virtual)


def data():
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(BATCH * STEPS, 1, 8, 8)) * 2 + 1).astype(np.float32)
    return x, rng.integers(0, 10, len(x))


def lr_at(step: int) -> float:
    return LR * (1 + math.cos(math.pi * step / STEPS)) / 2   # exercises set_lr on the workers


def run(trainer, x, y, steps: range, evals: dict | None = None) -> list[float]:
    """Train ``steps``; after step 4, an eval (its statistics sync must not change the run)."""
    losses = []
    for step in steps:
        trainer.set_lr(lr_at(step))
        sl = slice(step * BATCH, (step + 1) * BATCH)
        losses.append(trainer.train_step(x[sl], y[sl]))
        if step == 4 and evals is not None:
            evals["mid"] = trainer.forward_eval(x, tap=4)
    return losses


def assert_states_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        if k.endswith("num_batches_tracked"):
            assert int(got[k]) == int(v) == STEPS, k
        else:
            np.testing.assert_allclose(got[k], v, **TOL, err_msg=k)


@pytest.fixture(scope="module")
def per_worker(torch):
    trainer = make_trainer("torch", spec(), INIT_STD, np.random.default_rng(SEED), LR,
                           workers=P)
    yield trainer, trainer.state()
    pids, scratch = trainer.pids, trainer._pool.scratch
    trainer.close()
    assert all(gone(pid) for pid in pids) and not os.path.exists(scratch)   # a clean close


def test_per_worker_bn_equals_ghost_bn_in_one_process(torch, per_worker):
    ddp, initial = per_worker
    ddp.load_state(initial)
    ghost = make_trainer("torch", spec(virtual=BATCH // P), INIT_STD,
                         np.random.default_rng(SEED), LR)
    for k, v in ghost.state().items():   # the same weights, drawn once by the NumPy builder
        np.testing.assert_array_equal(initial[k], v, err_msg=k)
    x, y = data()
    ev_ddp, ev_ghost = {}, {}
    np.testing.assert_allclose(run(ddp, x, y, range(STEPS), ev_ddp),
                               run(ghost, x, y, range(STEPS), ev_ghost), **TOL)
    for a, b in zip(ev_ddp["mid"], ev_ghost["mid"], strict=True):
        np.testing.assert_allclose(a, b, **TOL)
    assert_states_close(ddp.state(), ghost.state())
    np.testing.assert_allclose(ddp.forward_eval(x)[0], ghost.forward_eval(x)[0], **TOL)


def test_state_round_trip_mid_run_continues_exactly(torch, per_worker):
    ddp, initial = per_worker
    x, y = data()
    ddp.load_state(initial)
    first = run(ddp, x, y, range(5))
    checkpoint = ddp.state()
    rest = run(ddp, x, y, range(5, STEPS))
    final, logits = ddp.state(), ddp.forward_eval(x)[0]
    run(ddp, x, y, range(3))                    # move away, then resume from the checkpoint
    ddp.load_state(checkpoint)
    assert run(ddp, x, y, range(5, STEPS)) == rest
    resumed = ddp.state()
    for k, v in final.items():
        np.testing.assert_array_equal(resumed[k], v, err_msg=k)
    np.testing.assert_array_equal(ddp.forward_eval(x)[0], logits)
    assert len(first) == 5


def test_sync_bn_equals_whole_batch_bn_and_a_worker_error_stops_all(torch):
    from normlab.engines.torch.ddp import WorkerError

    x, y = data()
    plain = make_trainer("torch", spec(), INIT_STD, np.random.default_rng(SEED), LR)
    with make_trainer("torch", spec(), INIT_STD, np.random.default_rng(SEED), LR, workers=P,
                      sync_bn=True) as synced:
        np.testing.assert_allclose(run(synced, x, y, range(STEPS)),
                                   run(plain, x, y, range(STEPS)), **TOL)
        assert_states_close(synced.state(), plain.state())
        pids = synced.pids
        bad = y[:BATCH].copy()
        bad[-1] = 99                             # a label out of range, in worker 1's slice
        with pytest.raises(WorkerError, match=r"^DDP worker 1: IndexError: Target 99 is out "
                                              r"of bounds\.$"):
            synced.train_step(x[:BATCH], bad)
        assert all(gone(pid) for pid in pids)   # worker 0 was blocked in a collective: killed
        with pytest.raises(WorkerError, match="closed"):
            synced.set_lr(0.1)


PARENT = """
import numpy as np
from normlab.runner.cnn import cnn_spec
from normlab.engines import make_trainer
spec = cnn_spec((8, 8), 10, "batch", channels=(4,), hidden=8)
t = make_trainer("torch", spec, 0.1, np.random.default_rng(0), 0.1, workers=2)
x = np.random.default_rng(1).normal(size=(8, 1, 8, 8)).astype(np.float32)
y = np.arange(8) % 10
t.train_step(x, y)
print(t._pool.scratch, flush=True)
while True:
    t.train_step(x, y)
"""


def gone(pid: int) -> bool:
    """Exited (a zombie counts: it runs nothing and only waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_parent_killed_with_sigkill_leaves_no_worker(torch):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        scratch = parent.stdout.readline().strip()   # the workers' file store is in it
        assert os.path.isdir(scratch), scratch
        # the P workers, and multiprocessing's resource tracker (it leaves with the last of
        # them): none may outlive the parent
        workers = children(parent.pid)
        assert len(workers) >= P, workers
        time.sleep(0.2)                         # mid-training: in a collective or waiting
        parent.send_signal(signal.SIGKILL)
        assert parent.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 5.0
        while not all(gone(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [w for w in workers if not gone(w)] == []
        assert not os.path.exists(scratch)      # removed by the orphans, not left in /tmp
    finally:
        if parent.poll() is None:
            parent.kill()


TORCHRUN_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
import numpy as np
from normlab.engines import make_trainer
from tests.engines.test_torch_ddp import INIT_STD, LR, SEED, STEPS, data, run, spec

trainer = make_trainer("torch", spec(), INIT_STD, np.random.default_rng(SEED), LR)
x, y = data()
evals = {{}}
losses = run(trainer, x, y, range(STEPS), evals)
np.savez({out!r} + f"/rank{{trainer.rank}}.npz", losses=losses, mid=evals["mid"][0],
         **trainer.state())
trainer.close()
"""


def test_under_torchrun_each_process_is_a_replica_equal_to_the_spawned_workers(
        torch, per_worker, tmp_path):
    """The documented torchrun use: every process runs the same script (workers=1); the
    launcher's 2 processes give exactly what 2 workers started by the trainer give."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT.format(repo=repo, out=str(tmp_path)))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={P}", str(script)], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(P)]
    ddp, initial = per_worker
    ddp.load_state(initial)
    x, y = data()
    evals = {}
    want = {"losses": np.array(run(ddp, x, y, range(STEPS), evals)), "mid": evals["mid"][0],
            **ddp.state()}
    for got in ranks:
        assert set(got) == set(want)
        for k, v in want.items():
            np.testing.assert_array_equal(got[k], v, err_msg=k)
