"""End to end: normlab and torch models with identical weights trained on identical batches."""

from __future__ import annotations

import numpy as np
import pytest

import normlab.nn as nn
from normlab.optim import SGD

STEPS, BATCH = 20, 60


def paper_mlp_normlab(rng) -> nn.Sequential:
    """Ioffe & Szegedy 2015 sec. 4.1: 784-100-100-100-10, sigmoid, BN before each sigmoid."""
    layers, width = [], 784
    for _ in range(3):
        layers += [nn.Linear(width, 100, rng=rng), nn.BatchNorm1d(100), nn.Sigmoid()]
        width = 100
    return nn.Sequential(*layers, nn.Linear(100, 10, rng=rng))


def paper_mlp_torch(torch):
    T, layers, width = torch.nn, [], 784
    for _ in range(3):
        layers += [T.Linear(width, 100), T.BatchNorm1d(100), T.Sigmoid()]
        width = 100
    return T.Sequential(*layers, T.Linear(100, 10))


def copy_weights(torch, model, reference) -> None:
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})


def train_both(torch, model, reference, make_batch, steps=STEPS):
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    loss_fn, ref_loss_fn = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(1)
    losses, ref_losses = [], []
    for _ in range(steps):
        x, y = make_batch(rng)
        losses.append(loss_fn(model(x), y))
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
        ref_opt.zero_grad()
        ref_loss = ref_loss_fn(reference(torch.from_numpy(x)), torch.from_numpy(y))
        ref_loss.backward()
        ref_opt.step()
        ref_losses.append(ref_loss.item())
    return np.array(losses), np.array(ref_losses)


def assert_state_dicts_close(sd, ref_sd, rtol=1e-4, atol=1e-5) -> None:
    assert list(sd) == list(ref_sd)
    for key, value in sd.items():
        ref = ref_sd[key].numpy()
        assert value.dtype == ref.dtype, key
        np.testing.assert_allclose(value, ref, rtol=rtol, atol=atol, err_msg=key)


def test_paper_mlp_trains_like_torch(torch):
    model = paper_mlp_normlab(np.random.default_rng(0))
    reference = paper_mlp_torch(torch)
    copy_weights(torch, model, reference)

    teacher = np.random.default_rng(9).standard_normal((784, 10)).astype(np.float32)

    def batch(rng):
        x = rng.random((BATCH, 784), dtype=np.float32)
        return x, np.argmax((x - 0.5) @ teacher, axis=1)  # a learnable linear teacher

    losses, ref_losses = train_both(torch, model, reference, batch)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    assert losses[-5:].mean() < 0.95 * losses[:5].mean()  # and it is learning
    sd = model.state_dict()
    assert int(sd["1.num_batches_tracked"]) == STEPS
    assert_state_dicts_close(sd, reference.state_dict())


def small_cnn_normlab(rng) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False, rng=rng), nn.BatchNorm2d(8),
        nn.ReLU(), nn.AvgPool2d(3), nn.Flatten(), nn.Linear(8, 10, rng=rng))


def small_cnn_torch(torch):
    T = torch.nn
    return T.Sequential(
        T.Conv2d(1, 4, 3, padding=1), T.BatchNorm2d(4), T.ReLU(), T.MaxPool2d(2),
        T.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), T.BatchNorm2d(8), T.ReLU(),
        T.AvgPool2d(3), T.Flatten(), T.Linear(8, 10))


def test_small_cnn_trains_like_torch(torch):
    model = small_cnn_normlab(np.random.default_rng(0))
    reference = small_cnn_torch(torch)
    copy_weights(torch, model, reference)
    teacher = np.random.default_rng(9).standard_normal((144, 10)).astype(np.float32)

    def batch(rng):
        x = rng.standard_normal((BATCH, 1, 12, 12), dtype=np.float32)
        return x, np.argmax(x.reshape(BATCH, -1) @ teacher, axis=1)

    losses, ref_losses = train_both(torch, model, reference, batch)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    sd = model.state_dict()
    assert int(sd["5.num_batches_tracked"]) == STEPS
    assert_state_dicts_close(sd, reference.state_dict())


def test_eval_mode_outputs_match_after_training(torch):
    model = paper_mlp_normlab(np.random.default_rng(2))
    reference = paper_mlp_torch(torch)
    copy_weights(torch, model, reference)

    def batch(rng):
        return rng.standard_normal((BATCH, 784), dtype=np.float32), rng.integers(0, 10, BATCH)

    train_both(torch, model, reference, batch, steps=5)
    x = np.random.default_rng(3).standard_normal((7, 784), dtype=np.float32)
    model.eval()
    reference.eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 5])
def test_same_seed_gives_bit_identical_runs(seed):
    def run():
        model = paper_mlp_normlab(np.random.default_rng(seed))
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        rng = np.random.default_rng(seed + 1)
        losses = []
        for _ in range(3):
            x = rng.standard_normal((BATCH, 784), dtype=np.float32)
            losses.append(loss_fn(model(x), rng.integers(0, 10, BATCH)))
            model.backward(loss_fn.backward())
            opt.step()
            opt.zero_grad()
        return losses, model.state_dict()

    (l1, sd1), (l2, sd2) = run(), run()
    assert l1 == l2
    for key in sd1:
        assert np.array_equal(sd1[key], sd2[key]), key
