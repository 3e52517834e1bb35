"""Device selection, the repeatability settings, and the torch trainer on an explicit device.

No GPU here: CUDA refusal is tested where ``torch.cuda.is_available()`` is False, and the
selection logic with it monkeypatched True (nothing is moved to the "GPU" in those tests).
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab.engines import make_trainer
from normlab.runner.cnn import cnn_spec

SPEC = cnn_spec((8, 8), 10, "batch", channels=(4,), hidden=8)


@pytest.fixture
def settings_restored(torch):
    """deterministic() changes process-wide flags: put them back for the other tests."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.deterministic, cudnn.benchmark, matmul.allow_tf32, cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    cudnn.deterministic, cudnn.benchmark, matmul.allow_tf32, cudnn.allow_tf32 = saved[:4]
    torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


@pytest.fixture
def no_gpu(torch, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_gpu(torch, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_cpu_and_auto_without_a_gpu(torch, no_gpu):
    from normlab.torch.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_a_gpu_is_refused_in_one_line(torch, no_gpu):
    from normlab.torch.device import resolve_device

    for asked in ("cuda", torch.device("cuda", 0)):
        with pytest.raises(ValueError, match=r"^--device: expected 'cpu' or 'auto' .*got "
                                             r"'cuda(:0)?'.*is_available\(\) is False") as exc:
            resolve_device(asked)
        assert "\n" not in str(exc.value)


def test_auto_and_cuda_pick_the_gpu_when_there_is_one(torch, fake_gpu):
    from normlab.torch.device import resolve_device

    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")   # asked for: never overridden


def test_bad_device_names_the_argument(torch):
    from normlab.torch.device import resolve_device

    with pytest.raises(ValueError, match=r"--device: expected one of \('cpu', 'cuda', 'auto'\)"
                                         r", got 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(TypeError, match="--device: expected .* got int"):
        resolve_device(0)


def test_deterministic_sets_and_reports_the_settings(torch, settings_restored):
    from normlab.torch.device import deterministic

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    got = deterministic("cpu")
    assert got["device"] == "cpu" and got["torch"] == torch.__version__
    assert got["cudnn.deterministic"] is True and got["cudnn.benchmark"] is False
    assert got["cuda.matmul.allow_tf32"] is False and got["cudnn.allow_tf32"] is False
    assert got["deterministic_algorithms"] is True and got["deterministic_warn_only"] is False
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
    assert deterministic("cpu", warn_only=True)["deterministic_warn_only"] is True


def test_trainer_on_cpu_device_equals_the_default_trainer(torch, settings_restored):
    """device="cpu" adds the settings and the NumPy round trips, not different numbers."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(24, 1, 8, 8)) + 0.5).astype(np.float32)
    y = rng.integers(0, 10, 24)
    default = make_trainer("torch", SPEC, 0.1, np.random.default_rng(0), 0.1)
    on_cpu = make_trainer("torch", SPEC, 0.1, np.random.default_rng(0), 0.1, device="cpu")
    assert default.settings is None and on_cpu.settings["deterministic_algorithms"] is True
    assert on_cpu.device == torch.device("cpu")
    for step in range(3):
        sl = slice(8 * step, 8 * step + 8)
        assert default.train_step(x[sl], y[sl]) == on_cpu.train_step(x[sl], y[sl])
    a, b = default.forward_eval(x, tap=3), on_cpu.forward_eval(x, tap=3)
    assert isinstance(b[0], np.ndarray) and isinstance(b[1], np.ndarray)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    state = on_cpu.state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    for k, v in default.state().items():
        np.testing.assert_array_equal(state[k], v, err_msg=k)
    on_cpu.train_step(x[:8], y[:8])
    on_cpu.load_state(state)                     # back to the checkpoint
    np.testing.assert_array_equal(on_cpu.forward_eval(x)[0], a[0])
    on_cpu.close()


def test_trainer_refuses_cuda_without_a_gpu(torch, no_gpu):
    with pytest.raises(ValueError, match="--device"):
        make_trainer("torch", SPEC, 0.1, np.random.default_rng(0), 0.1, device="cuda")
    with pytest.raises(ValueError, match="--device"):
        make_trainer("torch", SPEC, 0.1, np.random.default_rng(0), 0.1, device="cuda",
                     workers=2)


def test_more_cuda_workers_than_gpus_is_refused_before_starting(torch, fake_gpu):
    from normlab.engines.torch.ddp import DistributedTrainer

    with pytest.raises(ValueError, match=r"workers: expected at most 1 on CUDA .* got 2"):
        DistributedTrainer(lambda: None, 0.1, 2, device="cuda")


def test_numpy_engine_refuses_torch_only_options():
    rng = np.random.default_rng(0)
    for kw, pattern in (({"device": "cuda"}, "device: expected None"),
                        ({"workers": 2}, "workers: expected 1"),
                        ({"sync_bn": True}, "sync_bn: expected False")):
        with pytest.raises(ValueError, match=pattern + " with engine 'numpy'"):
            make_trainer("numpy", SPEC, 0.1, rng, 0.1, **kw)
    assert make_trainer("numpy", SPEC, 0.1, rng, 0.1, device="cpu").engine == "numpy"


def test_bad_worker_counts_and_batches(torch, monkeypatch):
    from normlab.engines.torch.ddp import distributed_trainer, shards

    with pytest.raises(ValueError, match="workers: expected a positive integer, got 0"):
        make_trainer("torch", SPEC, 0.1, np.random.default_rng(0), 0.1, workers=0)
    with pytest.raises(ValueError, match=r"x: expected a batch divisible by workers=2 .*, got 9"):
        shards(9, 2)
    assert shards(8, 2) == [(0, 4), (4, 8)]
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="workers: expected torchrun's RANK"):
        distributed_trainer(lambda: None, 0.1, None)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(ValueError, match="workers: expected None under torchrun .* got 2"):
        distributed_trainer(lambda: None, 0.1, 2)
