"""The typed row: `RowFields` is the schema's one field list, and mypy checks row building against it."""

from __future__ import annotations

import typing

from segbench.rows.row import RowFields
from segbench.rows.schema import BREAKDOWN_FIELDS, JSON_ONLY_FIELDS, ROW_FIELDS, TEXT_FIELDS, make_row


def test_every_field_may_be_none_as_make_row_fills_it():
    types = typing.get_type_hints(RowFields)
    assert [field for field, kind in types.items() if type(None) not in typing.get_args(kind)] == []
    row = make_row(model="m")
    assert [field for field in ROW_FIELDS if field not in row] == []
    assert row["miou"] is None and row["model"] == "m"


def test_the_schema_sets_follow_the_declared_types():
    assert list(ROW_FIELDS[:3]) == ["model", "kind", "family"] and BREAKDOWN_FIELDS == ("operator", "module", "share")
    assert not set(BREAKDOWN_FIELDS) & set(ROW_FIELDS)
    assert {"model", "hostname", "error", "cores"} <= TEXT_FIELDS and not {"miou", "batch_size", "rank"} & TEXT_FIELDS
    assert {
        "iou_per_class",
        "mac_notes",
        "latency_samples_ms",
        "latency_speedup_samples",
        "samples_per_process",
    } == JSON_ONLY_FIELDS
