"""SyncBatchNorm on CPU/gloo: two processes holding parts of a batch must reproduce one
BatchNorm over the whole batch (outputs, input and weight gradients, running statistics)."""

from __future__ import annotations

import socket

import pytest

# (global batch shape, per-process sizes): equal halves, unequal, a 1-sample and a 0-sample rank
CASES = [((8, 3), (4, 4)), ((8, 3), (5, 3)), ((8, 3), (7, 1)), ((8, 3), (8, 0)),
         ((5, 2, 3, 3), (3, 2))]
STEPS = 2


def _data(torch, case: int, step: int):
    shape, _ = CASES[case]
    g = torch.Generator().manual_seed(100 * case + step)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 1
    dy = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x, dy


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    import normlab.torch as nt

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    results = []
    try:
        for case, (shape, sizes) in enumerate(CASES):
            start = sum(sizes[:rank])
            sl = slice(start, start + sizes[rank])
            bn = nt.SyncBatchNorm(shape[1], momentum=0.3).double()
            with torch.no_grad():
                bn.weight.copy_(torch.linspace(0.5, 1.5, shape[1]))
                bn.bias.copy_(torch.linspace(-1, 1, shape[1]))
            per_step = []
            for step in range(STEPS):
                x, dy = _data(torch, case, step)
                x = x[sl].clone().requires_grad_()
                y = bn(x)
                (y * dy[sl]).sum().backward()
                per_step.append({"y": y.detach(), "dx": x.grad, "dw": bn.weight.grad.clone(),
                                 "db": bn.bias.grad.clone()})
                bn.zero_grad()
            per_step.append({k: v.clone() for k, v in bn.state_dict().items()})
            results.append(per_step)
    finally:
        dist.destroy_process_group()
    torch.save(results, f"{out}/rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_batchnorm_on_the_whole_batch(torch, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for case, (shape, sizes) in enumerate(CASES):
        bn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(
            shape[1], momentum=0.3).double()
        with torch.no_grad():
            bn.weight.copy_(torch.linspace(0.5, 1.5, shape[1]))
            bn.bias.copy_(torch.linspace(-1, 1, shape[1]))
        for step in range(STEPS):
            x, dy = _data(torch, case, step)
            x.requires_grad_()
            y = bn(x)
            (y * dy).sum().backward()
            got = [r[case][step] for r in ranks]
            msg = f"case {case} sizes {sizes} step {step}"
            torch.testing.assert_close(torch.cat([g["y"] for g in got]), y.detach(), msg=msg)
            torch.testing.assert_close(torch.cat([g["dx"] for g in got]), x.grad, msg=msg)
            # parameter gradients are per-process sums (DDP reduces them): they add up
            torch.testing.assert_close(got[0]["dw"] + got[1]["dw"], bn.weight.grad, msg=msg)
            torch.testing.assert_close(got[0]["db"] + got[1]["db"], bn.bias.grad, msg=msg)
            bn.zero_grad()
        for r in ranks:
            for k, v in bn.state_dict().items():
                torch.testing.assert_close(r[case][STEPS][k], v, msg=f"case {case} {k}")


def test_not_distributed_falls_back_to_batchnorm(torch):
    import normlab.torch as nt

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ref = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ref.load_state_dict(m.state_dict())
    m = nt.convert_sync_batchnorm(m)
    assert type(m[1]) is nt.SyncBatchNorm
    x = torch.randn(6, 4)
    torch.testing.assert_close(m(x), ref(x))
    torch.testing.assert_close(m[1].running_mean, ref[1].running_mean)
    assert set(m.state_dict()) == set(ref.state_dict())
    with pytest.raises(ValueError, match="channels"):
        m[1](torch.randn(6, 2))
