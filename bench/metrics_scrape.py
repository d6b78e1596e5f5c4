"""What a /metrics scrape costs in the database as the tasks table grows.

A fresh PostgreSQL database (TOONFORGE_TEST_POSTGRES_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres, dropped at the end) is filled with
N finished tasks (inserted in bulk with generate_series) plus a few queued and running ones,
and the aggregate table as task ends would have left it; then the database part of a scrape
(ops/db_collector.py, what every scrape runs) is timed, median of `--repeat` runs, for each
size. The figure should not grow with N.

    python bench/metrics_scrape.py [--sizes 10000,1000000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from toonforge.ops.db_collector import DatabaseCollector
from toonforge.services import build_services
from toonforge.testing import fresh_postgres_database, settings_for_test

ADMIN_URL = os.environ.get(
    "TOONFORGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

FILL = """
INSERT INTO tasks (uuid, socket_token, project_id, tool_key, model_id, status, parameters,
    debugoutput, debugerror, pexit, cps, totalcost, callback_url, createtime, accepttime,
    starttime, endtime, postprocessendtime, attempts, kill_requested, files_deleted)
SELECT md5(g::text || :salt), md5('t' || g::text || :salt), :project,
    (ARRAY['futurist/CartoonMix v1.0', 'wiro/animate-diff', 'retroAIx/Retro-Cartoons'])[1 + g % 3],
    '1', :status, '{}'::json, '', '', :pexit, '0.001', '0', '', 0, 1, 2, 3, 4, 1, false, false
FROM generate_series(1, :n) AS g
"""


def scrape_seconds(collector: DatabaseCollector, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        families = list(collector.collect())
        times.append(time.perf_counter() - started)
        assert families[0].samples[0].value == 1  # the database answered
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp, fresh_postgres_database(ADMIN_URL) as url:
        services = build_services(settings_for_test(Path(tmp) / "data", url))
        try:
            with services.sessions() as session:
                session.execute(
                    text(
                        "INSERT INTO projects (name, api_key, api_secret, auth_mode, "
                        "allowed_ips, max_running_tasks, webhook_secret, active, created_at) "
                        "VALUES ('bench', 'k', 's', 'key', '*', 0, 'w', true, 0)"
                    )
                )
                project = session.scalar(text("SELECT max(id) FROM projects"))
                session.commit()
            collector = DatabaseCollector(services)
            have = 0
            print(f"{'finished tasks':>15} {'scrape (database part)':>24}")
            for size in sizes:
                with services.sessions() as session:
                    for status, pexit, n in (
                        ("task_postprocess_end", "0", size - have),
                        ("task_queue", "", 50),
                        ("task_start", "", 5),
                    ):
                        session.execute(
                            text(FILL),
                            {
                                "salt": f"{size}{status}",
                                "project": project,
                                "status": status,
                                "pexit": pexit,
                                "n": n,
                            },
                        )
                    session.commit()
                autocommit = services.db.execution_options(isolation_level="AUTOCOMMIT")
                with autocommit.connect() as conn:
                    conn.execute(text("VACUUM ANALYZE tasks"))  # as autovacuum would
                have = size
                seconds = scrape_seconds(collector, args.repeat)
                print(f"{size:>15,} {seconds * 1000:>21.2f} ms")
        finally:
            services.close()


if __name__ == "__main__":
    main()
