"""schemathesis against the real server on 127.0.0.1: generated requests for every operation in
``/openapi.json`` find no 5xx and no answer the schema doesn't describe (status, content type,
headers, body).

Bounded to run in the default test run: a few examples per operation, derandomized (the same
requests every run, so a failure reproduces), and a server whose limits keep any valid
generation request tiny (2 steps, 128 px, 2 images).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from test_api import _start

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(tiny_sd: Path, tiny_lora: Path, isolated_home: Path):  # type: ignore[no-untyped-def]
    s = _start(
        tiny_sd,
        tiny_lora,
        isolated_home,
        rate_per_minute=1_000_000,
        rate_burst=1_000_000,
        max_steps=2,
        max_side=128,
        max_images=2,
        max_queue=2,
    )
    try:
        yield schemathesis.openapi.from_url(s.url + "/openapi.json")
    finally:
        s.stop()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_get_no_5xx_and_fit_the_schema(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(checks=CHECKS, timeout=120)
