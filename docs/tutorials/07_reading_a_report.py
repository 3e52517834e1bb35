"""
Reading a report: one claim, its criteria, intervals and verdict
================================================================

``make demo`` runs every experiment at quick size and ends with one line per claim; the report
(``report.html``) holds the details. This tutorial runs one experiment, ``train-eval`` (the
claims of the train-vs-eval tutorial, measured on MNIST digits), exactly as the demo does, and
reads what it wrote: the claim, the criteria with their 95% intervals, how they make the
verdict, whether the run reproduces the reference results shipped with normlab, the full-size
verdict beside it, and how to rerun it at full size.
"""

# %%
# Run it as the demo does
# -----------------------
# ``normlab reproduce train-eval --quick`` is the demo restricted to one experiment: mnist5k,
# the NumPy engine, seeds 1000-1002, quick size (a quarter of the full-size steps). The
# terminal summary leads with the reproduction check, then one line per claim: its verdict,
# its key statistic with the 95% interval, whether it reproduces the reference (``rep.``) and
# the verdict of the full-size run.
import json
import subprocess
import sys
import tempfile
from pathlib import Path

out = Path(tempfile.mkdtemp(prefix="normlab-tutorial-")) / "train-eval"
command = [sys.executable, "-m", "normlab", "reproduce", "train-eval", "--quick",
           "--out", str(out)]
summary = subprocess.run(command, capture_output=True, text=True, check=True).stdout
print(summary)

# %%
# Everything the report shows is in ``results.json`` next to it (``normlab report DIR``
# rebuilds the report from it). The claim, word for word from its source:
results = json.loads((out / "results.json").read_text())
exp = results["experiments"]["train-eval"]
print(exp["source"])
print(exp["claim"])

# %%
# The criteria
# ------------
# A claim is cut into parts, each a statistic measured on every seed and compared with a bar
# fixed before the confirmatory seeds were run. The report's "Evidence" table lists them:
# the statistic, the bar, the mean with its 95% interval over the seeds (the test set's
# sampling noise included), and a verdict per part from one-sided tests, Holm-adjusted over
# the claim's parts. *Preconditions* check that the setup can show the effect at all;
# *demonstrations* show a mechanism that cannot fail by construction and never make a claim
# hold.
for c in exp["criteria"]:
    role = "precondition" if c["precondition"] else c["role"]
    print(f"{c['part']}\n    [{role}] {c['statistic']}: {c['interval']['text']} "
          f"vs {c['direction']} {c['bar']:g} -> {c['verdict']}")

# %%
# How the parts make the verdict (the report prints this rule at the top):
print(results["combination_rule"])
print("\nverdict:", exp["verdict"])

# %%
# A picture of the rule: each evidence part's per-seed values (dots), their mean and 95%
# interval (the bar through it) and the bar the claim must clear (dashed). A part *holds*
# when its whole interval is on the claim's side of the bar, *does not hold* when it is
# entirely on the other side, and is *inconclusive* when it straddles the bar: more seeds
# would be needed to tell.
import matplotlib.pyplot as plt

evidence = [c for c in exp["criteria"] if c["role"] == "evidence"]
fig, axes = plt.subplots(len(evidence), 1, figsize=(8, 1.5 * len(evidence) + 0.6),
                         squeeze=False)
for ax, c in zip(axes[:, 0], evidence, strict=True):
    iv = c["interval"]
    lo, hi = iv["ci95"]
    ax.errorbar([iv["mean"]], [0], xerr=[[iv["mean"] - lo], [hi - iv["mean"]]], fmt="o",
                color="C0", capsize=6, label="mean, 95% interval")
    ax.plot(iv["per_seed"], [0.25] * len(iv["per_seed"]), "k.", label="one seed")
    ax.axvline(c["bar"], color="C3", ls="--", label=f"bar: {c['direction']} {c['bar']:g}")
    ax.set_yticks([])
    ax.set_ylim(-0.6, 0.6)
    ax.set_title(f"{c['part']} -> {c['verdict']}", fontsize=9, loc="left")
axes[0, 0].legend(fontsize=8, loc="upper right", ncols=3)
fig.tight_layout()

# %%
# Did this run reproduce the reference?
# -------------------------------------
# normlab ships the results of the demo's configuration (quick size) and of the confirmatory
# full-size run (mnist5k, seeds 1000-1004). Every reproduction is compared with the reference
# of the same size, data, engine and seeds: *bit-identical* when every run's metrics at every
# seed are exactly the reference's; *within tolerance* when the machine's floating point
# differs (another CPU's vector width changes the last bits of the sums, and training
# amplifies them) but every criterion's statistic stays within the stated tolerance and the
# verdict is the same; otherwise *does not reproduce*, with the largest difference found.
block = results["reproduction"]
row = block["experiments"]["train-eval"]
print(block["summary"])
print("\ncompared with:", block["reference"])
print("status:", row["status"])
print("detail:", row["detail"])
print("tolerance:", block["tolerance"])
print("full-size verdict:", row["full_verdict"], f"({block['full_reference']})")

# %%
# A quick run is small: its verdict can be *inconclusive* where the full-size run's holds,
# because three seeds and a quarter of the steps give wider intervals. The full-size verdict
# printed beside it is the one the claim stands on.
#
# Rerun it at full size
# ---------------------
# Full size is the default: without ``--quick`` the same command runs every step of the
# setup over seeds 1000-1004, and is compared with the full-size reference::
#
#     normlab reproduce train-eval --out runs/train-eval-full
#     normlab report runs/train-eval-full            # rebuild report.html from results.json
#
# A run is resumable (re-run the same command after an interruption), and ``--jobs`` sets the
# worker processes. Other seeds (``--seed``, ``--seeds``), data (``--data``) or engine
# (``--engine torch``) have no reference: the summary then says "no reference for this run's
# configuration" and checks nothing, and the full-size verdict still stands beside each claim.
