"""Names and modules that moved keep their old paths for one release, each with a
DeprecationWarning naming the new one (hoshikage_core.moved)."""

from __future__ import annotations

import importlib
import sys
import warnings


def deprecations(run) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = run()
    return value, [str(w.message) for w in caught if w.category is DeprecationWarning]


def test_the_pool_states_are_the_protocols_and_their_old_names_warn():
    from hoshikage_core import protocol, unload

    value, messages = deprecations(lambda: (unload.PoolState, unload.LOADED))
    assert value == (protocol.PoolState, protocol.LOADED)
    assert messages == [
        "hoshikage_core.unload.PoolState moved to hoshikage_core.protocol.PoolState; "
        "the old path goes in the next release",
        "hoshikage_core.unload.LOADED moved to hoshikage_core.protocol.LOADED; "
        "the old path goes in the next release",
    ]


def test_an_old_module_path_is_the_same_module_with_a_warning():
    from hoshikage_core.moved import OldPaths

    from hoshikage_core import units

    finder = OldPaths("hoshikage_core", {"old_units_for_test": "units"})
    sys.meta_path.insert(0, finder)
    try:
        module, messages = deprecations(
            lambda: importlib.import_module("hoshikage_core.old_units_for_test")
        )
    finally:
        sys.meta_path.remove(finder)
        sys.modules.pop("hoshikage_core.old_units_for_test", None)

    assert module is units and units.__spec__.name == "hoshikage_core.units"
    assert messages == [
        "hoshikage_core.old_units_for_test moved to hoshikage_core.units; "
        "the old path goes in the next release"
    ]


def test_the_cli_modules_old_paths_warn():
    from hoshikage_core.cli import client, commands

    sys.modules.pop("hoshikage_core.commands", None)
    sys.modules.pop("hoshikage_core.client", None)
    (old_commands, old_client), messages = deprecations(
        lambda: (
            importlib.import_module("hoshikage_core.commands"),
            importlib.import_module("hoshikage_core.client"),
        )
    )
    assert old_commands is commands and old_client is client
    assert messages == [
        "hoshikage_core.commands moved to hoshikage_core.cli.commands; "
        "the old path goes in the next release",
        "hoshikage_core.client moved to hoshikage_core.cli.client; "
        "the old path goes in the next release",
    ]
