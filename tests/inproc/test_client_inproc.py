"""toonforge.client against the app in process (no worker: tasks stay queued): signatures,
key-only projects, errors carrying the API's message and code, list/detail/cancel."""

from __future__ import annotations

import pytest

from toonforge.client import ApiError, AuthenticationError, Client
from toonforge.client.common import Endpoint, run_path, task_ref
from toonforge.client.signing import NONCES, auth_headers, signature
from toonforge.testing import SMALL, InProcess, Keys, new_project

TOOL = "futurist/CartoonMix v1.0"


def client_for(inproc: InProcess, keys: Keys) -> Client:
    secret = keys.apisecret if keys.mode == "signature" else None
    return Client("http://testserver/v1", keys.apikey, secret, http=inproc.http)


def test_signature_is_the_servers() -> None:
    from toonforge.api.auth import signature_for

    assert signature("key", "secret", "123") == signature_for("key", "secret", "123")
    headers = auth_headers("key", "secret")
    assert set(headers) == {"x-api-key", "x-nonce", "x-signature"}
    assert auth_headers("key", None) == {"x-api-key": "key"}
    nonces = [int(NONCES.next()) for _ in range(1000)]
    assert nonces == sorted(set(nonces)), "nonces must strictly increase"


def test_run_paths_and_task_references() -> None:
    assert run_path("futurist/CartoonMix v1.0") == "Run/futurist/CartoonMix%20v1.0"
    assert run_path("futurist/cartoonmix-v1-0") == "Run/futurist/cartoonmix-v1-0"
    assert run_path("/v1/Run/wiro/animate-diff") == "Run/wiro/animate-diff"
    with pytest.raises(ValueError, match="OWNER/SLUG"):
        run_path("cartoonmix")
    assert task_ref("12") == {"taskid": "12"}
    assert task_ref(12) == {"taskid": "12"}
    assert task_ref("AbC123") == {"tasktoken": "AbC123"}
    end = Endpoint("https://tf.example/v1/", "key", None)
    assert end.url("Task/Detail") == "https://tf.example/v1/Task/Detail"
    assert end.socket_url() == "wss://tf.example/v1/socket"
    assert end.absolute("/v1/File/k/0.png") == "https://tf.example/v1/File/k/0.png"
    assert end.absolute("http://cdn.example/0.png") == "http://cdn.example/0.png"


def test_signed_project_runs_lists_and_cancels(inproc: InProcess) -> None:
    with client_for(inproc, inproc.keys) as tf:
        task = tf.run(TOOL, SMALL, wait=False)
        assert task.status == "task_queue" and task.id.isdigit() and not task.done
        assert task.parameters["prompt"] == SMALL["prompt"]
        assert tf.detail(task.socketaccesstoken).id == task.id
        clean = tf.run("futurist/cartoonmix-v1-0", SMALL, wait=False)
        page = tf.list_tasks()
        assert page.total == 2 and [t.id for t in page.tasks] == [clean.id, task.id]
        assert tf.list_tasks(order="ASC", limit=1).tasks[0].id == task.id
        cancelled = tf.cancel(task)
        assert cancelled.status == "task_cancel" and cancelled.done
        assert not cancelled.succeeded
        assert [t.id for t in tf.list_tasks(status="task_cancel").tasks] == [task.id]


def test_key_only_project_sends_the_key_alone(inproc: InProcess) -> None:
    keys = new_project(inproc.services, mode="key", name="key-only")
    with client_for(inproc, keys) as tf:
        task = tf.run(TOOL, SMALL, wait=False)
        assert tf.detail(task.id).status == "task_queue"
        # Signed headers are not refused by a key-only project either.
        extra = Client("http://testserver/v1", keys.apikey, "any", http=inproc.http)
        assert extra.detail(task.id).id == task.id
    # A signature project's key without its secret is refused, naming the headers.
    signed = Client("http://testserver/v1", inproc.keys.apikey, None, http=inproc.http)
    with pytest.raises(AuthenticationError) as err:
        signed.list_tasks()
    assert err.value.status == 401 and "x-signature" in err.value.message


def test_errors_carry_the_apis_message_and_code(inproc: InProcess) -> None:
    tf = client_for(inproc, inproc.keys)
    with pytest.raises(ApiError) as err:
        tf.run(TOOL, {**SMALL, "steps": 0})
    assert err.value.code == 0 and "[steps]" in err.value.message
    assert err.value.message in str(err.value)
    with pytest.raises(ApiError) as err:
        tf.detail("999999")
    assert (err.value.code, err.value.message) == (1, "There is no task yet.")
    with pytest.raises(ApiError) as err:
        tf.run("nobody/nothing", SMALL)
    assert err.value.message == "slug-owner-project-not-exist" and err.value.code == 1
    with pytest.raises(ApiError, match="limit"):
        tf.list_tasks(limit=1000)
    wrong = Client("http://testserver/v1", inproc.keys.apikey, "not-the-secret", http=inproc.http)
    with pytest.raises(AuthenticationError, match="not valid"):
        wrong.detail("1")
