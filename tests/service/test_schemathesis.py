"""Property-based API tests from the app's own OpenAPI schema (schemathesis), against a real uvicorn server.

Every operation, with the API key, in positive and negative modes (schemathesis 4 runs both by default):
no 5xx, and every response conforms to the schema (documented status code, content type and body). The
tiny pipeline never hits the documented 503, so any 5xx fails.

The schema is loaded eagerly and the server is a fixture: ``schemathesis.pytest.from_fixture`` fails
under pytest 9 (it sets ``node._nodeid``), and ``from_asgi`` would keep the app's lifespan running until
the interpreter exits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fixture_server import serve_in_thread
from hypothesis import settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from service_helpers import API_KEY, make_app

KEY = {"X-API-Key": API_KEY}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
pytestmark = pytest.mark.slow

# Imports are sent as the generated text, like text/csv bodies.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
# The schema only: this app is never started, so its state directory is never created.
schema = schemathesis.openapi.from_dict(make_app(Path("never-started")).openapi())


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # No rate limit: a few hundred requests from one client must not turn into 429s.
    app = make_app(tmp_path_factory.mktemp("schemathesis"), rate_limit_per_minute=0)
    with serve_in_thread(app) as url:
        yield url


@schema.parametrize()
@settings(max_examples=25, deadline=None)
def test_api_conforms_to_its_schema(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, headers=KEY, checks=CHECKS, timeout=30)
