"""``python -m training.cli``: the same as the ``r2end`` console script."""

from training.cli import app

app(prog_name="r2end")
