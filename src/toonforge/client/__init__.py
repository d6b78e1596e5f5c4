"""A Python client for toonforge (and anything speaking the same task API): signed calls,
runs that wait for their outputs on the WebSocket, downloads.

    from toonforge.client import Client

    with Client("http://127.0.0.1:8000/v1", API_KEY, API_SECRET) as tf:
        task = tf.run("futurist/CartoonMix v1.0", {"prompt": "a cat", "samples": 2})
        print(task.status, tf.download(task, "out"))

Imports httpx and websockets only: nothing of the server.
"""

from __future__ import annotations

from toonforge.client.async_ import AsyncClient
from toonforge.client.errors import ApiError, AuthenticationError, TaskTimeout, ToonforgeError
from toonforge.client.records import Event, Output, Task, TaskList
from toonforge.client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "Event",
    "Output",
    "Task",
    "TaskList",
    "TaskTimeout",
    "ToonforgeError",
]
