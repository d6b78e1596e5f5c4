"""`engineready` is true only where this server has the tool's weights (always in offline
mode), and `enginenote` names what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toonforge.catalog.weights_plan import needed_weights
from toonforge.testing import in_process_app, settings_for_test

OWNER, SLUG = "futurist", "cartoonmix-v1-0"


def _detail(http: Any) -> dict[str, Any]:
    r = http.post("/v1/Tool/Detail", json={"slugowner": OWNER, "slugproject": SLUG})
    return dict(r.json()["tool"][0])


def test_engine_ready_follows_the_weights_on_this_host(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    settings = settings_for_test(tmp_path / "data", tiny=False, models_dir=models)
    with in_process_app(settings, dispatch_callbacks=False) as (http, services):
        tool = _detail(http)
        assert tool["engineready"] is False
        manifest = services.catalog.find(OWNER, SLUG)
        assert manifest is not None
        needs = needed_weights(manifest)
        files = [n.file.file for n in needs if n.file]
        assert files and all(name in tool["enginenote"] for name in files)
        assert str(models) not in tool["enginenote"]
        listed = http.post("/v1/Tool/List", json={"search": "cartoonmix"}).json()["tool"]
        assert [t["engineready"] for t in listed] == [False]

        # Put every file and repository where the server looks for it.
        for need in needs:
            if need.file:
                target = models / need.file.file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"weights")
            if need.repo:
                (models / need.repo).mkdir(parents=True, exist_ok=True)
                (models / need.repo / "model_index.json").write_text("{}")
        services.availability._cache.clear()  # the lookup is cached for a few seconds
        assert _detail(http)["engineready"] is True


def test_offline_mode_is_always_ready(tmp_path: Path) -> None:
    with in_process_app(settings_for_test(tmp_path / "data"), dispatch_callbacks=False) as (
        http,
        _services,
    ):
        assert _detail(http)["engineready"] is True
