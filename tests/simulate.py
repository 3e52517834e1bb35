"""A direct simulation of an experiment whose truth is known: two arms, seeds, one drawn test set.

Example i of the population is right for arm B with probability q_i and for arm A with
q_i + d_i, where d_i is +STEP with probability ``plus``, -STEP with probability ``minus`` and 0
otherwise, so the true effect (A's accuracy - B's) is STEP * (plus - minus). One uniform draw per
example and seed decides both arms (they fail together), plus a small per-seed shift of each arm:
the seeds vary little, and much of the uncertainty is which examples the drawn test set holds.
"""

from __future__ import annotations

import numpy as np

from normlab.runner.evidence import interval
from normlab.runner.testnoise import record, replicates

STEP = 0.3


def effect(plus: float, minus: float) -> float:
    return STEP * (plus - minus)


def experiment(rng, plus: float, minus: float, n_seeds: int = 5, n_test: int = 500,
               b: int = 100):
    """(interval with the test set's noise, interval over seeds alone) of acc_A - acc_B."""
    q = rng.uniform(0.35, 0.65, n_test)
    r = rng.random(n_test)
    d = np.where(r < plus, STEP, np.where(r < plus + minus, -STEP, 0.0))
    by_seed = {}
    for s in range(n_seeds):
        u = rng.random(n_test)
        ga, gb = rng.normal(0, 0.002, 2)
        runs = {"a": {}, "b": {}}
        runs["a"]["test_acc"] = record(runs["a"], "test_acc", u < q + d + ga)
        runs["b"]["test_acc"] = record(runs["b"], "test_acc", u < q + gb)
        by_seed[s] = runs

    def stat(m):
        return {"diff": m["a"]["test_acc"] - m["b"]["test_acc"]}

    values = [stat(by_seed[s])["diff"] for s in by_seed]
    reps = replicates(by_seed, stat, b=b, generator_seed=int(rng.integers(1 << 30)))
    return (interval(values, test=[[x[s]["diff"] for s in by_seed] for x in reps]),
            interval(values))
