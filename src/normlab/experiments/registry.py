"""Name -> experiment. A new experiment is one module plus one line here."""

from __future__ import annotations

from ..runner.base import Experiment
from .affine import Affine
from .batch_size import BatchSize
from .bias import Bias
from .conv_bn import ConvBN
from .cost import Cost
from .depth import Depth
from .dropout_bn import DropoutBN
from .init_scale import InitScale
from .invariances import Invariances
from .landscape import Landscape
from .large_batch import LargeBatch
from .learning_rate import LearningRate
from .paper_fig1 import PaperFig1
from .placement import Placement
from .regularization import Regularization
from .rnn_norm import RnnNorm
from .running_stats import RunningStats
from .train_eval import TrainEval

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (PaperFig1(), InitScale())}
EXPERIMENTS[TrainEval.name] = TrainEval()
EXPERIMENTS[Regularization.name] = Regularization()
EXPERIMENTS[Landscape.name] = Landscape()
EXPERIMENTS[RnnNorm.name] = RnnNorm()
EXPERIMENTS[LearningRate.name] = LearningRate()
EXPERIMENTS[BatchSize.name] = BatchSize()
EXPERIMENTS[ConvBN.name] = ConvBN()
EXPERIMENTS[RunningStats.name] = RunningStats()
EXPERIMENTS[Invariances.name] = Invariances()
EXPERIMENTS[Bias.name] = Bias()
EXPERIMENTS[Affine.name] = Affine()
EXPERIMENTS[Placement.name] = Placement()
EXPERIMENTS[Depth.name] = Depth()
EXPERIMENTS[DropoutBN.name] = DropoutBN()
EXPERIMENTS[Cost.name] = Cost()
EXPERIMENTS[LargeBatch.name] = LargeBatch()


def get(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(f"experiment: expected one of {', '.join(EXPERIMENTS)}, "
                         f"got {name!r}") from None
