"""Close names for a name the user mistyped ("did you mean ...")."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``known`` that look like ``name`` (case and ``-``/``_`` ignored)."""
    def key(text: str) -> str:
        return text.lower().replace("-", "_").replace(" ", "_")

    by_key: dict[str, str] = {}
    for candidate in known:
        by_key.setdefault(key(candidate), candidate)
    wanted = key(name)
    found = difflib.get_close_matches(wanted, list(by_key), n=n, cutoff=0.6)
    # a name the user typed a part of (b200 for b200_sxm, qwen3-8b for Qwen/Qwen3-8B)
    found += [k for k in by_key if wanted and wanted in k and k not in found]
    return [by_key[k] for k in found[:n]]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean X or Y?"`` or an empty string when nothing is close."""
    found = close_names(name, known)
    if not found:
        return ""
    listed = found[0] if len(found) == 1 else ", ".join(found[:-1]) + " or " + found[-1]
    return f"; did you mean {listed}?"
