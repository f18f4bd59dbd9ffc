"""Command-line flags generated from the config dataclasses, so an option is declared once.

Each field made with ``config.option`` becomes a Typer option whose default is ``None`` (so a
command can tell which flags the user gave, and a preset is not overridden by defaults) and
whose help shows the field's real default, pytorch/examples' style: "(default: 128)".
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import fields

import typer


def _flag_type(hint: object) -> type:
    """The plain type of a field (``int | None`` -> ``int``), which Typer parses."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint  # type: ignore[return-value]


def config_parameters(cls: type, *, exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per flag field of the dataclass ``cls``, in field order."""
    from digitlab.config import flag_help

    hints = typing.get_type_hints(cls)
    params = []
    for f in fields(cls):
        if "help" not in f.metadata or f.name in exclude:
            continue
        decl = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kind = _flag_type(hints[f.name])
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(None, decl, help=flag_help(f), show_default=False),
                annotation=kind | None,
            )
        )
    return params


def with_config_flags(*classes: type, exclude: tuple[str, ...] = ()) -> Callable:
    """Decorate ``command(own options..., **flags)``: the config fields of ``classes`` join its own
    parameters as flags, and arrive in ``flags`` (None where not given)."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        generated = [p for cls in classes for p in config_parameters(cls, exclude=exclude)]
        clash = {p.name for p in own} & {p.name for p in generated}
        if clash:
            raise TypeError(f"{fn.__name__} declares config flags itself: {sorted(clash)}")
        # Typer reads the signature and the annotations; both must list the generated flags.
        params = own + generated
        fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        fn.__annotations__ = {p.name: p.annotation for p in params} | {"return": sig.return_annotation}
        return fn

    return decorate


def given(flags: dict[str, object], cls: type) -> dict[str, object]:
    """The flags of ``cls``'s fields that the user gave (not None). Only flag fields count: ``RunConfig``'s
    ``model`` section is not the ``--model`` flag."""
    names = {f.name for f in fields(cls) if "help" in f.metadata}
    return {k: v for k, v in flags.items() if k in names and v is not None}
