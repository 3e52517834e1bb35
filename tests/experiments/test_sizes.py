"""--size quick | full | paper: how it resolves (``--quick`` is an alias), what each size runs,
the size in every unit's identity and in the results, and every experiment at --size paper run
end to end as a user runs it, at CI scale on ``digits``."""

from __future__ import annotations

import json

import pytest

from normlab import data
from normlab.cli.reproduce_command import _check
from normlab.experiments import EXPERIMENTS, get
from normlab.reproduce import Options, UsageError, resolve_size
from normlab.runner.base import RunContext
from normlab.runner.evidence import VERDICTS
from normlab.runner.store import read_checkpoint
from tests.commands import ENV, normlab

PAPER_ONLY = {"batch-size", "learning-rate", "landscape", "rnn-norm"}   # own paper setting
SAME = "--size paper runs this full setting unchanged"


@pytest.mark.parametrize("quick,size,expected", [
    (False, None, "full"), (True, None, "quick"), (True, "quick", "quick"),
    (False, "quick", "quick"), (False, "full", "full"), (False, "paper", "paper")])
def test_size_resolution(quick, size, expected):
    assert resolve_size(quick, size) == expected
    opts = Options(names=["init-scale"], size=expected, data_spec="digits", engine="numpy",
                   out=None, seed=0)
    assert opts.size == expected


@pytest.mark.parametrize("quick,size,needle", [
    (False, "huge", "--size: expected one of quick, full, paper, got 'huge'"),
    (False, "Paper", "--size: expected one of quick, full, paper, got 'Paper'"),
    (True, "paper", "--size: expected quick or none with --quick (an alias of size quick), "
                    "got 'paper'"),
    (True, "full", "got 'full'")])
def test_size_errors_name_the_flag(quick, size, needle):
    with pytest.raises(UsageError) as exc:
        resolve_size(quick, size)
    assert str(exc.value) == needle or needle in str(exc.value)
    if size not in ("quick", "full", "paper"):   # the API names its argument
        with pytest.raises(ValueError, match=r"^size: expected one of quick, full, paper"):
            Options(names=["init-scale"], size=size, data_spec="digits", engine="numpy",
                    out=None, seed=0)


def test_options_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        Options(["init-scale"], "quick", "digits", "numpy", None, 0)
    opts = Options(names=["init-scale"], data_spec="digits", engine="numpy", out=None, seed=0)
    assert opts.size == "full" and not hasattr(opts, "quick")
    with pytest.raises(AttributeError):
        opts.jobs = 2


@pytest.mark.parametrize("size,seeds", [("quick", 3), ("full", 5), ("paper", 5)])
def test_default_seeds_per_size(size, seeds):
    assert _check([], "numpy", 0, None, 1, size)[1] == seeds


def test_paper_changes_exactly_the_experiments_with_a_paper_setting(digits):
    for name, exp in EXPERIMENTS.items():
        full, paper = exp.runs(digits, 1.0, "full"), exp.runs(digits, 1.0, "paper")
        assert exp.runs(digits, 1.0) == full                  # the default is full size
        setup = exp.setup_text(digits, 1.0, "paper")
        if name in PAPER_ONLY:
            assert not exp.same_at_paper and paper != full, name
            assert SAME not in setup, name
        else:
            assert exp.same_at_paper and paper == full, name
            assert setup.endswith(f"{SAME}: {exp.same_at_paper}")
            assert SAME not in exp.setup_text(digits, 1.0, "full")


def test_what_paper_runs(digits):
    cfg = {n: {r.key: r.config for r in get(n).runs(digits, 1.0, "paper")} for n in PAPER_ONLY}
    assert {c["model"] for c in cfg["batch-size"].values()} == {"resnet"}
    assert {c["arch"] for k, c in cfg["learning-rate"].items() if k.startswith("cnn")} == \
        {"resnet"}
    assert {c["arch"] for k, c in cfg["learning-rate"].items() if k.startswith("mlp")} == {"mlp"}
    assert {c["arch"] for c in cfg["landscape"].values()} == {"resnet"}
    # Cooijmans et al. 2016 sec. 5.1: pixel by pixel, 100 units, RMSProp lr 1e-3, clipping 1
    for c in cfg["rnn-norm"].values():
        assert (c["pixels"], c["hidden"], c["optimizer"], c["lr"], c["clip"], c["batch"]) == \
            (True, 100, "rmsprop", 1e-3, 1.0, 64)
    assert cfg["rnn-norm"]["recurrent_batch"]["h0_noise"] == 0.1
    full = {r.key: r.config for r in get("rnn-norm").runs(digits, 1.0, "full")}
    assert {(c["pixels"], c["optimizer"]) for c in full.values()} == {(False, "sgd")}
    assert "ResNet-20" in get("batch-size").scale_note(digits, 1.0, "paper")
    assert "pixel by pixel (T = 64" in get("rnn-norm").scale_note(digits, 1.0, "paper")
    assert "row by row" in get("rnn-norm").scale_note(digits, 1.0, "full")


class _Stop(Exception):
    pass


def test_rnn_norm_paper_run_reads_pixels_with_rmsprop_and_resumes_exactly(digits, tmp_path):
    """Killed after its 2nd evaluation, the run continues from that checkpoint (weights,
    per-step BN statistics, RMSProp state, the h_0 noise stream) and ends exactly where an
    uninterrupted run ends."""
    exp = get("rnn-norm")
    run = next(r for r in exp.runs(digits, 0.002, "paper") if r.key == "recurrent_batch")
    cfg = {**run.config, "steps": 6, "eval_every": 2}

    def ctx(path, progress=None):
        return RunContext("rnn-norm", run.key, digits, "numpy", 0, "h",
                          partial_path=tmp_path / path, progress=progress)

    whole = exp.run(ctx("a.partial"), cfg)

    def stop(done, total):
        if done == 4:
            raise _Stop

    with pytest.raises(_Stop):
        exp.run(ctx("b.partial", stop), cfg)
    meta, arrays = read_checkpoint(tmp_path / "b.partial")
    assert meta["step"] == 4 and arrays["lstm.weight_ih_l0"].shape == (400, 1)   # 1 pixel in
    assert "optim.square_avg.0" in arrays
    seen = []
    resumed = exp.run(ctx("b.partial", lambda d, t: seen.append(d)), cfg)
    assert seen == [6] and resumed == whole


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """All ten experiments at --size paper on digits (CLI subprocess, CI scale, one seed).

    One seed and the numba kernels, unlike the other pipelines: a ResNet-20 step is ~50 ms
    even on 8x8 digits (~100 ms on the NumPy path), and the paper sizes' ResNet runs are what
    this checks; the intervals over seeds are the other pipelines' tests."""
    out = tmp_path_factory.mktemp("paper") / "out"
    env = {**ENV, "NORMLAB_CI_SCALE": "0.004", "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("NORMLAB_KERNELS", None)
    proc = normlab("reproduce", "--size", "paper", "--data", "digits", "--seeds", "1",
                   "--out", out, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert "paper size" in proc.stderr.replace("\n", " ")
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_runs_end_to_end_at_paper_size(paper_run, name):
    out, res = paper_run
    assert res["config"]["size"] == "paper" and res["config"]["quick"] is False
    e = res["experiments"][name]
    assert e["size"] == "paper" and e["verdict"] in VERDICTS
    assert e["setup"] == get(name).setup_text(data.load("digits"), e["scale"], "paper")
    assert e["scale_note"] == get(name).scale_note(data.load("digits"), e["scale"], "paper")
    assert e["seeds"] == [1000] and e["figures"] and e["runs"]   # the confirmatory block
    for fig in e["figures"]:
        assert (out / fig).read_bytes()[:4] == b"\x89PNG"
    for c in e["criteria"]:
        assert len(e["intervals"][c["statistic"]]["per_seed"]) == 1
    done = list((out / "checkpoints" / name / "seed1000").glob("*.done"))
    assert len(done) == len(e["runs"])
    assert all(read_checkpoint(d)[0]["identity"]["size"] == "paper" for d in done)


def test_paper_results_are_reported_and_not_mixed_with_another_size(paper_run, tmp_path):
    out, _ = paper_run
    md = tmp_path / "r.md"
    proc = normlab("report", out, "--markdown", md)
    assert proc.returncode == 0, proc.stderr
    assert "paper size" in md.read_text().splitlines()[0]
    assert "paper size" in (out / "report.html").read_text()
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.json").write_bytes((out / "results.json").read_bytes())
    proc = normlab("reproduce", "init-scale", "--quick", "--data", "digits", "--seeds", "2",
                   "--out", copy)
    assert proc.returncode == 0, proc.stderr
    assert "from a run with other settings (size, " in proc.stderr.replace("\n", " ")
    assert list(json.loads((copy / "results.json").read_text())["experiments"]) == \
        ["init-scale"]


def test_results_before_sizes_count_as_quick_or_full():
    """A results.json written before --size existed has no "size": its "quick" decides, so an
    earlier quick run in the folder is still kept by a quick run."""
    from normlab.runner.base import size_of

    assert size_of({"quick": True}) == "quick" and size_of({"quick": False}) == "full"
    assert size_of({"quick": False, "size": "paper"}) == "paper"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_runs_end_to_end_at_full_size(name, digits, tmp_path):
    """The full-size runs (README, "Development": marked slow and deselected in CI, whose
    pipelines run the same code at CI scale): each experiment at --size full, unscaled, on
    ``digits`` with one seed, through the reproduce pipeline."""
    from normlab.reproduce import finalize, run_all

    opts = Options(names=[name], size="full", data_spec="digits", engine="numpy", out=tmp_path,
                   seed=0)
    results = run_all(opts, digits, warn=lambda m: None)
    finalize(tmp_path, results)
    e = results["experiments"][name]
    assert e["scale"] == 1.0 and e["size"] == "full" and e["verdict"] in VERDICTS
    assert {k: r["config"] for k, r in e["runs"].items()} == \
        {r.key: r.config for r in get(name).runs(digits, 1.0, "full")}
