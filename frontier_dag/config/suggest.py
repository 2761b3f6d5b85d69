"""Close names for a name the user mistyped ("did you mean ...")."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def _key(text: str) -> str:
    """A name compared without case, ``-``/``_`` and a Hugging Face organisation."""
    return text.split("/")[-1].lower().replace("-", "_").replace(" ", "_")


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``known`` that look like ``name``: first those that begin with it (b200
    for b200_sxm), then the most similar."""
    by_key: dict[str, str] = {}
    for candidate in known:
        by_key.setdefault(_key(candidate), candidate)
    wanted = _key(name)
    found = [k for k in by_key if wanted and k.startswith(wanted)]
    found += [k for k in difflib.get_close_matches(wanted, list(by_key), n=n, cutoff=0.6) if k not in found]
    return [by_key[k] for k in found[:n]]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean X or Y?"`` or an empty string when nothing is close."""
    found = close_names(name, known)
    if not found:
        return ""
    listed = found[0] if len(found) == 1 else ", ".join(found[:-1]) + " or " + found[-1]
    return f"; did you mean {listed}?"
