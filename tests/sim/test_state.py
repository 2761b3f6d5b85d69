"""The iteration log's typed columns (frontier_dag.sim.state.ColumnLog)."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.sim.state import ColumnLog


def test_column_log_keeps_rows_in_order_across_appends_and_extends():
    log = ColumnLog({"a": np.int16, "b": np.float32, "c": np.int64})
    log.PENDING_ROWS = 3  # rows appended one at a time move into the arrays every 3 rows
    for i in range(5):
        log.append(i, i / 3, -i)
    assert log.size == 5
    log.extend([7, 8], 0.5, [1, 2])  # a scalar repeats over the rows
    log.append(9, 1.25, 3)
    assert log.size == 8
    np.testing.assert_array_equal(log.column("a"), [0, 1, 2, 3, 4, 7, 8, 9])
    np.testing.assert_array_equal(log.column("b"), np.array([0, 1 / 3, 2 / 3, 1, 4 / 3, 0.5, 0.5, 1.25], np.float32))
    table = log.to_columns()
    assert table["c"].dtype == np.int64 and table["c"].tolist() == [0, -1, -2, -3, -4, 1, 2, 3]


def test_column_log_refuses_a_row_of_the_wrong_width():
    log = ColumnLog({"a": np.int16, "b": np.float32})
    with pytest.raises(ValueError, match="3 values for 2 columns"):
        log.append(1, 2.0, 3)
