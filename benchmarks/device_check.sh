#!/usr/bin/env bash
# The paper-size experiments on one GPU, one bounded call at a time (issue 20, item 4).
#
# Runs `normlab reproduce --size paper` for the experiments whose paper setting needs a GPU
# machine: batch-size, learning-rate, landscape (ResNet-20 on the GPU, --engine torch --device
# cuda) and paper-fig1 (50,000 steps), and rnn-norm (pixel-by-pixel LSTMs, NumPy engine on the
# machine's CPU cores: their small per-step ops are launch-bound on a GPU; its torch twin runs
# there if GPU_EXPERIMENTS names it), the two side by side. Every reproduce call stops
# after BUDGET_S seconds; the finished and half-finished runs are checkpointed in STATE, and the
# next call continues from there. When both are complete it writes results.json, report.html
# and RESULTS-style Markdown (`normlab report --markdown`) for each.
#
# Installs nothing: it needs python3 with numpy, numba, torch (CUDA), typer, rich and matplotlib,
# and exits with a message naming what is missing, or when torch.cuda.is_available() is False.
# Run from anywhere; it works on the repository it lives in (PYTHONPATH=src, no install).
#
# Environment (all optional):
#   BUDGET_S   seconds each reproduce call may run (default 480; the lent machine allows 600
#              per command, and the reports and the copy to $OUT need the rest)
#   STATE      where checkpoints persist between calls (default runs/device-check, ignored by
#              git: carry it to a fresh machine, see benchmarks/README.md)
#   OUT        the lent machine's output folder: STATE is archived there after every call
#   SEEDS      seeds per experiment (default 5, the paper size's default)
#   GPU_JOBS   worker processes sharing the GPU (default 6)
#   CPU_JOBS   worker processes for rnn-norm (default: cores - GPU_JOBS, at least 1)
#   MNIST_DIR  an MNIST-format IDX folder to use when Fashion-MNIST is not installed
#   DATA       any --data value, instead of that choice
#   GPU_EXPERIMENTS, CPU_EXPERIMENTS  the experiments of each half (defaults above)
#   DEVICE     cpu: a dry run of this script without a GPU (with NORMLAB_CI_SCALE=0.004 and
#              DATA=digits it takes minutes on 2 cores); the default cuda refuses to run on CPU
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
BUDGET_S=${BUDGET_S:-480}
STATE=${STATE:-runs/device-check}
SEEDS=${SEEDS:-5}
GPU_JOBS=${GPU_JOBS:-6}
CORES=$(nproc 2>/dev/null || echo 2)
CPU_JOBS=${CPU_JOBS:-$(( CORES > GPU_JOBS + 1 ? CORES - GPU_JOBS : 1 ))}
GPU_EXPERIMENTS=${GPU_EXPERIMENTS:-batch-size learning-rate landscape paper-fig1}
CPU_EXPERIMENTS=${CPU_EXPERIMENTS:-rnn-norm}

DEVICE=${DEVICE:-cuda}
DEVICE="$DEVICE" "$PY" - <<'EOF' || exit 3
import importlib.util
import os
import sys

missing = [m for m in ("numpy", "numba", "torch", "typer", "rich", "matplotlib")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"device_check: missing Python packages {', '.join(missing)}; this script "
             f"installs nothing")
import torch

if os.environ["DEVICE"] == "cpu":
    print(f"device_check: DEVICE=cpu, a dry run on the CPU (torch {torch.__version__})")
elif not torch.cuda.is_available():
    sys.exit(f"device_check: torch {torch.__version__} sees no usable GPU "
             f"(torch.cuda.is_available() is False); nothing was run")
else:
    print(f"device_check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}, "
          f"CUDA {torch.version.cuda}")
EOF

if [ -n "${DATA:-}" ]; then
    :
elif [ -d /usr/share/datasets/fashion-mnist ]; then
    DATA=fashion-mnist
elif [ -n "${MNIST_DIR:-}" ] && [ -d "$MNIST_DIR" ]; then
    DATA="mnist:$MNIST_DIR"
else
    DATA=mnist5k
fi
mkdir -p "$STATE"
echo "device_check: data $DATA, $SEEDS seeds, ${BUDGET_S}s per call, GPU jobs $GPU_JOBS," \
     "CPU jobs $CPU_JOBS, state $STATE"

# Both halves at once: the GPU runs are bound by kernel launches (a CPU core each), the LSTMs
# by NumPy on the other cores. `timeout` signals the whole process group, so the workers stop
# too; a stopped run resumes from its last checkpoint.
run() {   # run NAME JOBS ENGINE-ARGS... -- EXPERIMENTS...
    local name=$1 jobs=$2
    shift 2
    timeout -k 30 "$BUDGET_S" "$PY" -m normlab.cli reproduce "$@" --size paper \
        --data "$DATA" --seeds "$SEEDS" --jobs "$jobs" --out "$STATE/$name" \
        >"$STATE/$name.log" 2>&1
    echo $? >"$STATE/$name.rc"
}
# shellcheck disable=SC2086  # the experiment lists are meant to split into words
run gpu "$GPU_JOBS" $GPU_EXPERIMENTS --engine torch --device "$DEVICE" &
# shellcheck disable=SC2086
run cpu "$CPU_JOBS" $CPU_EXPERIMENTS --engine numpy &
wait

status=0
for half in gpu cpu; do
    rc=$(cat "$STATE/$half.rc")
    tail -n 25 "$STATE/$half.log" | grep -v "^\s*$" | tail -n 12
    if [ "$rc" = 0 ]; then
        "$PY" -m normlab.cli report "$STATE/$half" --markdown "$STATE/$half/RESULTS-paper.md" \
            >/dev/null && echo "device_check: $half complete: $STATE/$half/RESULTS-paper.md"
    else
        status=1
        "$PY" - "$STATE/$half" <<'EOF'
import pathlib
import sys

root = pathlib.Path(sys.argv[1]) / "checkpoints"
for exp in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
    done = len(list(exp.glob("seed*/*.done")))
    partial = len(list(exp.glob("seed*/*.partial")))
    print(f"device_check: {exp.name}: {done} runs done, {partial} part-done")
EOF
        echo "device_check: $half stopped (exit $rc) before finishing: run this" \
             "script again (with STATE carried over) to continue"
    fi
done
# Back through $OUT (the lent-machine tool returns at most 8 files of 16 MiB, 2 folders deep):
# STATE as one archive cut into 15 MiB pieces (state.tgz.0, .1, ...; rebuild with
# `cat state.tgz.* | tar xzf - -C runs`), the two logs, and each finished half's Markdown.
if [ -n "${OUT:-}" ]; then
    tar czf - -C "$(dirname "$STATE")" "$(basename "$STATE")" \
        | split -b 15m -d -a 1 - "$OUT/state.tgz."
    cp "$STATE/gpu.log" "$STATE/cpu.log" "$OUT/"
    for half in gpu cpu; do
        if [ -f "$STATE/$half/RESULTS-paper.md" ]; then
            cp "$STATE/$half/RESULTS-paper.md" "$OUT/$half-RESULTS-paper.md"
        fi
    done
    pieces=$(find "$OUT" -maxdepth 1 -name 'state.tgz.*' | wc -l)
    if [ "$pieces" -gt 4 ]; then
        echo "device_check: STATE is $pieces pieces of 15 MiB; only 8 files come back in all"
    fi
fi
exit $status
