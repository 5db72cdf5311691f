"""Open a tokenizer for any stage: the one loader, with the same checks and fix-it messages everywhere.

Training (``--data.tokenizer``), evaluation and generation (``--tokenizer``, or the tokenizer saved with the
model) and ``modeling.tokenizer inspect`` all come through :func:`load_tokenizer`; only the flag that messages
name, the error class and two switches (a bare ``tokenizer.json``, hub names) differ between them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from common.files import InputError, names_a_local_path

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Files of which a tokenizer directory holds at least one (fast, or slow tokenizers' vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")


def load_tokenizer(
    path: str | Path,
    flag: str = "--tokenizer",
    *,
    named: str | None = None,
    error: type[Exception] = InputError,
    require_eos: bool = True,
    hub: bool = True,
    json_file: bool = False,
) -> PreTrainedTokenizerBase:
    """Load a tokenizer directory with AutoTokenizer, failing with ``error`` and a message that says the fix.

    Args:
        path: A tokenizer directory (``python -m modeling.tokenizer train --output DIR``, or ``save_pretrained``'s),
            or a hub name when ``hub``.
        flag: The option that sets the path, named in the fix: ``--data.tokenizer`` for training, ``--tokenizer``
            for the other commands.
        named: How messages name the path when it did not come from ``flag`` (``the checkpoint's data.tokenizer``);
            default: ``flag``.
        error: The exception raised, so each command reports it as its own usage error.
        require_eos: Refuse a tokenizer without an eos token (packing puts eos between documents).
        hub: Names that are not plainly local paths (``gpt2``, ``org/name``) are looked up on the hub; otherwise
            only local paths are accepted (a hub lookup offline takes most of a minute of retries).
        json_file: Also accept a bare ``tokenizer.json`` file (special-token roles are then unknown).
    """
    # imported here: transformers takes seconds to import, which tokenizer training (it never loads one) saves
    from transformers import AutoTokenizer

    path = str(path)
    name = named or flag
    fix = (f"Train one with `python -m modeling.tokenizer train --input SHARDS --output {path.strip() or 'DIR'}`, or "
           f"point {flag} at a directory written by save_pretrained (tokenizer.json + tokenizer_config.json).")
    if not path.strip():
        raise error(f"{name} is empty. {fix}")
    local = Path(path).expanduser()
    if local.is_file():
        if json_file and local.suffix == ".json":
            return _from_json_file(local, name, error)
        raise error(f"{name} {path!r} is a file: give the directory that holds the tokenizer "
                    f"({str(local.parent)!r} if this is its tokenizer.json)")
    if local.is_dir() and not any((local / f).is_file() for f in TOKENIZER_FILES):
        raise error(f"{name} {path!r} holds no tokenizer (none of {list(TOKENIZER_FILES)}; it holds "
                    f"{sorted(x.name for x in local.iterdir())[:10]}). {fix}")
    if not local.exists() and (not hub or names_a_local_path(path)):
        if json_file:
            raise error(f"{name} {path!r} is neither a tokenizer directory nor a tokenizer.json file: no such "
                        f"directory or file. {fix}")
        raise error(f"{name} {path!r}: no such directory. {fix}")
    try:
        # Not a local folder: a hub name ("gpt2"); offline and not cached, that fails and lands below.
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local.exists() else path)
    except (OSError, ValueError) as err:
        where = ("that directory does not hold a loadable tokenizer" if local.exists() else
                 "no such directory, nor a tokenizer on the hub reachable from here")
        raise error(f"{name}: cannot load a tokenizer from {path!r} ({where}: {err}). {fix}") from err
    if require_eos:
        check_eos(tokenizer, f"{name} {path!r}", flag, error)
    return tokenizer


def check_eos(tokenizer: PreTrainedTokenizerBase, named: str, flag: str = "--tokenizer",
              error: type[Exception] = InputError) -> None:
    """Packing needs an eos token between documents: refuse a tokenizer without one, saying how to get one."""
    if tokenizer.eos_token_id is None:
        raise error(
            f"{named} has no eos token, which separates packed documents. Retrain it with an eos special token, or "
            "add one: tokenizer.add_special_tokens({'eos_token': '</s>'}) and save_pretrained"
            + ("" if named.startswith(flag) else f"; then pass it with {flag}") + "."
        )


def _from_json_file(path: Path, name: str, error: type[Exception]) -> PreTrainedTokenizerBase:
    from transformers import PreTrainedTokenizerFast

    try:
        return PreTrainedTokenizerFast(tokenizer_file=str(path))
    except Exception as err:  # the tokenizers library raises a bare Exception for a file it cannot parse
        raise error(f"{name} {str(path)!r} is not a tokenizer.json the tokenizers library can read ({err})") from err
