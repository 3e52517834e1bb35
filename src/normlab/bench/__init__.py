"""``normlab bench``: normalisation speed against the textbook code and PyTorch CPU eager.

The suite (:mod:`.suite`, whose docstring has the timing method and the byte model), its cases
(:mod:`.cases`), the implementations (:mod:`.adapters`), the timers (:mod:`.timing`), the model
rows (:mod:`.models`), the JSON file (:mod:`.output`), the tables (:mod:`.tables`) and the command
(:mod:`.command`)."""

from .cases import FULL_CASES, TINY_CASES, Case
from .command import main
from .output import check_json_path, write_json
from .suite import run
from .tables import markdown, models_markdown

__all__ = ["FULL_CASES", "TINY_CASES", "Case", "check_json_path", "main", "markdown",
           "models_markdown", "run", "write_json"]
