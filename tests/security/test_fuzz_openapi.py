"""Schemathesis against every service's OpenAPI: generated requests, valid and invalid, with a valid
token, never get a 5xx, and every answer matches the schema the service publishes.

Schemathesis generates the cases; they are sent through httpx to the app running on this test's event
loop (its database engine lives on this loop), and schemathesis checks each response.
"""
import importlib

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from payloop.testing.plugin import running_service

SERVICES = ["tenants", "psa_ingest", "payments", "collections", "gl_posting", "reporting"]
TENANT = "tenant-fuzz"
EXAMPLES_PER_OPERATION = 12


def generated_cases(operation, count: int) -> list:
    cases = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy())
    def collect(case) -> None:
        cases.append(case)

    collect()
    return cases


def as_httpx(kwargs: dict) -> dict:
    """The transport kwargs schemathesis prepares for `requests`, spelled for httpx."""
    out = {k: kwargs[k] for k in ("method", "url", "headers", "params", "json") if kwargs.get(k) is not None}
    if kwargs.get("data") is not None:
        out["content"] = kwargs["data"]
    return out


@pytest.mark.parametrize("name", SERVICES)
async def test_no_server_errors_and_no_schema_violations(infra, token, name):
    service = importlib.import_module(f"payloop_{name}.service").SERVICE
    async with running_service(infra, service, consumers=False, relay=False) as client:
        schema = schemathesis.openapi.from_dict(client.app.openapi())
        auth = token(TENANT, "admin")
        failures: list[str] = []
        sent = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            if not operation.path.startswith("/v1/"):
                continue
            for case in generated_cases(operation, EXAMPLES_PER_OPERATION):
                kwargs = as_httpx(case.as_transport_kwargs(base_url="http://test", headers=auth))
                kwargs["headers"] = {k: v for k, v in kwargs.get("headers", {}).items()
                                     if k.lower() not in ("content-length", "host")}
                if "{tenant_id}" in operation.path:
                    # Mostly the caller's own tenant, so the handlers behind the checks run too.
                    kwargs["url"] = kwargs["url"].replace(f"/{case.path_parameters['tenant_id']}", f"/{TENANT}", 1) \
                        if case.path_parameters and case.path_parameters.get("tenant_id") else kwargs["url"]
                try:
                    response = await client.request(**kwargs)
                except httpx.InvalidURL:
                    continue  # a URL httpx itself refuses never reaches the service
                sent += 1
                try:
                    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
                except Exception as exc:  # schemathesis raises a group of failures
                    failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:1500])
        assert sent > 0
        assert not failures, "\n\n".join(failures[:10])
