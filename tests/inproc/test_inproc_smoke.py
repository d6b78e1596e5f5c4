"""The in-process tier itself: the app answers on TestClient with a signed client."""

from __future__ import annotations

from toonforge.testing import InProcess


def test_detail_of_missing_task_is_not_found(inproc: InProcess) -> None:
    r = inproc.client.post("/v1/Task/Detail", {"taskid": "12345"})
    assert r.status_code == 200
    assert r.json() == {
        "result": False,
        "errors": [{"code": 1, "message": "There is no task yet."}],
    }
