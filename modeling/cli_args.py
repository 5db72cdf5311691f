"""argparse plumbing the modeling commands share: flags generated from a config dataclass, and the model flags.

A stopgap until every command takes its flags from jsonargparse (as ``python -m modeling.train`` does through
LightningCLI); until then the commands build their parsers from these two helpers rather than each its own.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, fields
from typing import Any, Literal

import docstring_parser


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string under it), whitespace collapsed: the ``--help`` text of its flag."""
    return {p.arg_name: " ".join(p.description.split()) for p in docstring_parser.parse_from_object(cls).params
            if p.description}


def field_kind(annotation: Any) -> tuple[Any, bool]:
    """(base type, optional) for the annotations configs use: int, str, float, bool, Literal, tuple."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return annotation, False


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of dataclass ``cls`` (``vocab_size`` -> ``--vocab-size``), its help from the field's
    docstring and default; bools get ``--x/--no-x``, tuples take several values, Literals are choices. Use with
    ``argument_default=argparse.SUPPRESS`` so that only the flags given land in the namespace."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        base, optional = field_kind(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = "required" if f.default is MISSING else f"default: {f.default}"
        kwargs: dict[str, Any] = {"dest": f.name, "help": f"{docs.get(f.name, '')} ({default})"}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is tuple:
            kwargs["nargs"] = "+"
        elif typing.get_origin(base) is Literal:
            kwargs["choices"] = typing.get_args(base)
        else:
            kwargs["type"] = base
        if optional and base is not bool:
            kwargs["metavar"] = f.name.upper()
        parser.add_argument(flag, **kwargs)


def add_model_arguments(p: argparse.ArgumentParser, log_every: int) -> None:
    """The flags every command that loads a model shares: which model, where it runs, in what dtype."""
    p.add_argument(
        "--model", required=True, help="a Lightning .ckpt, a Hugging Face model dir or a PEFT adapter dir"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype (default auto: float32 on CPU, bfloat16 on a GPU)",
    )
    p.add_argument("--tokenizer", help="tokenizer dir overriding the one saved with the model")
    p.add_argument(
        "--log-every", type=int, default=log_every, help=f"log progress every N batches (default {log_every})"
    )
