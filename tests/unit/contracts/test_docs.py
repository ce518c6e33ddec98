"""The JSON examples in docs/events.md are valid messages of the contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rebalancer.contracts import PAYLOAD_MODELS, TOPICS, EventType, decode, parse_payload

DOC = Path(__file__).resolve().parents[3] / "docs" / "events.md"


def _sections() -> dict[str, list[str]]:
    """Heading text -> the json code blocks under it."""
    out: dict[str, list[str]] = {}
    heading = ""
    for block in re.split(r"^(#{2,3} .*)$", DOC.read_text(), flags=re.M):
        if block.startswith("#"):
            heading = block.strip("# \n")
            continue
        out.setdefault(heading, []).extend(re.findall(r"```json\n(.*?)```", block, flags=re.S))
    return out


def test_envelope_example_decodes() -> None:
    (example,) = _sections()["The envelope"]
    env = decode(example.encode())
    assert env.type is EventType.ORDER_PLACED
    parse_payload(env)


def test_every_event_type_has_a_valid_payload_example() -> None:
    sections = _sections()
    for (type_, version), model in PAYLOAD_MODELS.items():
        (example,) = sections[f"`{type_.value}` v{version}"]
        model.model_validate(json.loads(example))


def test_every_topic_is_documented() -> None:
    text = DOC.read_text()
    for topic in TOPICS.values():
        assert topic in text
