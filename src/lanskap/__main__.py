"""``python -m lanskap`` (and ``accelerate launch -m lanskap train …``)."""

from lanskap.cli.main import entry

entry()
