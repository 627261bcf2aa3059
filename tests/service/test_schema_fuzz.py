"""Property-based fuzzing of the served OpenAPI schema (schemathesis): whatever a client sends, within
the schema or outside it, the service answers without a server error, in the shapes the schema documents.

Bounded in examples, so the run takes well under a minute on a loaded machine. Query URLs the fuzzer
makes up are fetched under the default policy: public hosts only, and none is reachable here.
(schemathesis' own pytest loader does not run under pytest 9, so the strategy drives Hypothesis directly.)
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_process import ServeProcess

EXAMPLES = 120
"""Per generation mode, spread over every operation."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_makes_a_server_error(served: ServeProcess, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    seen: dict[str, set[int]] = {}
    session = requests.Session()

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def answers_without_a_server_error(case: schemathesis.Case) -> None:
        response = case.call(base_url=served.url, session=session, timeout=60)
        seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
        case.validate_response(response, checks=CHECKS)
        if 400 <= response.status_code < 500:
            body = response.json()
            assert set(body) == {"error", "field"} and isinstance(body["error"], str), body

    answers_without_a_server_error()
    assert set(seen) >= {"POST /search", "GET /products/{external_id}/similar"}, seen
