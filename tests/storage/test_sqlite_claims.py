"""SqliteEngine, what no other engine shares: the query plans of the hot statements, and
how values are stored (BLOBs, whichever insert path a batch takes). The behaviour these
operations promise is tested for every engine in ``contract/``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rota.domain.job import NewJob
from rota.storage import schema as sql
from rota.storage.engine import Completion
from rota.storage.sqlite import SqliteEngine

MakeJob = Callable[..., NewJob]


@pytest.mark.parametrize(
    ("statement", "params", "index"),
    [
        (sql.CLAIM_JOBS, ("w", 1, "q", 10), "rota_jobs_ready"),
        (sql.PROMOTE_DUE_IN_QUEUE, ("q", 1), "rota_jobs_due_in_queue"),
        (sql.PROMOTE_DUE, (1,), "rota_jobs_due"),
        (sql.SELECT_EXPIRED, (1,), "rota_jobs_leases"),
        (sql.SELECT_OWNED, ("w",), "rota_jobs_leases"),
        (sql.SELECT_JOB_BY_KEY, ("k",), "rota_jobs_key"),
        (sql.COMPLETE_JOB, (1, None, 1, 1), "INTEGER PRIMARY KEY"),
        (sql.RENEW_LEASES, (1, "[[1, 2]]"), "INTEGER PRIMARY KEY"),
        (sql.COUNT_JOBS_IN_QUEUE, ("q",), "rota_jobs_finished"),
        # the events of the hot paths: read back the rows just written, by primary key
        (sql.INSERT_JOB_EVENTS, (1, "active", "[1, 2]"), "INTEGER PRIMARY KEY (rowid=?)"),
        (sql.INSERT_ENQUEUED_EVENTS, (1, 1, 100), "INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
        (sql.SET_PROGRESS, (b"{}", 1, 1), "INTEGER PRIMARY KEY"),
        (sql.INSERT_LOG, (1, "m", 1, 1), "INTEGER PRIMARY KEY"),
    ],
)
def test_hot_statements_use_their_index_and_never_scan_or_sort(
    engine: SqliteEngine,
    make_job: MakeJob,
    statement: str,
    params: tuple[object, ...],
    index: str,
) -> None:
    engine.enqueue([make_job(queue="q", priority=i % 3) for i in range(200)])
    plan = engine._conn.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    details = [str(row[3]) for row in plan]
    assert any(index in d for d in details), details
    assert not any(d.startswith("SCAN rota_jobs") and "INDEX" not in d for d in details), details
    if statement is not sql.COUNT_JOBS_IN_QUEUE:  # GROUP BY state of finished jobs: small
        assert not any("TEMP B-TREE" in d for d in details), details


def test_claim_subquery_searches_the_ready_index_in_its_order(engine: SqliteEngine) -> None:
    plan = engine._conn.execute(
        f"EXPLAIN QUERY PLAN {sql.CLAIM_JOBS}", ("w", 1, "q", 10)
    ).fetchall()
    details = [str(row[3]) for row in plan]
    assert "SEARCH rota_jobs USING INDEX rota_jobs_ready (queue=?)" in details
    assert not any("TEMP B-TREE" in d or d == "SCAN rota_jobs" for d in details)
    # the pause guard: one primary-key seek, as a scalar subquery (evaluated once, not per
    # row: it does not depend on the row)
    assert "SEARCH rota_queues USING PRIMARY KEY (name=?)" in details
    assert not any("CORRELATED" in d for d in details)


@pytest.mark.parametrize(
    ("statement", "params", "expected"),
    [
        (sql.SELECT_EVENTS, (0, 10), ["SEARCH rota_events USING INTEGER PRIMARY KEY (rowid>?)"]),
        (sql.SELECT_EVENTS_IN_QUEUE, (0, "q", 10),
         ["SEARCH rota_events USING INTEGER PRIMARY KEY (rowid>?)"]),
        (sql.PRUNE_EVENTS, (1,), ["SEARCH rota_events USING INTEGER PRIMARY KEY (rowid<?)"]),
        (sql.SELECT_LOGS, (1, 10, 0), ["SEARCH rota_logs USING INDEX rota_logs_job (job_id=?)"]),
        (sql.PURGE_QUEUE, ("q",), [
            "SEARCH rota_jobs USING INDEX rota_jobs_ready (queue=?)",
            "SEARCH rota_jobs USING INDEX rota_jobs_due_in_queue (queue=?)",
            "SEARCH rota_logs USING COVERING INDEX rota_logs_job (job_id=?)",  # the cascade
        ]),
        (sql.REMOVE_JOB, (1,), [
            "SEARCH rota_jobs USING INTEGER PRIMARY KEY (rowid=?)",
            "SEARCH rota_logs USING COVERING INDEX rota_logs_job (job_id=?)",
        ]),
        (sql.PROMOTE_JOB, (1, 1), ["SEARCH rota_jobs USING INTEGER PRIMARY KEY (rowid=?)"]),
        (sql.COMPLETE_JOBS, (1, "[[1, 2, null]]"),
         ["SCAN c VIRTUAL TABLE INDEX 1:",  # the json_each batch, once
          "SEARCH rota_jobs USING INTEGER PRIMARY KEY (rowid=?)"]),
    ],
)  # fmt: skip
def test_statements_of_schema_2_seek_and_never_sort(
    engine: SqliteEngine, statement: str, params: tuple[object, ...], expected: list[str]
) -> None:
    plan = engine._conn.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    details = [str(row[3]) for row in plan]
    for detail in expected:
        assert detail in details, details
    assert not any("TEMP B-TREE" in d for d in details), details
    # PRUNE_EVENTS' subquery walks the id order up to the first event at the cutoff
    scans = [d for d in details if d.startswith("SCAN") and "VIRTUAL TABLE" not in d]
    assert scans == (["SCAN rota_events"] if statement is sql.PRUNE_EVENTS else []), details


# --- how values are stored ------------------------------------------------------------


@pytest.mark.parametrize(
    "results",
    [
        [None, b'{"a": [1, 2.5e100, "\\u00e9\\n\\"q\\""]}', "é ✓ 😀".encode(), b"", b"null"],
        [b"\xff\xfe not UTF-8", b"1"],  # not JSON text: the per-row path, same outcome
    ],
)
def test_settled_completions_store_each_result_as_a_blob(
    engine: SqliteEngine, make_job: MakeJob, results: list[bytes | None]
) -> None:
    engine.enqueue([make_job() for _ in results])
    jobs = engine.claim("default", "w", len(results), 1000)
    completions = [Completion(j.id, j.token or 0, r) for j, r in zip(jobs, results, strict=True)]
    assert engine.settle_and_claim(completions, [], None).lost == []
    kinds = engine._conn.execute(
        "SELECT DISTINCT typeof(result) FROM rota_jobs WHERE result IS NOT NULL"
    ).fetchall()
    assert kinds == [("blob",)]


def test_a_mixed_enqueue_batch_stores_every_payload_as_a_blob_whichever_insert_path_it_takes(
    engine: SqliteEngine, make_job: MakeJob
) -> None:
    # Runs of one job type (>= 8 rows) take the one-statement insert, the rest executemany
    # (that every job is stored exactly is the contract's test of the same batch).
    jobs = [
        *[make_job(b'{"i": %d, "s": "\\u00e9"}' % i) for i in range(10)],  # one statement
        make_job(b"\xff not UTF-8"),
        *[make_job(b"%d" % i, name="other", priority=i % 2) for i in range(9)],  # mixed
        *[make_job(b"k%d" % i, key=f"key-{i}") for i in range(3)],
        *[make_job(b"late", delay_s=5, timeout_s=2.5) for _ in range(8)],  # one statement
        *[make_job("é ✓".encode()) for _ in range(8)],
    ]
    assert len(engine.enqueue(jobs)) == len(jobs)
    kinds = engine._conn.execute("SELECT DISTINCT typeof(payload) FROM rota_jobs").fetchall()
    assert kinds == [("blob",)]
