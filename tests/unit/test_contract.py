"""The data contract's one enforcement: the value rules (``contract.classify``) and ``enforce`` on a DataFrame (score,
the scoring flow) and on a parsed request's columns (serve) give the same problems, rows and unseen counts, and
monitoring's ``check_schema`` flags the same columns."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from driftloop.contract import NOT_FINITE, OK, WRONG_KIND, Columns, ContractViolation, classify, enforce
from driftloop.monitor import check_schema
from driftloop.serve.requests import parse

CONTRACT = {
    "target": "default",
    "task": "binary",
    "columns": {
        "amount": {"kind": "numeric", "dtype": "float64"},
        "grade": {"kind": "categorical", "dtype": "object", "categories": ["A", "B", "C"]},
        "flag": {"kind": "boolean", "dtype": "bool"},
        "opened": {"kind": "datetime", "dtype": "datetime64[ns]"},
    },
    "ignored": ["id"],
}
GOOD = {"id": 1, "amount": 12.5, "grade": "A", "flag": True, "opened": "2024-03-01T10:00:00"}


@pytest.mark.parametrize(
    ("kind", "value", "code"),
    [
        ("numeric", 3, OK),
        ("numeric", 2.5, OK),
        ("numeric", " 7 ", OK),
        ("numeric", "1e3", OK),
        ("numeric", "n/a", OK),  # missing
        ("numeric", None, OK),
        ("numeric", float("nan"), OK),
        ("numeric", "forty", WRONG_KIND),
        ("numeric", "1_000", WRONG_KIND),  # pandas.to_numeric (the model's reading) refuses it
        ("numeric", "\u0661\u0662", WRONG_KIND),  # non-ASCII digits: the same
        ("numeric", "1e400", WRONG_KIND),
        ("numeric", pd.Timestamp("2024-01-01"), WRONG_KIND),
        ("numeric", [1, 2], WRONG_KIND),
        ("numeric", float("inf"), NOT_FINITE),
        ("numeric", "-Infinity", NOT_FINITE),
        ("boolean", True, OK),
        ("boolean", "yes", OK),
        ("boolean", 0, OK),
        ("boolean", 2, WRONG_KIND),
        ("boolean", "maybe", WRONG_KIND),
        ("datetime", "2024-03-01", OK),
        ("datetime", "2024-03-01T10:00:00.123+02:00", OK),
        ("datetime", "March 1, 2024", OK),  # not ISO: pandas parses it
        ("datetime", "", OK),  # missing
        ("datetime", pd.Timestamp("2024-01-01"), OK),
        ("datetime", "2024-02-30", WRONG_KIND),
        ("datetime", "31st of Nevember", WRONG_KIND),
        ("datetime", "0001-01-01", WRONG_KIND),  # outside pandas' nanosecond range: the model could not read it
        ("datetime", 1700000000, WRONG_KIND),
        ("categorical", 5, OK),  # categorical values are judged by column (categorical_wrong)
    ],
)
def test_classify_value_rules(kind, value, code):
    assert classify(kind, [value]).tolist() == [code]


def _request(records: list[dict]) -> Columns:
    return parse(json.dumps({"dataframe_records": records}).encode(), "application/json")


def _problems(rows) -> list[tuple[str, str | None, int | None]]:
    try:
        enforce(CONTRACT, rows, where="x")
    except ContractViolation as exc:
        return [(p.kind, p.column, p.row) for p in exc.problems]
    return []


CASES = [
    ("good", {}, []),
    ("text in numeric", {2: {"amount": "forty"}}, [("wrong_kind", "amount", 2)]),
    ("number as text", {1: {"amount": "12"}}, []),
    ("infinite", {1: {"amount": math.inf}}, [("not_finite", "amount", 1)]),
    ("infinite text", {2: {"amount": "inf"}}, [("not_finite", "amount", 2)]),
    ("bad boolean", {1: {"flag": "maybe"}}, [("wrong_kind", "flag", 1)]),
    ("bad date", {2: {"opened": "31st of Nevember"}}, [("wrong_kind", "opened", 2)]),
    ("number as date", {0: {"opened": 5}}, [("wrong_kind", "opened", 0)]),
    (
        "numbers in a text categorical",
        {0: {"grade": 1}, 1: {"grade": 2}, 2: {"grade": 3}},
        [("wrong_kind", "grade", 0)],
    ),
    (
        "two problems",
        {1: {"amount": "x", "opened": "never"}},
        [("wrong_kind", "amount", 1), ("wrong_kind", "opened", 1)],
    ),
    ("missing values", {0: {"amount": None, "grade": None, "flag": None, "opened": None}}, []),
]


@pytest.mark.parametrize(("label", "changes", "expected"), CASES, ids=[c[0] for c in CASES])
def test_request_columns_and_dataframes_get_the_same_verdict(label, changes, expected):
    records = [dict(GOOD, id=i) for i in range(3)]
    for i, change in changes.items():
        records[i].update(change)
    frame = pd.DataFrame.from_records(records)
    assert _problems(_request(records)) == expected
    assert _problems(frame) == expected
    flagged = {r.column for r in check_schema(CONTRACT, frame, allow_extra=True).retyped}
    assert flagged == {c for k, c, _ in expected if k == "wrong_kind"}, "monitoring flags the same columns"


def test_names_empty_extra_and_unseen_categories_through_both_paths():
    records = [dict(GOOD, grade=g, note="x") for g in ("A", "Z", "Z", None)]
    for rows in (_request(records), pd.DataFrame.from_records(records)):
        enforced = enforce(CONTRACT, rows)
        assert enforced.n_rows == 4 and enforced.extra == ("note",)
        assert enforced.unseen_categories == {"grade": 2}
    no_amount = [{k: v for k, v in GOOD.items() if k != "amount"}]
    assert _problems(_request(no_amount)) == [("missing_column", "amount", None)]
    assert _problems(pd.DataFrame.from_records(no_amount)) == [("missing_column", "amount", None)]
    assert _problems(_request([])) == [("empty", None, None)] + [
        ("missing_column", c, None) for c in CONTRACT["columns"]
    ]
    split = {"columns": ["amount", "amount", "grade", "flag", "opened"], "data": [[1, 2, "A", True, "2024-01-01"]]}
    dup = parse(json.dumps({"dataframe_split": split}).encode(), "application/json")
    assert _problems(dup) == [("duplicated_column", "amount", None)]


def test_a_large_batch_is_checked_by_its_distinct_values():
    rng = np.random.default_rng(0)
    n = 20_000
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=n).astype(object),
            "grade": rng.choice(["A", "B", "Q"], n),
            "flag": rng.choice(["yes", "no"], n),
            "opened": rng.choice(["2024-01-02", "2024-02-03T04:05:06"], n),
        }
    )
    frame.loc[n - 3, "amount"] = "oops"
    with pytest.raises(ContractViolation, match=r"column 'amount', row 19997"):
        enforce(CONTRACT, frame)
    frame.loc[n - 3, "amount"] = 1.0
    assert enforce(CONTRACT, frame).unseen_categories == {"grade": int((frame["grade"] == "Q").sum())}


def test_the_log_schema_from_request_columns_equals_the_dataframe_path():
    """``typed_frame`` (the prediction log's types) builds plain request values directly; the result is the one
    of the general (pandas) path, which still reads everything else."""
    from driftloop.contract import typed_frame

    records = [
        dict(GOOD, amount=None, flag=None, opened=None),
        dict(GOOD, grade=None, opened="2024-03-01 10:00:00.250"),
        dict(GOOD, amount=3, grade="Z"),
    ]
    odd = [dict(r, amount="12", flag="yes", opened="March 3, 2024") for r in records]  # the general path
    for recs in (records, odd):
        got = typed_frame(CONTRACT, _request(recs))
        want = typed_frame(CONTRACT, pd.DataFrame.from_records(recs))
        pd.testing.assert_frame_equal(got, want)
        assert [str(t) for t in got.dtypes] == ["float64", "string", "boolean", "datetime64[ns]"]
