"""The HTTP surface, strictly: wrong types are refused (not coerced), JSON that is not text or nests too deep,
405 with Allow, CORS refusals and foreign Host headers as JSON errors, and `models.retrieve`."""

from __future__ import annotations

import json

import httpx
import pytest
from openai import NotFoundError, OpenAI
from server_harness import HI, TIMEOUT, assert_error, live_server, make_pool, wait_ready

from nanochat_py.server.app import Settings, create_app

ROUTES = ["/chat/completions", "/v1/chat/completions"]


@pytest.fixture(scope="module")
def url():
    with live_server(make_pool(), cors_origins=("http://ok.example",), model_name="tiny/model") as url:
        wait_ready(url)
        yield url


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
        yield c


# --- types are checked, never coerced ----------------------------------------------------------------------
WRONG_TYPES = {
    "max_tokens true": {"max_tokens": True},
    "max_tokens '8'": {"max_tokens": "8"},
    "max_tokens 8.0": {"max_tokens": 8.0},
    "top_k '5'": {"top_k": "5"},
    "temperature '0.5'": {"temperature": "0.5"},
    "temperature true": {"temperature": True},
    "seed '1'": {"seed": "1"},
    "role as a list": {"messages": [{"role": ["user"], "content": "hi"}]},
    "content part text as a number": {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
}
WRONG_TYPES_OPENAI = {
    "stream 'yes'": {"stream": "yes"},
    "stream 1": {"stream": 1},
    "n '2'": {"n": "2"},
    "stop as a number": {"stop": 5},
    "include_usage 'true'": {"stream": True, "stream_options": {"include_usage": "true"}},
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("fields", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_a_wrong_type_is_a_400_not_coerced(client, route, fields):
    assert_error(client.post(route, json={"messages": HI, **fields}), 400)


@pytest.mark.parametrize("fields", WRONG_TYPES_OPENAI.values(), ids=WRONG_TYPES_OPENAI.keys())
def test_a_wrong_type_in_an_openai_field_is_a_400(client, fields):
    assert_error(client.post("/v1/chat/completions", json={"messages": HI, **fields}), 400)


@pytest.mark.parametrize("route", ROUTES)
def test_an_integer_where_a_number_is_asked_is_fine(client, route):
    r = client.post(route, json={"messages": HI, "temperature": 1, "top_p": 1, "max_tokens": 2})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_400(client, route, literal):
    body = '{"messages": [{"role": "user", "content": "hi"}], "temperature": ' + literal + "}"
    assert_error(client.post(route, content=body, headers={"content-type": "application/json"}), 400)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("where", ["content", "part", "stop"])
def test_a_lone_surrogate_is_a_400(client, route, where):
    content = '[{"type": "text", "text": "a\\ud800b"}]' if where == "part" else '"a\\udfffb"'
    if where == "stop":
        if route != "/v1/chat/completions":
            pytest.skip("only the OpenAI API takes stop strings")
        body = '{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud800"]}'
    else:
        body = '{"messages": [{"role": "user", "content": ' + content + "}]}"
    error = assert_error(client.post(route, content=body, headers={"content-type": "application/json"}), 400)
    assert "surrogate" in error["message"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("depth", [40, 100_000])
def test_json_nested_too_deep_is_a_400_that_says_so(client, route, depth):
    body = '{"messages": ' + "[" * depth + "]" * depth + "}"
    error = assert_error(client.post(route, content=body, headers={"content-type": "application/json"}), 400)
    assert "nested" in error["message"] and "32" in error["message"]


def test_brackets_inside_strings_do_not_count_as_nesting(client):
    r = client.post("/chat/completions", json={"messages": [{"role": "user", "content": "[{" * 100}], "max_tokens": 1})
    assert r.status_code == 200, r.text


# --- methods, CORS, models -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path,allow", [("GET", "/chat/completions", "POST"), ("POST", "/health", "GET"),
                                               ("DELETE", "/v1/models", "GET")])  # fmt: skip
def test_405_names_the_allowed_methods(client, method, path, allow):
    r = client.request(method, path)
    assert_error(r, 405)
    assert r.headers["allow"] == allow


def test_a_cors_preflight_from_a_foreign_origin_is_a_json_error(client):
    headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    error = assert_error(client.options("/v1/chat/completions", headers=headers), 400)
    assert "origin" in error["message"] and "--cors-origins" in error["message"]
    ok = client.options("/v1/chat/completions", headers={**headers, "Origin": "http://ok.example"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://ok.example"


def test_models_retrieve_gives_the_model_and_404_for_others(url):
    openai = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    model = openai.models.retrieve("tiny/model")
    assert model.id == "tiny/model" and model.object == "model"
    with pytest.raises(NotFoundError):
        openai.models.retrieve("gpt-4")


# --- the OpenAPI document ---------------------------------------------------------------------------------
def test_openapi_declares_400_not_422_and_the_limits(client):
    schema = client.get("/openapi.json").json()
    text = json.dumps(schema)
    assert "422" not in text and "HTTPValidationError" not in text
    for path in ROUTES:
        responses = schema["paths"][path]["post"]["responses"]
        assert {"200", "400", "413", "503"} <= set(responses), responses
        assert "401" not in responses  # no --api-key here
    assert "421" in schema["paths"]["/health"]["get"]["responses"]  # Host names are checked here
    body = schema["components"]["schemas"]["OpenAIChatRequest"]["properties"]
    assert body["n"]["maximum"] == 8 and body["max_tokens"]["anyOf"][0]["maximum"] == 4096
    stop = json.dumps(body["stop"])
    assert '"maxItems": 4' in stop and '"maxLength": 256' in stop


# --- DNS rebinding: only the names the server answers to -----------------------------------------------------
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]", "LOCALHOST"]


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_a_loopback_server_answers_loopback_names(client, url, host):
    port = url.rsplit(":", 1)[1]
    for value in (host, f"{host}:{port}"):
        assert client.get("/health", headers={"Host": value}).status_code == 200, value


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.2", ""])
def test_a_loopback_server_refuses_other_host_names(client, host):
    for path in ("/health", "/"):
        error = assert_error(client.get(path, headers={"Host": host}), 421)
        assert "--allowed-hosts" in error["message"]
    r = client.post("/v1/chat/completions", json={"messages": HI}, headers={"Host": host})
    assert_error(r, 421)


def test_allowed_hosts_widens_the_names():
    with live_server(make_pool(), allowed_hosts=("localhost", "127.0.0.1", "::1", "chat.example")) as url:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
            assert c.get("/health", headers={"Host": "chat.example:1234"}).status_code in (200, 503)
            assert c.get("/health", headers={"Host": "127.0.0.1"}).status_code in (200, 503)
            assert_error(c.get("/health", headers={"Host": "evil.example"}), 421)
    with live_server(make_pool(), allowed_hosts=("*",)) as url:
        assert httpx.get(url + "/health", headers={"Host": "anything.example"}).status_code in (200, 503)


def test_openapi_declares_401_on_the_api_routes_only_with_an_api_key():
    schema = create_app(make_pool(), Settings(api_key="k", allowed_hosts=("*",))).openapi()
    for path, operations in schema["paths"].items():
        for responses in (op["responses"] for op in operations.values()):
            api = path in ("/chat/completions", "/tokenize", "/detokenize", "/tokenizer_info")
            assert ("401" in responses) == (api or path.startswith("/v1/")), path
            assert "421" not in responses  # "*": no Host check
