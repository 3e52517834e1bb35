"""runner.holdout: the CNN inputs of a part are pooled once per process and handed out as
copies, so one run cannot change another's."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import data
from normlab.runner.cnn import as_images
from normlab.runner.holdout import parts


@pytest.fixture(scope="module")
def mnist():
    """The shipped MNIST subset (28x28: the CNN pools it to 14x14)."""
    return data.load("mnist5k")


@pytest.mark.parametrize("pool", [True, False])
def test_part_images_are_pooled_once_and_each_run_gets_its_own(mnist, monkeypatch, pool):
    from normlab.runner import holdout

    part = parts(mnist).val
    expected = as_images(part.x, pool)
    first = part.images(pool)
    calls = []
    monkeypatch.setattr(holdout, "as_images", lambda *a: calls.append(a))
    second = part.images(pool)
    assert calls == []                      # not pooled again
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)
    assert first.shape[1:] == ((1, 14, 14) if pool else (1, 28, 28))
    first[0] = -1.0                         # one run changing its images ...
    np.testing.assert_array_equal(part.images(pool), expected)   # ... changes no other's
    assert not np.shares_memory(second, part.x)
