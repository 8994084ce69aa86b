"""``docs/openapi.yaml`` describes exactly the routes and methods the gateway's app answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from falcon.routing import map_http_methods

from services.api_gateway.app import create_app
from services.common.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return spec


def _walk(nodes: list[Any]) -> Iterator[tuple[str, Any]]:
    for node in nodes:
        if node.resource is not None:
            yield node.uri_template, node.resource
        yield from _walk(node.children)


def served_operations() -> set[tuple[str, str]]:
    """(path template, METHOD) of every responder a route defines itself (not Falcon's default
    OPTIONS and 405 responders)."""
    app = create_app(Settings.load(environ={}))
    router = app._router
    return {
        (template, method)
        for template, resource in _walk(router._roots)  # type: ignore[attr-defined]
        for method in map_http_methods(resource)
    }


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _resolve(spec, target)


def test_every_served_route_and_method_is_in_the_spec_and_nothing_else() -> None:
    served = served_operations()
    documented = spec_operations(load_spec())
    assert served, "no routes found in the app's router"
    assert sorted(served - documented) == [], "served but not in docs/openapi.yaml"
    assert sorted(documented - served) == [], "in docs/openapi.yaml but not served"


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], list[Any]]]:
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method in HTTP_METHODS:
                params = [_resolve(spec, p) for p in [*shared, *operation.get("parameters", [])]]
                yield path, method, operation, params


@pytest.mark.parametrize("path_prefix", ["/v2/"])
def test_every_v2_operation_requires_the_tenant_headers_and_documents_400(
    path_prefix: str,
) -> None:
    spec = load_spec()
    for path, method, operation, params in _operations(spec):
        if not path.startswith(path_prefix):
            continue
        headers = {p["name"]: p for p in params if p["in"] == "header"}
        where = f"{method.upper()} {path}"
        assert headers.get("Client-ID", {}).get("required"), where
        assert headers.get("X-Project-ID", {}).get("required"), where
        assert "400" in operation["responses"], where
        assert "406" in operation["responses"], where


def test_path_parameters_match_the_templates() -> None:
    spec = load_spec()
    for path, method, _operation, params in _operations(spec):
        declared = {p["name"] for p in params if p["in"] == "path"}
        in_template = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert declared == in_template, f"{method.upper()} {path}"


# Creations answered 201 with a Location and no body, as Zaqar answers them.
EMPTY_CREATED = {
    ("put", "/v2/queues/{queue_name}", "201"),
    ("put", "/v2/topics/{queue_name}", "201"),
    ("put", "/v2/pools/{pool_name}", "201"),
    ("put", "/v2/flavors/{flavor_name}", "201"),
}


def test_error_and_no_content_answers_are_described_as_served() -> None:
    """Errors are ``{"title", "description"}`` JSON; 204 has no body (nor has 201 of a queue,
    pool or flavor create); GET / answers 300."""
    spec = load_spec()
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["title"]
    assert set(error["properties"]) == {"title", "description"}
    for path, method, operation, _params in _operations(spec):
        for status, response in operation["responses"].items():
            response = _resolve(spec, response)
            where = f"{method.upper()} {path} {status}"
            if status in {"204", "406"} or method == "head":
                assert "content" not in response, where
            elif int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert _resolve(spec, schema) == error, where
            elif (method, path, status) not in EMPTY_CREATED:
                assert "content" in response, where
    assert set(spec["paths"]["/"]["get"]["responses"]) == {"300", "400", "406"}
    home = spec["paths"]["/v2/"]["get"]["responses"]["200"]
    assert set(home["content"]) == {"application/json-home"}


def test_documented_limits_are_the_enforced_ones() -> None:
    from services.api_gateway import inputs, limits
    from services.common.limits import PAGE_LIMIT_MAX

    documented = load_spec()["x-limits"]
    assert documented == {
        "header_fields_max": limits.HEADERS_COUNT_MAX,
        "header_bytes_max": limits.HEADERS_BYTES_MAX,
        "query_string_max_bytes": limits.QUERY_STRING_MAX,
        "json_body_max_depth": limits.JSON_DEPTH_MAX,
        "ids_max": PAGE_LIMIT_MAX,
        "body_max_bytes": {
            "post_messages": inputs.MESSAGES_BODY_MAX,
            "put_queue": inputs.QUEUE_BODY_MAX,
            "patch_queue": inputs.PATCH_BODY_MAX,
            "other": inputs.SMALL_BODY_MAX,
        },
    }
