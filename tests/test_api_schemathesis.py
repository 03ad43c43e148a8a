"""schemathesis against the real server on 127.0.0.1: generated requests for every operation in
``/openapi.json`` find no 5xx and no answer the schema doesn't describe (status, content type,
headers, body).

Bounded to run in the default test run: a few valid and a few invalid requests per operation,
derandomized, against a server whose limits keep any valid generation request tiny (2 steps,
128 px, 2 images). schemathesis's own pytest plugin (``from_fixture``) doesn't run under pytest 9,
so the test drives each operation's hypothesis strategy itself.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from test_api import _start

EXAMPLES = 10  # per operation and mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_generated_requests_get_no_5xx_and_fit_the_schema(tiny_sd: Path, tiny_lora: Path, isolated_home: Path) -> None:
    s = _start(
        tiny_sd,
        tiny_lora,
        isolated_home,
        rate_per_minute=1_000_000,
        rate_burst=1_000_000,
        max_steps=2,
        max_side=128,
        max_panorama_side=256,
        max_images=2,
        max_queue=2,
    )
    failures: list[str] = []
    tried = 0
    try:
        schema = schemathesis.openapi.from_url(s.url + "/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                seen: list[int] = []

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    derandomize=True,  # the same requests every run, so a failure reproduces
                    database=None,
                    phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't minimise
                    suppress_health_check=list(HealthCheck),
                )
                def run(case) -> None:  # type: ignore[no-untyped-def]
                    # each run() is called before the loop moves on, so the late binding is harmless
                    seen.append(case.call_and_validate(checks=CHECKS, timeout=120).status_code)  # noqa: B023

                try:
                    run()
                except Unsatisfiable:  # no parameters to get wrong (negative mode of a bare GET)
                    pass
                except (Exception, BaseExceptionGroup) as exc:  # one entry per failing operation and mode, then go on
                    failures.append(f"{operation.label} [{mode.value}]: {' '.join(str(exc).split())[:600]}")
                tried += len(seen)
    finally:
        s.stop()
    assert not failures, "\n".join(failures)
    print("schemathesis requests:", tried)
    assert tried > 250, tried  # every operation was really exercised
