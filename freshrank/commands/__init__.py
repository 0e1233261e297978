"""CLI command groups that live outside freshrank/cli.py; each module registers on ``freshrank.cli.app``.

A module listed in ``COMMAND_MODULES`` is imported by ``freshrank.cli`` after the app exists.
"""

COMMAND_MODULES: tuple[str, ...] = ("freshrank.commands.serve", "freshrank.commands.quarantine", "freshrank.commands.report", "freshrank.commands.watch")
