"""/openapi.json tells the truth: a bounded, seeded schemathesis run over every documented route finds no server
error and no response that the document does not declare (status, content type, headers, body schema), and
the server refuses what the document says is invalid.

The app runs in-process over the random-weight G5 fixture cut to a 32-token context, so a generated request
that asks for 4096 tokens ends within 32 and the run stays within seconds.
"""

from __future__ import annotations

import functools

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from server_harness import make_pool

from nanochat_py.server import pool as pool_module
from nanochat_py.server.app import Settings, create_app

MAX_EXAMPLES = 25  # per route and phase; seeded (derandomize), so every run sends the same requests


# nothing loads here: the document needs no model; the pool starts (and loads) in the fixture below
POOL = make_pool(max_queue=64)
APP = create_app(POOL, Settings(allowed_hosts=("*",), cors_origins=("http://ok.example",)))
# a request the document allows may still be a 400 for what JSON Schema cannot say (roles must alternate, the
# conversation's total size, tool parts only in assistant turns); every other check runs as shipped
ACCEPTED = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]  # schemathesis's defaults and 400, no 5xx
CONFIG = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}})
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def running_pool():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pool_module, "load", functools.partial(pool_module.load, sequence_len=32))
        POOL.start(background=False)
        assert POOL.wait_ready(60), POOL.error
    yield
    POOL.shutdown()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_the_server_does_what_its_openapi_document_says(case):
    case.call_and_validate()
