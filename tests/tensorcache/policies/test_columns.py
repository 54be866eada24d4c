"""Columns: rows reused after a drop, values read back as numpy arrays, growth while a copy is held, writes."""
import numpy as np

from tensorcache.policies.columns import Columns


def test_rows_are_reused_and_columns_read_back_per_row():
    c = Columns(seq="q", size="d")
    assert c.add("a", 1, 10.0) == 0 and c.add("b", 2, 20.0) == 1
    c.drop("a")
    assert c.add("c", 3, 30.0) == 0  # the freed row
    rows = c.rows()
    assert rows.tolist() == [0, 1] and c.keys(rows) == ["c", "b"] and len(c) == 2 and c.size == 2
    assert c.key(1) == "b" and c.keys(rows[1:]) == ["b"] and c.keys(rows[:0]) == []
    assert c.column("seq", rows).tolist() == [3, 2] and c.column("size").tolist() == [30.0, 20.0]
    c.set("seq", c.row["b"], 7)
    assert c.get("seq", 1) == 7
    c.drop("b")
    assert c.keys(c.rows()) == ["c"]


def test_a_column_read_does_not_stop_the_columns_from_growing():
    c = Columns(seq="q")
    c.add(0, 0)
    held = c.column("seq")
    for k in range(1, 100):
        c.add(k, k)
    assert held.tolist() == [0] and np.array_equal(c.column("seq", c.rows()), np.arange(100))


def test_put_writes_rows_in_one_pass_and_array_is_the_column_itself():
    c = Columns(value="d")
    for k in range(4):
        c.add(k, 0.0)
    c.put("value", np.array([1, 3]), np.array([0.5, 2.5]))
    assert c.column("value").tolist() == [0.0, 0.5, 0.0, 2.5]
    values = c.array("value")
    values[2] += 1.0  # a write through it is a write to the column
    assert c.get("value", 2) == 1.0
    c.add(4, 9.0)  # growing after a put: no numpy view is left holding the column
    assert values[4] == 9.0
