"""The OpenAPI description says what the API takes and answers, and its pages work offline
(issue 16): the app in process (``httpx.ASGITransport``) over a real store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from helpers import app_in_process, append_and_project, news

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db = tmp_path_factory.mktemp("openapi") / "timeline.db"
    append_and_project(db, [news("n1", "2025-05-24", ("x",))])
    with app_in_process(db) as request:
        yield request


def test_every_answer_and_the_event_body_are_typed(client: Any) -> None:
    spec = client("/openapi.json").json()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            success = [code for code in operation["responses"] if code.startswith("2")]
            assert success, f"{method} {path}: no success answer described"
            for code in success:
                content = operation["responses"][code]["content"]
                if path.endswith("/stream"):  # server-sent events (docs/live.md)
                    assert list(content) == ["text/event-stream"], f"{method} {path}: {list(content)}"
                    continue
                schema = content["application/json"]["schema"]
                assert schema not in ({}, {"type": "object"}), f"{method} {path} {code}: untyped answer"
    body = spec["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    kinds = {ref["$ref"].rsplit("/", 1)[1] for ref in spec["components"]["schemas"]["NewsEvent"]["oneOf"]}
    assert kinds == {f"{k}Event" for k in ("Outage", "Statement", "Report", "PoliticalMove", "Correction",
                                           "Retraction", "EntityAlias")}
    assert body["oneOf"][0] == {"$ref": "#/components/schemas/NewsEvent"}


def test_the_contract_examples_match_the_published_body_schema(client: Any) -> None:
    spec = client("/openapi.json").json()
    body = spec["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = {**body, "components": spec["components"]}
    text = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    examples = re.findall(r"<!-- event: valid -->\s*\n```json\n(.*?)\n```", text, re.DOTALL)
    assert len(examples) >= 5
    import json

    for example in examples:
        jsonschema.validate(json.loads(example), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "rumour", "occurred_at": "2025"}, schema)


def test_the_docs_pages_load_nothing_from_outside(client: Any) -> None:
    for page in ("/docs", "/redoc"):
        html = client(page).text
        sources = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        assert sources, page
        for source in sources:
            assert not re.match(r"(?:https?:)?//", source), f"{page} loads {source} from outside"
            assert client(source).status_code == 200, f"{page}: {source} is not served"
