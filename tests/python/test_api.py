"""The HTTP contract as a real client sees it (requests + dill + codecs base64)."""

from __future__ import annotations

import random
import uuid

import requests

from faas_client import STATUSES, Client, deserialize, serialize
from faas_stack import Stack


def double(x: int) -> int:
    return x * 2


def test_invalid_registration_payload_is_400(stack: Stack) -> None:
    for payload in ["payload", "", serialize(1)[:-6], "aGVsbG8gd29ybGQ=\n"]:
        r = requests.post(f"{stack.url}/register_function", json={"name": "x", "payload": payload})
        assert r.status_code == 400, (payload, r.text)
        assert "payload" in r.json()["detail"]


def spec_serialize(obj: object) -> str:
    """The specification's helper, verbatim."""
    import codecs

    import dill  # type: ignore[import-untyped]

    return codecs.encode(dill.dumps(obj), "base64").decode()


def test_roundtrip_with_the_spec_serializer(stack: Stack) -> None:
    r = requests.post(f"{stack.url}/register_function",
                      json={"name": "double", "payload": spec_serialize(double)})
    assert r.status_code == 200
    fid = r.json()["function_id"]
    r = requests.post(f"{stack.url}/execute_function",
                      json={"function_id": fid, "payload": spec_serialize(((21,), {}))})
    assert r.status_code == 200
    tid = r.json()["task_id"]
    assert Client(stack.url).wait(tid) == ("COMPLETED", 42)


def test_roundtrip_with_random_inputs(client: Client) -> None:
    fid = client.register(double)
    rng = random.Random(52040)
    tasks = {}
    for _ in range(20):
        n = rng.randint(-10**12, 10**12)
        tasks[client.execute(fid, n)] = n
    for tid, n in tasks.items():
        assert client.wait(tid) == ("COMPLETED", n * 2)


def test_roundtrip_of_rich_values(client: Client) -> None:
    def echo(*args: object, **kwargs: object) -> object:
        return args, kwargs

    value = ({"a": [1, 2.5, None]}, b"\x00\xff", "ünï", {1, 2}, 10**40)
    status, got = client.wait(client.execute(client.register(echo), *value, k=frozenset([3])))
    assert status == "COMPLETED"
    assert got == (value, {"k": frozenset([3])})


def test_task_is_visible_the_instant_execute_returns(stack: Stack, client: Client) -> None:
    fid = client.register(lambda: __import__("time").sleep(0.3))
    for _ in range(10):
        r = requests.post(f"{stack.url}/execute_function",
                          json={"function_id": fid, "payload": serialize(((), {}))})
        assert r.status_code == 200
        tid = r.json()["task_id"]
        s = requests.get(f"{stack.url}/status/{tid}")
        assert s.status_code == 200
        assert s.json() == {"task_id": tid, "status": s.json()["status"]}
        assert s.json()["status"] in STATUSES


def test_result_answers_200_while_pending(stack: Stack, client: Client) -> None:
    tid = client.execute(client.register(lambda: __import__("time").sleep(1) or "done"))
    r = requests.get(f"{stack.url}/result/{tid}")
    assert r.status_code == 200
    body = r.json()
    assert body["task_id"] == tid
    assert body["status"] in ("QUEUED", "RUNNING")
    assert body["result"] is None
    assert client.wait(tid) == ("COMPLETED", "done")
    final = requests.get(f"{stack.url}/result/{tid}").json()
    assert deserialize(final["result"]) == "done"


def test_unknown_ids_are_404(stack: Stack) -> None:
    unknown = str(uuid.uuid4())
    r = requests.post(f"{stack.url}/execute_function",
                      json={"function_id": unknown, "payload": serialize(((), {}))})
    assert r.status_code == 404
    assert "detail" in r.json()
    assert requests.get(f"{stack.url}/status/{unknown}").status_code == 404
    assert requests.get(f"{stack.url}/result/{unknown}").status_code == 404


def test_schema_errors_are_422(stack: Stack) -> None:
    cases = [
        ("register_function", {"name": "x"}),
        ("register_function", {"payload": serialize(double)}),
        ("execute_function", {"function_id": "not-a-uuid", "payload": serialize(((), {}))}),
        ("execute_function", {"payload": serialize(((), {}))}),
    ]
    for route, body in cases:
        r = requests.post(f"{stack.url}/{route}", json=body)
        assert r.status_code == 422, (route, body, r.text)
        assert isinstance(r.json()["detail"], list)
    r = requests.post(f"{stack.url}/register_function", data="{not json",
                      headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert requests.get(f"{stack.url}/status/not-a-uuid").status_code == 422
    assert requests.get(f"{stack.url}/result/not-a-uuid").status_code == 422


def test_openapi_and_health(stack: Stack) -> None:
    doc = requests.get(f"{stack.url}/openapi.json").json()
    assert set(doc["paths"]) >= {"/register_function", "/execute_function",
                                 "/status/{task_id}", "/result/{task_id}"}
    assert requests.get(f"{stack.url}/healthz").status_code == 200
