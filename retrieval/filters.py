"""Safe metadata filters: users never write Milvus expressions, they give field/operator/value triples.

Accepted forms (CLI `--filter`, repeatable, all AND-ed; or the API's str/dict):
    source=docs/x.md          source!=docs/x.md        source like docs/policies/%
    title=Safety              chunk=0
    {"source": "docs/x.md", "title": {"like": "Safety%"}, "source": ["a.md", "b.md"]}   (list: any of)
Values are quoted and escaped here, so `x" or source != "` stays a literal string and cannot change the query.
"""

from __future__ import annotations

import re
from typing import Any

from core.errors import UserError

STRING_FIELDS = ("source", "title")
INT_FIELDS = ("chunk",)
OPERATORS = ("=", "==", "!=", "like")
MAX_VALUE = 1024
_TERM_RE = re.compile(r"^\s*([A-Za-z_]+)\s*(==|!=|=|\s+like\s+)\s*(.*?)\s*$", re.IGNORECASE | re.DOTALL)
HELP = (
    "use FIELD=VALUE, FIELD!=VALUE or 'FIELD like PATTERN' (% matches any text) with FIELD one of "
    f"{', '.join(STRING_FIELDS + INT_FIELDS)}, e.g. --filter source=docs/x.md"
)


def quote(value: str) -> str:
    """A Milvus string literal: backslashes and double quotes escaped; control characters rejected."""
    if not isinstance(value, str):
        raise UserError(f"filter value {value!r} must be a string; {HELP}")
    if len(value) > MAX_VALUE:
        raise UserError(f"filter value is longer than {MAX_VALUE} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UserError(f"filter value {value!r} contains control characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _term(field: str, op: str, value: Any) -> str:
    op = op.strip().lower()
    op = "==" if op == "=" else op
    if op not in ("==", "!=", "like"):
        raise UserError(f"unsupported filter operator {op!r}; {HELP}")
    if field in INT_FIELDS:
        if op == "like":
            raise UserError(f"'like' works on text fields only ({', '.join(STRING_FIELDS)})")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise UserError(f"filter {field} needs a whole number, got {value!r}") from None
        return f"{field} {op} {number}"
    if field not in STRING_FIELDS:
        raise UserError(f"unknown filter field {field!r}; {HELP}")
    return f"{field} {op.upper() if op == 'like' else op} {quote(value)}"


def parse_term(text: str) -> str:
    m = _TERM_RE.match(text)
    if not m:
        raise UserError(f"cannot read filter {text!r}; {HELP}")
    field, op, value = m.group(1).lower(), m.group(2), m.group(3)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]  # tolerate shell-style quoting of the value
    return _term(field, op, value)


def build_filter(spec: str | dict[str, Any] | list[Any] | None) -> str:
    """Turn a user filter into a Milvus boolean expression ('' for none); UserError for anything else."""
    if spec is None or spec == "" or spec == {} or spec == []:
        return ""
    terms: list[str] = []
    if isinstance(spec, str):
        terms.append(parse_term(spec))
    elif isinstance(spec, list):  # AND of parts, each a term string or a mapping (e.g. route + request)
        for part in spec:  # a term is one comparison; a mapping may hold 'or': group it
            if isinstance(part, str):
                terms.append(parse_term(part))
            elif expr := build_filter(part):
                terms.append(f"({expr})")
    elif isinstance(spec, dict):
        for field, value in spec.items():
            field = str(field).lower()
            if isinstance(value, dict):
                for op, v in value.items():
                    terms.append(_term(field, str(op), v))
            elif isinstance(value, list):
                if not value:
                    raise UserError(f"filter {field}: the list of values is empty")
                terms.append("(" + " or ".join(_term(field, "==", v) for v in value) + ")")
            else:
                terms.append(_term(field, "==", value))
    else:
        raise UserError(f"filter must be a string or a mapping, got {type(spec).__name__}; {HELP}")
    return " and ".join(terms)
