"""Authentication from the headers, the replay rule, body limits and malformed input, in
process (no server started)."""

from __future__ import annotations

import json
import threading

import pytest

from toonforge.api.body import MAX_BODY_BYTES
from toonforge.testing import InProcess, signed_headers

CARTOON = "/v1/Run/futurist/cartoonmix-v1-0"
SMALL = {"prompt": "a cat", "samples": 1, "steps": 2, "width": 64, "height": 64}


def _post(inproc: InProcess, path: str, body: object, headers: dict[str, str]) -> object:
    return inproc.http.post(
        path, content=json.dumps(body), headers={**headers, "Content-Type": "application/json"}
    )


def test_an_exact_repeat_of_a_run_is_refused(inproc: InProcess) -> None:
    headers = signed_headers(inproc.keys, nonce="1700000000000")
    first = _post(inproc, CARTOON, SMALL, headers)
    assert first.status_code == 200 and first.json()["result"] is True
    again = _post(inproc, CARTOON, SMALL, headers)
    assert again.status_code == 401
    assert "already made with this nonce" in again.json()["errors"][0]["message"]
    # Same nonce, another body: another request, as the official client makes in one ms.
    other = _post(inproc, CARTOON, {**SMALL, "prompt": "a dog"}, headers)
    assert other.status_code == 200 and other.json()["result"] is True


def test_a_refused_replay_queues_nothing(inproc: InProcess) -> None:
    headers = signed_headers(inproc.keys, nonce="42")
    taskid = _post(inproc, CARTOON, SMALL, headers).json()["taskid"]
    assert _post(inproc, CARTOON, SMALL, headers).status_code == 401
    with inproc.services.read_sessions() as session:
        from sqlalchemy import func, select

        from toonforge.tasks.models import Task

        assert session.scalar(select(func.count(Task.id))) == 1
    assert taskid == "1"


def test_parallel_reads_with_one_nonce_all_pass(inproc: InProcess) -> None:
    taskid = inproc.client.ok(CARTOON, SMALL)["taskid"]
    headers = signed_headers(inproc.keys, nonce="1700000000001")
    codes: list[int] = []

    def detail() -> None:
        r = _post(inproc, "/v1/Task/Detail", {"taskid": taskid}, headers)
        codes.append(r.status_code if r.json()["result"] else -1)

    threads = [threading.Thread(target=detail) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 8


def test_key_only_project_needs_no_signature(inproc: InProcess) -> None:
    key_client = inproc.project(mode="key")
    assert key_client.ok(CARTOON, SMALL)["taskid"]
    # and may repeat a request freely (there is no nonce to repeat)
    assert key_client.ok(CARTOON, SMALL)["taskid"]


def test_authentication_comes_before_the_body(inproc: InProcess) -> None:
    big = b"x" * (MAX_BODY_BYTES + 10)
    r = inproc.http.post("/v1/Run/futurist/cartoonmix-v1-0", content=big)
    assert r.status_code == 401
    assert r.json()["errors"][0]["message"] == "Project authorization is not founded."


def test_oversized_bodies_are_413(inproc: InProcess) -> None:
    headers = {**signed_headers(inproc.keys), "Content-Type": "application/json"}
    big = b'{"prompt": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = inproc.http.post(CARTOON, content=big, headers=headers)
    assert r.status_code == 413
    assert r.json()["result"] is False
    assert "larger than" in r.json()["errors"][0]["message"]

    def chunks():  # no Content-Length: limited while streaming
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536

    r = inproc.http.post(CARTOON, content=chunks(), headers=signed_headers(inproc.keys))
    assert r.status_code == 413
    r = inproc.http.post("/v1/Tool/List", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


MALFORMED_IDS = [str(2**70), str(2**31), "²", "٣", "-1", "0", "1e5", " x", "9" * 400, 2**70]
TASK_PATHS = ["/v1/Task/Detail", "/v1/Task/Kill", "/v1/Task/Cancel", "/v1/Task/InputOutputDelete"]


def test_malformed_task_ids_are_enveloped(inproc: InProcess) -> None:
    for path in TASK_PATHS:
        for taskid in MALFORMED_IDS:
            for field in ("taskid", "tasktoken"):
                r = inproc.client.post(path, {field: taskid})
                assert r.status_code == 200, (path, taskid, r.text)
                data = r.json()
                assert data["result"] is False
                assert data["errors"][0]["message"] == "There is no task yet.", (path, data)


def test_malformed_private_model_ids_are_enveloped(inproc: InProcess) -> None:
    for value in [str(2**70), "²", "x" * 500, 2**70]:
        r = inproc.client.post("/v1/PrivateModel/Delete", {"id": value})
        assert r.status_code == 200
        assert r.json()["errors"][0]["message"] == "Private model not found."


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": "k" * 100_000},
        {"x-api-key": "ключ".encode()},
        {"x-nonce": "n" * 10_000, "x-signature": "s" * 10_000},
        {"x-signature": "ü".encode(), "x-nonce": b"\xff"},
    ],
)
def test_odd_headers_are_401_not_errors(inproc: InProcess, headers: dict[str, object]) -> None:
    base = {"x-api-key": inproc.keys.apikey}
    r = inproc.http.post("/v1/Task/Detail", json={"taskid": "1"}, headers={**base, **headers})
    assert r.status_code == 401
    assert r.json()["result"] is False


def test_unparseable_and_nested_bodies(inproc: InProcess) -> None:
    headers = {**signed_headers(inproc.keys), "Content-Type": "application/json"}
    for body in (b"{", b"[1,2]", b"[" * 100_000, b'{"taskid": {"a": [1]}}', b"\xff\xfe"):
        r = inproc.http.post("/v1/Task/Detail", content=body, headers=headers)
        assert r.status_code == 200
        assert r.json()["result"] is False


def test_infinite_and_huge_numbers_are_validation_errors(inproc: InProcess) -> None:
    headers = {**signed_headers(inproc.keys), "Content-Type": "application/json"}
    for body in (
        b'{"prompt": "a", "seed": 1e400}',
        b'{"prompt": "a", "steps": 1e400}',
        b'{"prompt": "a", "steps": ' + b"9" * 500 + b"}",
        b'{"prompt": "a", "seed": "' + b"9" * 5000 + b'"}',
    ):
        r = inproc.http.post(CARTOON, content=body, headers=headers)
        assert r.status_code == 200, body[:60]
        assert r.json()["result"] is False
        assert r.json()["errors"][0]["message"].startswith("Request parameter [")
    # A schedule step of 1e400 is past every step: the prompt is valid.
    r = inproc.client.post(CARTOON, {**SMALL, "prompt": "[a:b:1e400]"})
    assert r.json()["result"] is True, r.text
