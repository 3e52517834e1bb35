"""The test set's sampling noise in the intervals: packed correctness, the paired bootstrap over
test examples, its coverage against a direct simulation, and censored step counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from normlab.runner.curve import eval_steps, speedup
from normlab.runner.evidence import Bound
from normlab.runner.testnoise import pack, record, replicates, unpack
from tests.simulate import effect, experiment


@pytest.mark.parametrize("plus,minus", [(0.15, 0.0), (0.25, 0.1)])
def test_combined_interval_covers_a_known_effect_about_95_percent_of_the_time(plus, minus):
    """200 simulated experiments with a known effect, seed noise and test-set noise
    (tests/simulate.py): the combined interval covers the effect ~95% of the time (one standard
    error: 1.5%); the seeds alone cannot see the drawn test set and cover far less often."""
    rng = np.random.default_rng(7)
    both = seeds_only = 0
    truth = effect(plus, minus)
    for _ in range(200):
        combined, seed_only = experiment(rng, plus, minus)
        both += combined.lo <= truth <= combined.hi
        seeds_only += seed_only.lo <= truth <= seed_only.hi
    assert 0.91 <= both / 200 <= 0.985
    assert seeds_only / 200 < 0.88


def test_pack_round_trips_and_record_keeps_the_accuracy():
    v = np.random.default_rng(1).random(1001) < 0.7
    assert np.array_equal(unpack(pack(v), 1001), v) and len(pack(np.ones(1000, bool))) == 168
    m = {}
    assert record(m, "test_acc", v) == pytest.approx(v.mean()) and m["n_test"] == 1001
    with pytest.raises(ValueError, match="packed bits"):
        unpack(pack(v), 2000)


def test_the_bootstrap_is_paired_and_deterministic():
    rng = np.random.default_rng(3)
    right = rng.random(300) < 0.8
    # two runs with identical correctness: every redraw gives them the same accuracy
    by_seed = {0: {"a": {}, "b": {}}}
    record(by_seed[0]["a"], "test_acc", right)
    record(by_seed[0]["b"], "test_acc", right)

    def stat(m):
        return {"diff": m["a"]["test_acc"] - m["b"]["test_acc"], "a": m["a"]["test_acc"]}

    reps = replicates(by_seed, stat, b=50)
    assert all(r[0]["diff"] == 0.0 for r in reps)
    assert np.std([r[0]["a"] for r in reps]) > 0.01          # the accuracy itself does move
    assert [r[0]["a"] for r in reps] == [r[0]["a"] for r in replicates(by_seed, stat, b=50)]
    assert replicates({0: {"a": {"test_acc": 0.5}}}, stat) is None


def test_a_run_that_never_reaches_its_target_is_censored_not_a_multiple_of_the_budget():
    assert speedup(600.0, 200.0, 1000) == 3.0
    assert speedup(None, 200.0, 1000) == Bound(5.0, math.inf)     # plain needs > 1000 steps
    assert speedup(600.0, None, 1000) == Bound(0.0, 0.6)
    assert speedup(None, None, 1000) == Bound(0.0, math.inf)
    assert speedup(600.0, 0.0, 1000) == 600.0                      # met at step 0: 1 step


def test_curves_start_at_step_0_and_are_dense_early():
    grid = eval_steps(1000, 20)
    assert grid[:3] == [0, 5, 10] and 50 in grid and grid[-1] == 1000
    assert sum(s <= 50 for s in grid) == 11 and len(grid) == 1 + 20 + 9
    assert eval_steps(20, 20) == [0, 5, 10, 15, 20]      # CI size: no extra points
