"""SequenceBatchNorm (batch x time statistics) and RecurrentBatchNorm (per-step statistics)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("batch_first", [False, True])
def test_sequence_bn_is_bn_over_batch_and_time(torch, batch_first):
    import normlab.torch as nt

    torch.manual_seed(0)
    m = nt.SequenceBatchNorm(3, batch_first=batch_first).double()
    bn = torch.nn.BatchNorm1d(3).double()
    for _ in range(2):
        x = torch.randn(5, 4, 3, dtype=torch.float64) * 3 + 1
        y = m(x)
        want = bn(x.reshape(-1, 3)).reshape(5, 4, 3)
        torch.testing.assert_close(y, want)
    # statistics per feature over every (step, sample) pair
    torch.testing.assert_close(y.mean((0, 1)), torch.zeros(3, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    bn.load_state_dict(m.state_dict())
    torch.testing.assert_close(m.running_var, bn.running_var)
    with pytest.raises(ValueError, match="3D"):
        m(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="features"):
        m(torch.randn(4, 2, 5, dtype=torch.float64))


def test_recurrent_bn_per_step_statistics_match_one_bn_per_step(torch):
    import normlab.torch as nt

    torch.manual_seed(1)
    steps, c = 3, 2
    m = nt.RecurrentBatchNorm(c, max_steps=steps, momentum=0.3).double()
    torch.testing.assert_close(m.weight.detach(), torch.full((c,), 0.1, dtype=torch.float64))
    refs = [torch.nn.BatchNorm1d(c, momentum=0.3).double() for _ in range(steps)]
    for r in refs:
        with torch.no_grad():
            r.weight.fill_(0.1)
    for _ in range(2):
        for t in range(steps):
            x = torch.randn(6, c, dtype=torch.float64) * (t + 1) + t
            torch.testing.assert_close(m(x, t), refs[t](x))
    for t in range(steps):
        torch.testing.assert_close(m.running_mean[t], refs[t].running_mean)
        torch.testing.assert_close(m.running_var[t], refs[t].running_var)
    assert int(m.steps_seen) == steps
    m.eval()
    x = torch.randn(4, c, dtype=torch.float64)
    for r in refs:
        r.eval()
    torch.testing.assert_close(m(x, 1), refs[1](x))
    torch.testing.assert_close(m(x, 10), refs[-1](x))  # beyond max_steps: the last step's


def test_recurrent_bn_eval_beyond_longest_seen_reuses_last_seen(torch):
    import normlab.torch as nt

    m = nt.RecurrentBatchNorm(2, max_steps=5).double()
    for t in range(2):  # only steps 0 and 1 ever trained
        m(torch.randn(8, 2, dtype=torch.float64) + 5 * t, t)
    m.eval()
    x = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(m(x, 4), m(x, 1))
    assert not torch.allclose(m(x, 0), m(x, 1))


def test_recurrent_bn_gradcheck_and_errors(torch):
    import normlab.torch as nt

    m = nt.RecurrentBatchNorm(2, max_steps=2, momentum=0.0).double()
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: m(x, 1), (x,))
    with pytest.raises(ValueError, match="step"):
        m(x, -1)
    with pytest.raises(ValueError, match="2D"):
        m(torch.randn(2, 2, 2), 0)
    with pytest.raises(ValueError, match="max_steps"):
        nt.RecurrentBatchNorm(2, max_steps=0)
