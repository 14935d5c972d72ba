"""Property-based API fuzzing with Schemathesis: no input, valid or not, makes the service answer 5xx.

Every operation of ``/api/openapi.json`` (the multipart upload included) gets
schema-conforming and schema-violating requests, authenticated as an admin
(who may call every route), then a smaller unauthenticated pass. The bar is
zero server errors: bad input must give a 4xx with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import schemathesis
from fastapi import FastAPI, Response
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.service.conftest import Service

ADMIN_EXAMPLES = 15  # per operation and generation mode
ANONYMOUS_EXAMPLES = 4


@dataclass
class Outcome:
    operations: list[str] = field(default_factory=list)
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    by_operation: dict[str, set[int]] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.operations)} operations, {self.requests} requests, "
                f"{len(self.server_errors)} server errors, statuses {dict(sorted(self.statuses.items()))}")


def fuzz(app: Any, headers: dict[str, str], examples: int, skip: frozenset[str] = frozenset()) -> Outcome:
    """Call every operation of ``app`` (but ``skip``) with generated requests; collect statuses and server errors
    (not raised)."""
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    outcome = Outcome()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in skip:
            continue
        outcome.operations.append(operation.label)
        strategies = []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                strategies.append(operation.as_strategy(generation_mode=mode))
            except Exception as exc:  # an operation without anything to break has no negative cases
                if mode is GenerationMode.POSITIVE:
                    raise
                print(f"{operation.label}: no {mode.value} cases ({type(exc).__name__})")

        @settings(max_examples=examples * len(strategies), deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], print_blob=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                         HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example])
        @given(case=st.one_of(strategies))
        def call(case: Any) -> None:
            try:
                response = case.call(headers=headers)
            except Exception as exc:  # the app raised through the transport: a server error too
                outcome.server_errors.append(f"{operation.label}: {type(exc).__name__}: {exc}\n"
                                             f"{case.as_curl_command(headers=headers)}")
                return
            outcome.requests += 1
            outcome.statuses[response.status_code] = outcome.statuses.get(response.status_code, 0) + 1
            outcome.by_operation.setdefault(operation.label, set()).add(response.status_code)
            try:
                case.validate_response(response, checks=[not_a_server_error], headers=headers)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup (BaseExceptionGroup)
                outcome.server_errors.append(f"{operation.label}: {response.status_code} {response.text[:300]}\n"
                                             f"{type(exc).__name__}: {str(exc)[:300]}\n"
                                             f"{case.as_curl_command(headers=headers)}")

        call()
    return outcome


def _stop_schemathesis_lifespans() -> None:
    from schemathesis.python import asgi

    try:
        asgi.shutdown_lifespans()
    except Exception:  # the app's own shutdown already ran (TestClient); nothing else to release
        pass


def test_no_server_errors_as_admin(service: Service) -> None:
    try:
        # logout would end the fuzzer's own session (it is fuzzed anonymously below)
        outcome = fuzz(service.app, service.headers("admin"), ADMIN_EXAMPLES, skip=frozenset({"POST /api/auth/logout"}))
    finally:
        _stop_schemathesis_lifespans()
    print(f"[{service.backend}] admin: {outcome.summary()}")
    assert len(outcome.operations) >= 20 and "POST /api/studies" in outcome.operations
    # similar confirmed cases (issue 20): fuzzed like every route (a real study's query string: test_similar.py)
    assert {"GET /api/studies/{study_id}/similar", "GET /api/cases/{case_id}/thumbnail.png"} <= set(outcome.operations)
    assert outcome.by_operation["POST /api/studies"] & {400, 415, 422}  # the multipart upload was exercised
    assert outcome.requests >= 10 * len(outcome.operations)
    assert not outcome.server_errors, "\n\n".join(outcome.server_errors[:10])
    assert any(400 <= s < 500 for s in outcome.statuses) and any(200 <= s < 300 for s in outcome.statuses)
    assert service.client.get("/api/admin/audit/verify", headers=service.headers("admin")).json()["ok"] is True


def test_no_server_errors_without_a_token(service: Service) -> None:
    try:
        outcome = fuzz(service.app, {}, ANONYMOUS_EXAMPLES)
    finally:
        _stop_schemathesis_lifespans()
    print(f"[{service.backend}] anonymous: {outcome.summary()}")
    assert not outcome.server_errors, "\n\n".join(outcome.server_errors[:10])
    public = {"GET /api/health", "POST /api/auth/token"}
    for label, statuses in outcome.by_operation.items():
        if label not in public:  # 401; or 400/422 for a body FastAPI cannot parse, which it checks before the token
            assert statuses <= {400, 401, 422} and 401 in statuses, (label, statuses)



def test_the_fuzzer_reports_server_errors() -> None:
    """The harness above cannot pass silently: a route that fails is counted, raised or answered 5xx."""
    app = FastAPI(openapi_url="/api/openapi.json")

    @app.get("/api/broken/{number}")
    def broken(number: int) -> Response:
        if number % 2:
            raise RuntimeError("unhandled")
        return Response(status_code=503)

    try:
        outcome = fuzz(app, {}, 5)
    finally:
        _stop_schemathesis_lifespans()
    assert outcome.operations == ["GET /api/broken/{number}"]
    assert any("RuntimeError" in e for e in outcome.server_errors)
    assert any(": 503" in e for e in outcome.server_errors)
