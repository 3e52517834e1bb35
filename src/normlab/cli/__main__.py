"""``python -m normlab.cli``: the ``normlab`` command."""

from . import app

app()
