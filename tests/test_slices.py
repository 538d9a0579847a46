"""Test the slice parser: what it accepts, what it selects, and what it refuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lifecycle.slices import MAX_LENGTH, evaluate_slice, parse_slice, slice_columns


@pytest.fixture
def frame() -> pd.DataFrame:
    """A small frame with numeric, string (with a missing value), categorical and boolean columns."""
    return pd.DataFrame({
        "amount": [10.0, 2000.0, 3000.0, np.nan, 1500.0, 50.0],
        "channel": pd.array(["web", "web", None, "app", "web", "branch"], dtype="str"),
        "region": pd.Categorical(["APAC", "EMEA", "APAC", "AMER", "EMEA", "APAC"]),
        "is_new": [True, False, True, False, True, False],
        "tenure": [1, 5, 10, 0, 3, 7],
    }, index=[10, 11, 12, 13, 14, 15])


@pytest.mark.parametrize("expr, expected", [
    ("amount > 1000 and channel == 'web'", [False, True, False, False, True, False]),
    ("amount > 1000 or channel == 'web'", [True, True, True, False, True, False]),
    ("not (amount > 1000)", [True, False, False, True, False, True]),
    ("channel in ('web', 'app')", [True, True, False, True, True, False]),
    ("channel not in ['web']", [False, False, True, True, False, True]),
    ("region == 'APAC' and tenure >= 7", [False, False, True, False, False, True]),
    ("100 <= amount < 2500", [False, True, False, False, True, False]),
    ("tenure > -1 and tenure != 5", [True, False, True, True, True, True]),
    ("is_new", [True, False, True, False, True, False]),
    ("not is_new and amount < 100", [False, False, False, False, False, True]),
    ("amount > tenure", [True, True, True, False, True, True]),
    ("True", [True] * 6),
])
def test_allowed_expressions_select_the_expected_rows(frame, expr, expected):
    mask = evaluate_slice(expr, frame)

    assert mask.dtype == bool
    assert mask.tolist() == expected


def test_missing_values_are_outside_every_comparison(frame):
    mask = evaluate_slice("amount > 0 or channel > 'a'", frame)

    assert mask.tolist() == [True, True, True, True, True, True]
    assert evaluate_slice("amount <= 0", frame).tolist() == [False] * 6


@pytest.mark.parametrize("expr, refused", [
    ("__import__('os')", "function call"),
    ("__import__('os').system('true') == 0", "function call"),
    ("amount.real > 0", "attribute access"),
    ("channel.str.len() > 2", "function call"),
    ("len(channel) > 2", "function call"),
    ("(lambda: 1)()", "function call"),
    ("lambda x: x", "lambda"),
    ("amount[0] > 1", "subscripting"),
    ("amount + 1 > 2", "arithmetic"),
    ("[x for x in channel]", "comprehension"),
    ("(y := 1)", "assignment expression"),
    ("f'{amount}' == '1'", "f-string"),
    ("amount if is_new else tenure", "conditional expression"),
    ("channel in channel", "tuple or list of constants"),
    ("channel in (region,)", "Name"),
    ("amount > 1000 and", "not a valid expression"),
    ("import os", "not a valid expression"),
    ("", "empty"),
])
def test_anything_but_comparisons_of_columns_and_constants_is_refused(expr, refused):
    with pytest.raises(ValueError) as error:
        parse_slice(expr)

    assert "refused" in str(error.value) and refused in str(error.value)


def test_the_parser_never_evaluates_what_it_refuses(frame, tmp_path):
    marker = tmp_path / "touched"
    expr = f"open({str(marker)!r}, 'w').write('x') == 1"

    with pytest.raises(ValueError):
        evaluate_slice(expr, frame)

    assert not marker.exists()


def test_an_unknown_column_is_named(frame):
    with pytest.raises(ValueError, match="unknown column 'price'"):
        evaluate_slice("price > 10", frame)


def test_a_non_boolean_column_cannot_be_a_condition(frame):
    with pytest.raises(ValueError, match="'amount' is not boolean"):
        evaluate_slice("amount and is_new", frame)


def test_comparing_incompatible_types_is_a_clear_error(frame):
    with pytest.raises(ValueError, match="cannot evaluate"):
        evaluate_slice("channel > 5", frame)


def test_overlong_and_deeply_nested_expressions_are_refused():
    with pytest.raises(ValueError, match="longer than"):
        parse_slice("amount > 1 and " * (MAX_LENGTH // 10) + "amount > 1")
    with pytest.raises(ValueError, match="refused"):
        parse_slice("not " * 300 + "is_new")


def test_slice_columns_lists_the_columns_used_in_order():
    columns = slice_columns("amount > 1000 and channel in ('web', 'app') or amount < 5 and not is_new")

    assert columns == ["amount", "channel", "is_new"]
