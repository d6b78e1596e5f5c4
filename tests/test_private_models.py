"""Private base models: registered per project (API and CLI), used by selectedModelPrivate,
never visible to another project."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save as save_numpy

from support import Client, Server, create_keys

TOOL = "wiro/animate-diff"
SMALL = {"prompt": "a red kite", "frameNumber": 2, "steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # 10 MiB: the tiny checkpoint (3.7 MB) fits, the oversized upload below does not.
    srv = Server(
        tmp_path_factory.mktemp("private-models"), TOONFORGE_PRIVATE_MODEL_MAX_GB="0.009765625"
    )
    srv.keys = create_keys(srv.env)  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def alice(server: Server) -> Client:
    return Client(server.url, server.keys)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def bob(server: Server) -> Client:
    return Client(server.url, create_keys(server.env))


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    """A real single-file SD1.5 checkpoint (the tiny stand-in format, LDM layout)."""
    from toonforge.engine.tiny.sd15 import ensure_tiny_sd15

    return ensure_tiny_sd15(Path(os.environ["TOONFORGE_TEST_TINY_DIR"])).checkpoint


def add(
    client: Client, name: str, data: bytes, filename: str = "mine.safetensors", status: int = 200
) -> Any:
    r = client.http.post(
        "/v1/PrivateModel/Add",
        headers=client.headers(),
        data={"name": name},
        files={"file": (filename, data, "application/octet-stream")},
    )
    assert r.status_code == status, r.text
    return r.json()


def stored(server: Server) -> list[Path]:
    """The private models' files in the server's storage (the default: a local folder)."""
    folder = server.data_dir / "outputs" / "private_models"
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def listed(client: Client) -> list[dict[str, str]]:
    data = client.post("/v1/PrivateModel/List").json()
    assert data["result"] is True and data["total"] == str(len(data["models"]))
    return list(data["models"])


def run_error(client: Client, body: dict[str, Any]) -> str:
    r = client.post(f"/v1/Run/{TOOL}", body).json()
    assert r["result"] is False, r
    return str(r["errors"][0]["message"])


def test_register_and_generate_with_a_private_base(alice: Client, checkpoint: Path) -> None:
    data = checkpoint.read_bytes()
    answer = add(alice, "my-cartoon-base", data, "my-cartoon-base.safetensors")
    assert answer["result"] is True, answer
    [model] = answer["models"]
    assert model["name"] == "my-cartoon-base" and model["family"] == "sd15"
    assert model["size"] == str(len(data))
    assert model["sha256"] == hashlib.sha256(data).hexdigest()
    assert model in listed(alice)

    for value in (model["id"], "my-cartoon-base"):  # by id or by name
        task = alice.wait(alice.run(TOOL, {**SMALL, "selectedModelPrivate": value})["taskid"])
        assert task["pexit"] == "0", task["debugerror"]
        assert task["parameters"]["selectedModelPrivate"] == model["id"]
        info = json.loads(task["debugoutput"])
        assert info["base_model"] == f"private:{model['id']}"
        assert info["loaded_from"] == f"<private-models>/{model['id']}.safetensors"
        assert [o["name"] for o in task["outputs"]] == ["0.mp4"]


def test_another_project_never_sees_it(alice: Client, bob: Client, checkpoint: Path) -> None:
    [model] = add(alice, "alice-only", checkpoint.read_bytes())["models"]
    assert listed(bob) == []
    before = len(listed(alice))

    def not_found(value: str) -> str:
        return (
            f"Request parameter [selectedModelPrivate] private model '{value}' not found "
            "in this project"
        )

    assert run_error(bob, {**SMALL, "selectedModelPrivate": model["id"]}) == not_found(model["id"])
    assert run_error(bob, {**SMALL, "selectedModelPrivate": "alice-only"}) == not_found(
        "alice-only"
    )
    assert run_error(bob, {**SMALL, "selectedModelPrivate": "999999"}) == not_found("999999")
    for value in (model["id"], "999999"):
        r = bob.post("/v1/PrivateModel/Delete", {"id": value}).json()
        assert r["result"] is False
        assert r["errors"] == [{"code": 1, "message": "Private model not found."}]
    assert len(listed(alice)) == before


def test_bad_uploads_are_refused(alice: Client, server: Server, checkpoint: Path) -> None:
    before = listed(alice)
    lora_like = save_numpy({"unet.down_blocks.0.lora_A.weight": np.zeros((4, 4), np.float32)})
    cases = {
        b"not a model at all": "not a safetensors checkpoint",
        lora_like: "not a single-file SD 1.5 checkpoint",
        checkpoint.read_bytes()[:-10]: "truncated",
    }
    for data, expected in cases.items():
        r = add(alice, "bad-one", data)
        assert r["result"] is False and expected in r["errors"][0]["message"], r
        assert r["errors"][0]["message"].startswith("Request parameter [file]")
    r = add(alice, "12345", checkpoint.read_bytes())
    assert r["result"] is False and "must not be a number" in r["errors"][0]["message"]
    r = alice.post("/v1/PrivateModel/Add", {"name": "x"}).json()
    assert r["result"] is False and "[file]" in r["errors"][0]["message"]
    assert listed(alice) == before
    # One stored file per registered model, nothing of the refused ones (nor of their
    # staging copies in the data folder).
    assert len(stored(server)) == len(before)
    staging = server.data_dir / "private_models"
    assert not [p for p in staging.iterdir() if p.name.startswith(".upload-")]


def test_an_upload_over_the_size_limit_is_refused(alice: Client, server: Server) -> None:
    before = listed(alice)
    r = add(alice, "too-big", bytes(11 * 1024 * 1024), status=413)
    assert r["result"] is False
    message = r["errors"][0]["message"]
    assert message.startswith("Request parameter [file] is larger than 0.00976562 GB"), message
    assert "TOONFORGE_PRIVATE_MODEL_MAX_GB" in message
    assert listed(alice) == before
    uploads = server.data_dir / "private_models"
    leftovers = uploads.iterdir() if uploads.is_dir() else []
    assert not [p for p in leftovers if p.name.startswith(".upload-")]


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "toonforge", "models", "private", *args]
    return subprocess.run(cmd, env=server.env, capture_output=True, text=True, timeout=120)


def test_cli_add_list_remove(alice: Client, server: Server, checkpoint: Path) -> None:
    key = server.keys["apikey"]  # type: ignore[attr-defined]
    out = cli(
        server, "add", "--project", key, "--name", "from-cli", "--file", str(checkpoint), "--json"
    )
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)
    assert row["name"] == "from-cli" and row in listed(alice)
    project_id = str(server.keys["projectid"])  # type: ignore[attr-defined]
    shown = cli(server, "list", "--project", project_id)
    assert shown.returncode == 0 and "from-cli" in shown.stdout
    dup = cli(server, "add", "--project", key, "--name", "from-cli", "--file", str(checkpoint))
    assert dup.returncode != 0 and "already exists" in dup.stderr
    gone = cli(server, "remove", "--project", key, row["id"])
    assert gone.returncode == 0, gone.stderr
    assert row not in listed(alice)
    assert not (server.data_dir / "private_models" / f"{row['id']}.safetensors").exists()
    assert len(stored(server)) == len(listed(alice))  # its stored file is gone too
    # A removed model is "not found" for Run, and nothing is queued.
    message = run_error(alice, {**SMALL, "selectedModelPrivate": row["id"]})
    assert "not found" in message
