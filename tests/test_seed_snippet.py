"""The seed page's own shell snippet (openssl signature, curl, JSON under a multipart header)
works against toonforge with only the base URL changed."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from support import Client, Server

SNIPPET = r"""
set -e
export YOUR_API_KEY="$KEY";
export YOUR_API_SECRET="$SECRET";
# unix time or any random integer value
export NONCE=$(date +%s%N);
# hmac-SHA256 (YOUR_API_SECRET+Nonce) with YOUR_API_KEY
export SIGNATURE="$(echo -n "${YOUR_API_SECRET}${NONCE}" | openssl dgst -sha256 -hmac "${YOUR_API_KEY}")";
curl -s -X POST "$BASE/v1/Run/futurist/CartoonMix%20v1.0" -H "Content-Type: multipart/form-data" -H "x-api-key: ${YOUR_API_KEY}" -H "x-nonce: ${NONCE}" -H "x-signature: ${SIGNATURE}" -d '{ "prompt": "(masterpiece, top quality, best quality, official art, beautiful and aesthetic:1.2), 1girl, beautiful, high detailed, purple hair with a hint of pink, pink eyes, dark lighting, serious face, looking the sky, sky, medium shot, black sweater, jewelry", "negativePrompt": "bad-hands-5 EasyNegativeV2 ng_deepnegative_v1_75t", "samples": 4, "steps": 20, "scale": "4", "seed": "123456", "clipSkip": 4, "width": 512, "height": 512, "scheduler": "EulerDiscreteScheduler", "callbackUrl": "You can provide a callback URL; Wiro will send a POST request to it when the task is completed." }';
"""  # noqa: E501 - the page's line, kept whole


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl")
def test_seed_page_snippet(server: Server, client: Client) -> None:
    env = {
        "KEY": client.keys["apikey"],
        "SECRET": client.keys["apisecret"],
        "BASE": server.url,
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    out = subprocess.run(
        ["bash", "-c", SNIPPET], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    answer = json.loads(out.stdout)
    assert answer["result"] is True and answer["errors"] == [], answer
    task = client.wait(answer["taskid"])
    assert task["status"] == "task_postprocess_end" and task["pexit"] == "0", task
    assert [o["name"] for o in task["outputs"]] == ["0.png", "1.png", "2.png", "3.png"]
