"""``python -m normlab``: the ``normlab`` command."""

from normlab.cli import app

app(prog_name="normlab")
