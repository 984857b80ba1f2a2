"""Built-in behaviour, registered like any plugin, as ``trylast`` so installed plugins win."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl(trylast=True)
def create_scheduler(config, pool):
    from .scheduler import FairScheduler

    return FairScheduler(config, pool)


@hookimpl(trylast=True)
def choose_unload(state, now, config):
    from .unload import choose

    return choose(state, now)


@hookimpl
def register_commands(cli):
    from .cli import commands, doctor_command, server_commands
    from .pull import commands as pull_commands

    commands.register(cli)
    server_commands.register(cli)
    doctor_command.register(cli)
    pull_commands.register(cli)
