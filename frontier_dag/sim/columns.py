"""A finished result table as named numpy columns: what a run builds its requests and
iterations tables as, so that simulating and summarising never import pandas.

``Columns`` converts to a pandas DataFrame on demand (``to_frame``: what the Python API
and the analysis read) and to an Arrow table for requests.parquet and
iterations.parquet (``to_arrow``), with the same schema, the pandas metadata included,
as ``pyarrow.Table.from_pandas(columns.to_frame(), preserve_index=False)`` would write,
without building the DataFrame.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# The numeric dtypes written as they are (pandas' name for each is numpy's).
_PLAIN = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                    "float32", "float64"})


@dataclass(frozen=True)
class Categories:
    """A categorical column: ``codes`` index ``categories`` (-1: missing), as
    ``pandas.Categorical.from_codes``."""

    codes: np.ndarray
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def code_dtype(self) -> np.dtype:
        """The integer type pandas keeps the codes in (the smallest that holds them)."""
        n = len(self.categories)
        return np.dtype(np.int8 if n < 2**7 else np.int16 if n < 2**15 else np.int32 if n < 2**31 else np.int64)

    def labels(self) -> np.ndarray:
        """Each row's category as a string (None where missing)."""
        names = np.array([*self.categories, None], dtype=object)
        return names[np.where(self.codes < 0, len(self.categories), self.codes)]


Column = np.ndarray | Categories


class Columns:
    """Equal-length columns by name, in order. ``table[name]`` is the column (an ndarray, or
    ``Categories``); ``len(table)`` its rows."""

    def __init__(self, data: dict[str, Column]):
        lengths = {len(c) for c in data.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self._data = data
        self._rows = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, name: str) -> Column:
        return self._data[name]

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    @property
    def columns(self) -> list[str]:
        return list(self._data)

    @property
    def nbytes(self) -> int:
        return sum(c.codes.nbytes if isinstance(c, Categories) else c.nbytes for c in self._data.values())

    def to_frame(self) -> pd.DataFrame:
        """The table as a DataFrame (numeric columns share the arrays)."""
        import pandas as pd

        return pd.DataFrame({name: _pandas_column(c) for name, c in self._data.items()}, copy=False)

    def to_arrow(self) -> pa.Table:
        """The table for a parquet file, as ``pyarrow.Table.from_pandas(self.to_frame(),
        preserve_index=False)`` builds it (the pandas metadata included)."""
        import pyarrow as pa

        if not self._arrow_ready():  # what only pandas knows how to write: let it
            return pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        pandas_version = _pandas_version()
        # pandas 3 keeps string categories as its pyarrow-backed ``str`` (large_string), pandas 2 as objects
        strings = pa.large_string() if int(pandas_version.split(".")[0]) >= 3 else pa.string()
        arrays, described = [], []
        for name, c in self._data.items():
            if isinstance(c, Categories):
                codes = c.codes.astype(c.code_dtype, copy=False)
                indices = _arrow(pa, pa.from_numpy_dtype(codes.dtype), codes, codes < 0)
                arrays.append(pa.DictionaryArray.from_arrays(indices, _strings(pa, strings, c.categories)))
                described.append(_described(name, "categorical", codes.dtype.name,
                                            {"num_categories": len(c.categories), "ordered": False}))
            else:
                # NaN as null, as pandas writes it
                arrays.append(_arrow(pa, pa.from_numpy_dtype(c.dtype), c, np.isnan(c) if c.dtype.kind == "f" else None))
                described.append(_described(name, c.dtype.name, c.dtype.name, None))
        pandas_meta = {"index_columns": [], "column_indexes": [], "columns": described, "attributes": {},
                       "creator": {"library": "pyarrow", "version": pa.__version__},
                       "pandas_version": pandas_version}
        return pa.Table.from_arrays(arrays, names=list(self._data),
                                    metadata={b"pandas": json.dumps(pandas_meta).encode()})

    def _arrow_ready(self) -> bool:
        for c in self._data.values():
            if isinstance(c, Categories):
                if not c.categories or not all(isinstance(s, str) for s in c.categories):
                    return False
            elif c.ndim != 1 or c.dtype.name not in _PLAIN:
                return False
        return True


def _pandas_column(c: Column):
    if isinstance(c, Categories):
        import pandas as pd

        if not c.categories:
            return pd.Categorical([None] * len(c))
        return pd.Categorical.from_codes(c.codes, categories=list(c.categories))
    return c


# Arrow arrays straight from the buffers: ``pyarrow.array`` imports pandas to check its argument.
def _arrow(pa, kind, values: np.ndarray, missing: np.ndarray | None):
    nulls = int(missing.sum()) if missing is not None else 0
    validity = pa.py_buffer(np.packbits(~missing, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(np.ascontiguousarray(values))],
                                 null_count=nulls)


def _strings(pa, kind, texts: tuple[str, ...]):
    encoded = [t.encode() for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64 if kind == pa.large_string() else np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return pa.Array.from_buffers(kind, len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def _described(name: str, pandas_type: str, numpy_type: str, metadata: dict | None) -> dict:
    return {"name": name, "field_name": name, "pandas_type": pandas_type, "numpy_type": numpy_type,
            "metadata": metadata}


@functools.cache  # a lookup in the installed packages' metadata: once per process, not per table
def _pandas_version() -> str:
    from importlib.metadata import version

    return version("pandas")
