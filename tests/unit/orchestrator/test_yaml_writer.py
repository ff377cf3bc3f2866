"""The deterministic YAML writer reads back, through a real YAML parser, as the data it was given."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from qbfl.orchestrator.yaml_writer import (
    MERGE_KEY,
    Alias,
    Anchored,
    Flow,
    Spaced,
    dump_yaml,
    dump_yaml_documents,
    scalar,
)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**62), 2**62), st.text(max_size=30))
keys = st.text(min_size=1, max_size=12).filter(lambda k: k != MERGE_KEY)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_round_trip(document: dict[str, Any]) -> None:
    assert yaml.safe_load(dump_yaml(document)) == (document or None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=5))
def test_flow_sequences_round_trip(items: list[str]) -> None:
    text = dump_yaml({"command": Flow(items)})
    assert yaml.safe_load(text) == {"command": items}
    assert "\n" not in text.strip()


def test_reserved_words_and_numbers_stay_strings() -> None:
    for word in [
        "yes",
        "no",
        "on",
        "off",
        "null",
        "~",
        "true",
        "1",
        "0.5",
        ".5",
        "1e3",
        "0x1f",
        "1:20",
        "2024-01-01",
        "-",
        "*a",
        "&a",
        "a: b",
        "a #b",
        "",
        "A\n",  # a regex `$` matches before a final newline: plain-scalar checks use fullmatch
        "yes\n",
    ]:
        assert yaml.safe_load(f"v: {scalar(word)}") == {"v": word}, word
    assert scalar("publisher:50050") == "publisher:50050"
    assert scalar("/var/lib/qbfl") == "/var/lib/qbfl"


def test_anchor_merge_and_literal_block() -> None:
    doc = {
        "x-common": Anchored("common", {"image": "qbfl:latest", "init": True}),
        "services": Spaced(
            {
                "a": {MERGE_KEY: Alias("common"), "command": Flow(["sh", "-c", "echo $X"])},
                "b": {MERGE_KEY: Alias("common"), "script": "set -eu\necho hi\n"},
            }
        ),
    }
    text = dump_yaml(doc, comment="generated\nline two")
    assert text.startswith("# generated\n# line two\n")
    assert "script: |\n" in text
    loaded = yaml.safe_load(text)
    assert loaded["services"]["a"] == {
        "image": "qbfl:latest",
        "init": True,
        "command": ["sh", "-c", "echo $X"],
    }
    assert loaded["services"]["b"]["script"] == "set -eu\necho hi\n"
    assert list(yaml.safe_load_all(dump_yaml_documents([{"a": 1}, {"b": 2}]))) == [
        {"a": 1},
        {"b": 2},
    ]
