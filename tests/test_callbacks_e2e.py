"""Callbacks from a real server to a real receiver on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook

from support import Client, Server, create_keys

CARTOON = "futurist/CartoonMix%20v1.0"
SMALL = {
    "prompt": "a cat",
    "negativePrompt": "",
    "samples": 1,
    "steps": 2,
    "width": 64,
    "height": 64,
    "seed": "3",
}


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = 500 if len(receiver.requests) <= receiver.fail_first else 200
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.requests) >= count, f"got {len(self.requests)} of {count} callbacks"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.httpd.shutdown()


def wait_delivery(c: Client, taskid: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        callbacks = c.detail(taskid)["callbacks"]
        if callbacks and callbacks[0]["state"] == state:
            return dict(callbacks[0])
        time.sleep(0.1)
    raise AssertionError(f"callback of {taskid} not {state}: {c.detail(taskid)['callbacks']}")


def test_callback_is_signed_retried_and_recorded(server: Server, receiver: Receiver) -> None:
    keys = create_keys(server.env)
    c = Client(server.url, keys)
    data = c.run(CARTOON, {**SMALL, "callbackUrl": receiver.url})
    task = c.wait(data["taskid"])
    receiver.wait(3)
    delivery = wait_delivery(c, data["taskid"], "delivered")
    assert delivery["attempts"] == "3"
    headers, body = receiver.requests[-1]
    Webhook(keys["webhooksecret"]).verify(body, headers)  # raises if the signature is wrong
    sent = json.loads(body)
    assert sent["id"] == task["id"] and sent["status"] == "task_postprocess_end"
    assert sent["outputs"][0]["name"] == "0.png"
    # Retries of one delivery keep one webhook-id.
    assert len({h["webhook-id"] for h, _ in receiver.requests}) == 1


def test_cancelled_task_calls_back_too(server: Server, receiver: Receiver) -> None:
    receiver.fail_first = 0
    keys = create_keys(server.env)
    c = Client(server.url, keys)
    # Queue behind a long task so this one can still be cancelled.
    blocker = c.run(CARTOON, {**SMALL, "steps": 150, "width": 256, "height": 256})
    data = c.run(CARTOON, {**SMALL, "callbackUrl": receiver.url})
    assert c.post("/v1/Task/Cancel", {"taskid": data["taskid"]}).json()["result"] is True
    receiver.wait(1)
    assert json.loads(receiver.requests[0][1])["status"] == "task_cancel"
    c.post("/v1/Task/Kill", {"taskid": blocker["taskid"]})
    c.wait(blocker["taskid"])


def test_private_address_is_refused_by_default(make_server: Any, receiver: Receiver) -> None:
    srv = make_server(workers=0)  # callbacks to private addresses not allowed (the default)
    srv.start()
    c = Client(srv.url, srv.keys)
    data = c.run(CARTOON, {**SMALL, "callbackUrl": receiver.url})
    c.post("/v1/Task/Cancel", {"taskid": data["taskid"]})
    delivery = wait_delivery(c, data["taskid"], "refused")
    assert "loopback" in delivery["lasterror"]
    time.sleep(0.5)
    assert receiver.requests == []


def test_placeholder_callback_text_is_recorded_not_sent(client: Client) -> None:
    # The seed pages' curl examples put a sentence in callbackUrl; the task still runs.
    data = client.run(CARTOON, {**SMALL, "callbackUrl": "You can provide a callback URL"})
    assert client.wait(data["taskid"])["pexit"] == "0"
    delivery = wait_delivery(client, data["taskid"], "refused")
    assert "not an http(s) URL" in delivery["lasterror"]
