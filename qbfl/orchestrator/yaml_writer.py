"""A small deterministic YAML writer for generated compose files and Kubernetes manifests.

Why not PyYAML: it is not a dependency, and generated files must be byte-identical across
versions of anything installed. The subset: mappings (insertion order), sequences, strings, ints,
bools, None, anchors and merge keys (`<<: *name`), literal blocks for multi-line strings.
Scalars that YAML 1.1 or 1.2 could read as anything but the intended type are double-quoted
with YAML escapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Strings safe to write bare: no indicator first, no ": " or " #", not a bool/null/number look-alike.
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./=@+-]*(:[A-Za-z0-9_./=@+-]+)*$")
_RESERVED = re.compile(
    r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|"
    r"null|Null|NULL|~|\.inf|\.Inf|\.INF|\.nan|\.NaN|\.NAN)$"
)


@dataclass(frozen=True)
class Anchored:
    """A mapping written with an anchor: `key: &name` followed by the mapping."""

    name: str
    value: Mapping[str, Any]


@dataclass(frozen=True)
class Alias:
    """A reference to an anchor: `*name` (as the value of a `<<` merge key)."""

    name: str


@dataclass(frozen=True)
class Spaced:
    """A mapping written with a blank line between its entries (the services of a compose file)."""

    value: Mapping[str, Any]


@dataclass(frozen=True)
class Flow:
    """A short sequence of scalars written on one line: `["a", "b"]`."""

    items: Sequence[Any]


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(text: str) -> str:
    """A YAML double-quoted scalar: ASCII only, everything else escaped (\\xXX, \\uXXXX, \\UXXXXXXXX)."""
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and not _RESERVED.fullmatch(value):
            return value
        return quote(value)
    raise TypeError(f"cannot write {type(value).__name__} as a YAML scalar")


MERGE_KEY = "<<"


def _flow_scalar(value: Any) -> str:
    # Inside [...] a colon is read differently by YAML 1.1 and 1.2 parsers: quote such strings.
    text = scalar(value)
    return quote(value) if isinstance(value, str) and ":" in text and text == value else text


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, got {key!r}")
    return key if key == MERGE_KEY else scalar(key)


def _is_block_string(value: Any) -> bool:
    # A literal block keeps the text as is only for printable ASCII lines without trailing blanks,
    # a first line that does not start with a blank, and at most one final newline.
    return (
        isinstance(value, str)
        and "\n" in value.rstrip("\n")
        and not value.startswith((" ", "\n"))
        and not value.endswith("\n\n")
        and value.isascii()
        and all(line.isprintable() and line == line.rstrip() for line in value.split("\n"))
    )


def _literal(value: str, indent: int) -> list[str]:
    header = "|" if value.endswith("\n") else "|-"
    pad = " " * indent
    body = value[:-1] if value.endswith("\n") else value
    return [header] + [pad + line if line else "" for line in body.split("\n")]


def _node(value: Any, indent: int) -> tuple[str, list[str]]:
    """(text after `key:` on the same line, lines that follow at `indent`)."""
    if isinstance(value, Anchored):
        inline, lines = _node(value.value, indent)
        return f" &{value.name}" + inline, lines
    if isinstance(value, Alias):
        return f" *{value.name}", []
    if isinstance(value, Flow):
        return " [" + ", ".join(_flow_scalar(v) for v in value.items) + "]", []
    if isinstance(value, Spaced):
        return "", _mapping(value.value, indent, spaced=True)
    if isinstance(value, Mapping):
        if not value:
            return " {}", []
        return "", _mapping(value, indent)
    if isinstance(value, (list, tuple)):
        if not value:
            return " []", []
        return "", _sequence(value, indent)
    if _is_block_string(value):
        header, *rest = _literal(value, indent)
        return " " + header, rest
    return " " + scalar(value), []


def _mapping(value: Mapping[str, Any], indent: int, *, spaced: bool = False) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for key, item in value.items():
        inline, lines = _node(item, indent + 2)
        if out and spaced:
            out.append("")
        out.append(f"{pad}{_key(key)}:{inline}")
        out.extend(lines)
    return out


def _sequence(value: Sequence[Any], indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for item in value:
        if isinstance(item, Mapping) and item:
            lines = _mapping(item, indent + 2)
            out.append(f"{pad}- {lines[0].lstrip()}")
            out.extend(lines[1:])
        else:
            inline, lines = _node(item, indent + 2)
            out.append(f"{pad}-{inline}")
            out.extend(lines)
    return out


def dump_yaml(document: Mapping[str, Any], *, comment: str = "", spaced: bool = True) -> str:
    """One YAML document; `comment` lines first (`# `); `spaced`: blank lines between sections."""
    head = [f"# {line}".rstrip() for line in comment.splitlines()]
    return "\n".join(head + _mapping(document, 0, spaced=spaced)) + "\n"


def dump_yaml_documents(documents: Sequence[Mapping[str, Any]], *, comment: str = "") -> str:
    """Several documents separated by `---` (Kubernetes manifests)."""
    head = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines())
    return head + "".join("---\n" + dump_yaml(doc, spaced=False) for doc in documents)
