"""Parse and evaluate slice expressions such as ``amount > 1000 and channel == 'web'`` without eval."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd

MAX_LENGTH = 1000
MAX_NODES = 200

# Friendly names for the node types people most often try; anything else is named by its class.
_DESCRIPTIONS: dict[type, str] = {
    ast.Call: "a function call",
    ast.Attribute: "attribute access",
    ast.Lambda: "a lambda",
    ast.Subscript: "subscripting",
    ast.BinOp: "arithmetic",
    ast.IfExp: "a conditional expression",
    ast.NamedExpr: "an assignment expression",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.Starred: "unpacking",
    ast.JoinedStr: "an f-string",
    ast.Dict: "a dict",
    ast.Await: "await",
    ast.Yield: "yield",
}

_COMPARE_OPS: dict[type, str] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in",
}

Scalar = int | float | str | bool


def _refuse(node: ast.AST, expr: str) -> ValueError:
    what = _DESCRIPTIONS.get(type(node), "this construct")
    snippet = ast.get_source_segment(expr, node) or type(node).__name__
    return ValueError(
        f"slice refused: {what} ({type(node).__name__}: {snippet!r}) is not allowed; "
        "use comparisons, and/or/not, column names and constants"
    )


def _check_constant(node: ast.AST, expr: str) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (bool, int, float, str)):
            return
        raise ValueError(f"slice refused: constant {node.value!r} has an unsupported type")
    # A signed number such as -5 is parsed as a unary minus applied to a constant.
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool)):
        return
    raise _refuse(node, expr)


def _check_operand(node: ast.AST, expr: str) -> None:
    if isinstance(node, ast.Name):
        return
    _check_constant(node, expr)


def _check_condition(node: ast.AST, expr: str) -> None:
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check_condition(value, expr)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.Not):
            raise _refuse(node, expr)
        _check_condition(node.operand, expr)
    elif isinstance(node, ast.Compare):
        if len(node.ops) > 1 and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            raise ValueError("slice refused: chain 'in' / 'not in' with 'and' instead of in one comparison")
        _check_operand(node.left, expr)
        for op, right in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE_OPS:
                raise ValueError(f"slice refused: comparison {type(op).__name__} is not allowed")
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right, (ast.Tuple, ast.List, ast.Set)):
                    raise ValueError(
                        f"slice refused: '{_COMPARE_OPS[type(op)]}' needs a tuple or list of constants, "
                        f"got {ast.get_source_segment(expr, right) or type(right).__name__!r}"
                    )
                for element in right.elts:
                    _check_constant(element, expr)
            else:
                _check_operand(right, expr)
    elif isinstance(node, ast.Name):
        return  # a boolean column used as a condition; its dtype is checked at evaluation
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return
    else:
        raise _refuse(node, expr)


def parse_slice(expr: str) -> ast.Expression:
    """Parse a slice expression and refuse anything but comparisons, and/or/not, columns and constants."""
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError("slice refused: the expression is empty")
    if len(expr) > MAX_LENGTH:
        raise ValueError(f"slice refused: the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"slice refused: not a valid expression ({exc.msg})") from None
    except (RecursionError, MemoryError):
        raise ValueError("slice refused: the expression is nested too deeply") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ValueError(f"slice refused: the expression has more than {MAX_NODES} parts")
    _check_condition(tree.body, expr.strip())
    return tree


def slice_columns(expr: str) -> list[str]:
    """Return the column names a slice expression refers to, in order of first use."""
    names: list[str] = []
    for node in ast.walk(parse_slice(expr)):
        if isinstance(node, ast.Name) and node.id not in names:
            names.append(node.id)
    return names


def _constant(node: ast.AST) -> Scalar:
    if isinstance(node, ast.Constant):
        return node.value
    assert isinstance(node, ast.UnaryOp)
    value = node.operand.value  # type: ignore[attr-defined]
    return -value if isinstance(node.op, ast.USub) else value


def _as_mask(value: pd.Series | bool | np.bool_, n: int, what: str) -> np.ndarray:
    if isinstance(value, (bool, np.bool_)):
        return np.full(n, bool(value))
    if not (pd.api.types.is_bool_dtype(value.dtype)):
        raise ValueError(f"slice refused: column {what!r} is not boolean; compare it with a value")
    return value.to_numpy(dtype=bool, na_value=False)


class _Evaluator:
    def __init__(self, frame: pd.DataFrame, expr: str):
        self.frame = frame
        self.expr = expr
        self.n = len(frame)

    def column(self, name: str) -> pd.Series:
        if name not in self.frame.columns:
            raise ValueError(f"slice refers to unknown column {name!r}")
        return self.frame[name].reset_index(drop=True)

    def operand(self, node: ast.AST) -> pd.Series | Scalar:
        if isinstance(node, ast.Name):
            return self.column(node.id)
        return _constant(node)

    def compare(self, left: pd.Series | Scalar, op: ast.cmpop, right_node: ast.AST) -> np.ndarray:
        symbol = _COMPARE_OPS[type(op)]
        if isinstance(op, (ast.In, ast.NotIn)):
            values = [_constant(e) for e in right_node.elts]  # type: ignore[attr-defined]
            if isinstance(left, pd.Series):
                hit = left.isin(values).to_numpy(dtype=bool, na_value=False)
            else:
                hit = np.full(self.n, left in values)
            return ~hit if isinstance(op, ast.NotIn) else hit
        right = self.operand(right_node)
        try:
            if symbol == "==":
                result = left == right
            elif symbol == "!=":
                result = left != right
            elif symbol == "<":
                result = left < right
            elif symbol == "<=":
                result = left <= right
            elif symbol == ">":
                result = left > right
            else:
                result = left >= right
        except TypeError as exc:
            raise ValueError(
                f"slice cannot evaluate {ast.get_source_segment(self.expr, right_node) or symbol!r}: {exc}"
            ) from None
        if isinstance(result, (bool, np.bool_)):
            return np.full(self.n, bool(result))
        # Nullable results (missing values) count as "not in the slice".
        return pd.Series(result).to_numpy(dtype=bool, na_value=False)

    def condition(self, node: ast.AST) -> np.ndarray:
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v) for v in node.values]
            out = parts[0].copy()
            for part in parts[1:]:
                if isinstance(node.op, ast.And):
                    out &= part
                else:
                    out |= part
            return out
        if isinstance(node, ast.UnaryOp):
            return ~self.condition(node.operand)
        if isinstance(node, ast.Name):
            return _as_mask(self.column(node.id), self.n, node.id)
        if isinstance(node, ast.Constant):
            return np.full(self.n, bool(node.value))
        assert isinstance(node, ast.Compare)
        out = np.ones(self.n, dtype=bool)
        left = self.operand(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            out &= self.compare(left, op, right_node)
            if not isinstance(op, (ast.In, ast.NotIn)):
                left = self.operand(right_node)
        return out


def evaluate_slice(expr: str, frame: pd.DataFrame) -> np.ndarray:
    """Return the boolean mask of the rows of frame that a slice expression selects."""
    tree = parse_slice(expr)
    return _Evaluator(frame, expr.strip()).condition(tree.body)
