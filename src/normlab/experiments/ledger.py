"""The ledger: every statement of the five study notes that can be true or false, and what
checks it.

The notes are ``shared/seeds/NNN_*.txt`` (Korean), named here by their first three digits:
000 (a BN summary with its limits), 001 (Deep Learning from Scratch sec. 6.3, with its code),
002 (a reading of Ioffe & Szegedy 2015 sec. 3), 003 (a BN wiki page: PyTorch usage, variants,
practice) and 004 (why normalise; BN vs LayerNorm). Each :class:`Statement` is our one-line
English paraphrase with one status:

* ``tested``: judged by one part (a :class:`~normlab.runner.evidence.Criterion`, named by its
  ``part`` label) of one registered experiment; ``tests/experiments/test_ledger.py`` fails when
  the experiment or the part is renamed.
* ``checked``: arithmetic or a library fact, computed by ``tests/experiments/test_ledger.py``
  (the note's number next to the exact one); no experiment needed.
* ``definition``: says what something is; there is nothing to find out.
* ``not measured``: could be tested, but no experiment here does; ``remark`` says why.

``number`` is the note's own number, where it gives one; ``remark`` what we found or why a row
has the status it has (errors in the notes are said there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

STATUSES = ("tested", "checked", "definition", "not measured")
NOTES = ("000", "001", "002", "003", "004")


@dataclass(frozen=True)
class Statement:
    note: str
    statement: str
    status: str = "tested"
    experiment: str | None = None
    part: str | None = None
    number: str = ""
    remark: str = ""

    def __post_init__(self) -> None:
        if self.note not in NOTES:
            raise ValueError(f"note: expected one of {NOTES}, got {self.note!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")
        mapped = self.experiment is not None and self.part is not None
        if (self.status == "tested") != mapped:
            raise ValueError(f"status {self.status!r}: expected experiment and part exactly "
                             f"when tested, got {self.experiment!r} / {self.part!r}")
        if self.status in ("checked", "not measured") and not self.remark:
            raise ValueError(f"remark: a {self.status!r} statement says how or why, got none")

    def to_json(self) -> dict:
        return asdict(self)


def _t(note, statement, experiment, part, number="", remark="") -> Statement:
    return Statement(note, statement, "tested", experiment, part, number, remark)


def _d(note, statement, remark="", number="") -> Statement:
    return Statement(note, statement, "definition", number=number, remark=remark)


def _c(note, statement, remark, number="") -> Statement:
    return Statement(note, statement, "checked", number=number, remark=remark)


def _n(note, statement, remark, number="") -> Statement:
    return Statement(note, statement, "not measured", number=number, remark=remark)


# Parts of the existing experiments the ledger reads (spelled once; the test checks them).
FIG1_SOONER = ("paper-fig1", "(a) BN reaches the target sooner")
FIG1_DRIFT = ("paper-fig1", "(b, c) the sigmoid inputs drift less with BN")
INIT_EVERY = ("init-scale", "BN learns at almost every std")
INIT_MORE = ("init-scale", "BN learns at more stds than the plain net")
INIT_SMALL = ("init-scale", "the plain net fails at std 1e-4")
EVAL_LARGEST = ("train-eval", "(a) the largest batch matches eval mode")
EVAL_SMALL = ("train-eval", "(a) small batches degrade in training mode")
EVAL_BATCH = ("train-eval", "(a) eval mode does not depend on the batch")
REG_ALONE = ("regularization", "(1) BN alone does as well as dropout")
REG_LITTLE = ("regularization", "(2) dropout adds little to BN")
LAND_LOSS = ("landscape", "loss variation is smaller with BN")
LAND_GRAD = ("landscape", "gradient change is smaller with BN")
RNN_LN = ("rnn-norm", "LayerNorm trains faster")
LR_MLP = ("learning-rate", "(a) mlp: BN trains at a higher rate")
BS_BN = ("batch-size", "(a) BN degrades at 2 images per group")
BS_GN = ("batch-size", "(b) GroupNorm beats BN at 2 images")
BS_LN = ("batch-size", "(b) LayerNorm beats BN at 2 images")
CONV_SAME = ("conv-bn", "per-channel BN is as accurate as per-activation BN")
CONV_FEWER = ("conv-bn", "... with far fewer parameters")
AFF_LINEAR = ("affine", "(a) without gamma/beta most sigmoid inputs are near-linear")
AFF_LEFT = ("affine", "(b) learned gamma/beta move inputs out of the linear range")
INV_TABLE = ("invariances", "the measured table matches Ba et al.'s Table 1 (18 cells)")
INV_BN2D = ("invariances", "BatchNorm2d (N, H, W): as its statistics imply")
INV_LN = ("invariances", "LayerNorm (features): as its statistics imply")
INV_IN = ("invariances", "InstanceNorm2d (H, W): as its statistics imply")


LEDGER: tuple[Statement, ...] = (
    # --- 000: a BN summary (ICS, train/inference, FC and conv, limits)
    _d("000", "Full-batch gradient descent uses all training data per update; SGD averages "
       "the gradient over a mini-batch."),
    _d("000", "An epoch is one pass over the training data, often reshuffled each epoch.",
       "every experiment here reshuffles each epoch (runner/train.epoch_batch)"),
    _t("000", "A layer's input distribution changes as earlier layers train (internal "
       "covariate shift), and BN reduces it.", *FIG1_DRIFT),
    _d("000", "BN normalises with each mini-batch's own mean and variance."),
    _t("000", "BN speeds up training.", *FIG1_SOONER),
    _t("000", "BN makes training less sensitive to the weight initialisation.", *INIT_MORE),
    _t("000", "BN improves generalisation.", *REG_ALONE),
    _t("000", "Normalising puts every layer's features on one scale, which makes the learning "
       "rate easier to choose.", *LR_MLP),
    _t("000", "The learned scale and shift map normalised values to a distribution suited to "
       "the activation (ReLU would zero everything below 0).", *AFF_LEFT,
       remark="measured for sigmoid nets (the paper's Fig. 1 MLP), not ReLU"),
    _t("000", "At inference the mean and variance are fixed to moving averages from "
       "training.", *EVAL_LARGEST),
    _d("000", "A moving average over the last N batches is sometimes replaced by an "
       "exponential one."),
    _t("000", "At inference normalisation and scale/shift merge into one multiply and one "
       "add, which removes BN's inference cost.", "cost",
       "(c) folded, it costs at most 5% more than no BN",
       remark="the merge itself is exact to 3e-6 (fold tests); the timing is machine-dependent"),
    _t("000", "The fully connected layer's bias duplicates BN's beta, so it can be removed.",
       "bias", "(b) the same training: the same test accuracy without the bias",
       remark="a demonstration: the bias gets no gradient and ends up in running_mean"),
    _t("000", "A fully connected layer is normalised per node, a convolutional layer per "
       "channel over batch, height and width.", *CONV_SAME),
    _t("000", "BN depends strongly on the mini-batch: too small a batch fails (a single "
       "sample is its own mean).", *BS_BN),
    _t("000", "Memory limits make BN hard to apply to RNNs and large CNNs.", "cost",
       "(d) BN keeps an activation-sized array per layer",
       remark="only the bytes BN keeps per layer are measured; the RNN half is not: normlab's "
       "LSTMs are too small for memory to limit them"),
    _t("000", "Too large a batch does not work well either.", "large-batch",
       "(a) the large batch loses >= 1 point (512 vs 32, same epochs)",
       remark="at the same epochs and rate; ghost BN and as many steps as the small batch "
       "recover it (parts (b), (c))"),
    _t("000", "BN lowers parallel efficiency and lengthens training time.", "cost",
       "(a) BN slows a training step",
       remark="one process; across 2 gloo processes SyncBatchNorm's extra time per step is "
       "part (e)"),
    # --- 001: Deep Learning from Scratch sec. 6.3
    _t("001", "Well-spread activations make training go smoothly, and BN forces that "
       "spread.", *INIT_EVERY),
    _t("001", "BN speeds up learning.", *FIG1_SOONER),
    _t("001", "BN depends little on the initial weights.", *INIT_MORE),
    _t("001", "BN suppresses overfitting, so dropout is less needed.", *REG_LITTLE),
    _d("001", "In training each mini-batch is normalised to mean 0 and variance 1.",
       "true up to epsilon; checked against torch in tests/functional/test_functional_parity.py"),
    _c("001", "Epsilon is a small value that prevents division by zero.",
       "10e-7 is 1e-6 (DLfS's code), not 1e-7; PyTorch's default is 1e-5; init-scale uses "
       "the book's 1e-6", number="10e-7"),
    _t("001", "BN goes before (or after) the activation.", "placement",
       "(b) sigmoid: after no better by at most 1 point",
       remark="judged as an equivalence (4 parts, margin 1 point); the sigmoid pair here"),
    _d("001", "Gamma starts at 1 and beta at 0; both are learned."),
    _d("001", "The backward pass follows the computational graph.",
       "normlab's closed-form backward is float64 gradient-checked against finite "
       "differences (tests/functional/test_functional_gradcheck.py)"),
    _t("001", "Without BN many MNIST runs at a poor initialisation never start learning; "
       "with BN they do (DLfS fig. 6-19).", *INIT_SMALL),
    _c("001", "DLfS's running average (running = 0.9 running + 0.1 batch) is PyTorch's "
       "momentum 0.1.",
       "the same running mean; but DLfS averages the biased batch variance where PyTorch "
       "averages the unbiased one (x m/(m-1))", number="momentum 0.9"),
    # --- 002: Ioffe & Szegedy 2015 sec. 3
    _d("002", "Each scalar feature is normalised independently to mean 0 and variance 1."),
    _t("002", "Normalising a sigmoid's inputs confines them to its near-linear region.",
       *AFF_LINEAR, remark="the note says the 0..1 region; the paper (and we) the range "
       "around 0"),
    _c("002", "Gamma = sqrt(Var[x]) and beta = E[x] make BN the identity.",
       "exact up to epsilon (gamma = sqrt(Var + eps)); tests/experiments/test_ledger.py"),
    _t("002", "Fixed input statistics reduce internal covariate shift, which speeds up "
       "training.", *FIG1_DRIFT),
    _t("002", "Inference uses population statistics (Alg. 2).", *EVAL_LARGEST),
    _t("002", "A convolutional BN normalises per feature map (sec. 3.2).", *CONV_SAME),
    _t("002", "BN keeps activations out of saturation, so higher learning rates train "
       "(sec. 3.3).", *LR_MLP),
    _t("002", "BN is unaffected by the scale of the parameters: BN(aWu) = BN(Wu).",
       *INV_TABLE, remark="a demonstration: it follows from the formula"),
    _t("002", "BN regularises: dropout can be removed or weakened (sec. 3.4).", *REG_ALONE),
    # --- 003: a BN wiki page
    _d("003", "Epsilon is usually 1e-5 (PyTorch's default).", number="1e-5"),
    _c("003", "Gamma = sqrt(var + eps) and beta = mu restore the original activations.",
       "exact; tests/experiments/test_ledger.py"),
    _t("003", "Internal covariate shift makes training unstable and slow; BN stabilises "
       "it.", *FIG1_DRIFT),
    _t("003", "BN keeps the gradient's scale steady (neither too large nor too small).",
       *LAND_GRAD),
    _t("003", "BN keeps sigmoid/tanh inputs out of saturation (less vanishing gradient).",
       *AFF_LINEAR, remark="the share of inputs within [-2, 2] is reported beside it"),
    _c("003", "The running averages use momentum alpha = 0.9 (PyTorch's default momentum is "
       "0.1, the same update).", "running = 0.9 running + 0.1 batch in both; "
       "tests/experiments/test_ledger.py", number="0.9 vs 0.1"),
    _t("003", "Eval mode gives the same output whatever the batch, even for one sample.",
       *EVAL_BATCH),
    _t("003", "BN usually goes after the linear layer and before the activation; some work "
       "puts it after.", "placement", "(a) relu: after no better by at most 1 point",
       remark="ducha-aiki's CaffeNet/ImageNet benchmark: after 2.5 points better"),
    _d("003", "BatchNorm1d's output has mean ~0 and std ~1 (train mode)."),
    _t("003", "BatchNorm2d normalises each channel over (N, H, W), one gamma/beta per "
       "channel.", *CONV_FEWER),
    _t("003", "model.train() and model.eval() must be set correctly.", *EVAL_SMALL),
    _t("003", "BN lets you use larger learning rates safely.", *LR_MLP),
    _t("003", "Training is typically 2-10x faster (epochs to the same performance).",
       *FIG1_SOONER, number="2-10x"),
    _t("003", "BN's batch noise regularises; often enough without dropout.", *REG_ALONE),
    _t("003", "Small batches give unstable statistics; use at least 16-32, avoid 2.", *BS_BN,
       number="batch >= 16-32"),
    _t("003", "BN adds computation at training and at inference.", "cost",
       "(b) BN slows an eval forward", remark="(a) times the training step"),
    _t("003", "BN does not suit RNNs; LayerNorm does.", *RNN_LN,
       remark="variable sequence length itself is not tested (every sequence has one "
       "length here)"),
    _t("003", "LayerNorm normalises each sample over its features, independent of the batch "
       "size.", *BS_LN),
    _t("003", "InstanceNorm normalises each channel of each sample.", *INV_IN,
       remark="a demonstration: the shared-statistics map measures its (H, W) sets"),
    _n("003", "InstanceNorm works well for style transfer.",
       "normlab has no style-transfer task or image-generation model"),
    _t("003", "GroupNorm normalises groups of channels and is stable with small batches.",
       *BS_GN),
    _t("003", "BN is effective for deep networks (> 10 layers) and less needed for shallow "
       "ones (< 5).", "depth", "(a) the benefit grows with depth (slope per doubling)",
       number="> 10 / < 5 layers",
       remark="pilot (quick, mnist5k): gap 3 points at depth 2, 79 at 5, 74 at 20: a step "
       "between 2 and 5 layers rather than at 10"),
    _t("003", "BN and dropout together can weaken the effect; if both, use a low dropout "
       "rate (0.2) after BN/ReLU.", "dropout-bn",
       "(b) dropout after the last BN is more accurate (p = 0.5)", number="p = 0.2",
       remark="rates 0.1/0.3/0.5 before a BN vs after the last BN; ducha-aiki's CaffeNet "
       "benchmark: dropout 0.2 with BN 0.527, 0.5: 0.499, 0: 0.513"),
    _c("003", "Worked example: feature [1, 3, 5, 7] has mean 4 and variance 5, so x=1 "
       "normalises to -1.34.",
       "ERROR in the note: -1.34 is the train-mode value; the note calls bn.eval() first, "
       "and a fresh BatchNorm1d in eval mode uses running statistics (0, 1) and gives "
       "1/sqrt(1 + 1e-5) = 0.999995; tests/experiments/test_ledger.py", number="-1.34"),
    _n("003", "BN made very deep networks (hundreds of layers) trainable.",
       "hundreds of layers are beyond two CPU cores; the depth experiment goes to 20"),
    _t("003", "Recent work says BN's main effect is a smoother loss landscape, not less "
       "internal covariate shift.", *LAND_LOSS),
    # --- 004: why normalise; BN vs LayerNorm
    _t("004", "Vanishing/exploding gradients are mild with few layers and accumulate with "
       "depth.", "depth", "(b) the plain net fails at depth 20",
       remark="the plain sigmoid net's failure, not its gradients, is measured"),
    _d("004", "A sigmoid saturates for large |x|: its derivative is ~0 and learning slows."),
    _c("004", "Normalised inputs lie in -1..1 66% and in -2..2 99% of the time.",
       "ERROR in the note: for a normal variable the shares are 68.27% within 1 std, "
       "95.45% within 2 and 99.73% within 3 (99% is within 2.58); "
       "tests/experiments/test_ledger.py. "
       "Measured (affine, gamma/beta held, pilot seeds): 63% within 1, 98% within 2",
       number="66% / 99%"),
    _t("004", "Near 0 the sigmoid is almost linear, so normalising alone removes the "
       "nonlinearity; gamma and beta fix that.", *AFF_LEFT),
    _t("004", "BN does not decorrelate features but still speeds up learning.", *FIG1_SOONER),
    _t("004", "In BN every input of a batch shares one mean per feature (images: per channel "
       "over 100 x 10 x 10 values).", *INV_BN2D,
       remark="a demonstration: the shared-statistics map shows (N, H, W) per channel"),
    _n("004", "For RNNs BN takes statistics over batch and time of the input-to-hidden "
       "product only, BN(W_x x).",
       "rnn-norm trains this sequence-wise BN but reports it without a bar"),
    _t("004", "LayerNorm normalises each input over its own vector.", *INV_LN,
       remark="a demonstration"),
)


def counts(ledger=LEDGER) -> dict[str, int]:
    """Statements in all and per status."""
    out = {"statements": len(ledger)}
    out.update({s: sum(x.status == s for x in ledger) for s in STATUSES})
    return out
