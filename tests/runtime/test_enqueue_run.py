"""Enqueue → run → result, with every producer: before the runtime starts (a direct
producer), inside it, from a plain thread (``enqueue_sync``), and in bulk
(``enqueue_many``). Payloads are validated before anything is stored; unknown options
say "did you mean"."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.to_thread
import msgspec
import pytest
from rt_support import Doubled, Inner, Item, Nested, Other, counts

import rota
from rota.app import App, Context
from rota.domain.event import EventKind
from rota.domain.job import JobState
from rota.errors import ConfigError, PayloadError

pytestmark = pytest.mark.anyio


async def test_result_is_decoded_from_the_return_annotation(
    make_app: Callable[..., App],
) -> None:
    app = make_app()

    @app.job(queue="q")
    async def double(args: Item) -> Doubled:
        return Doubled(value=args.n * 2, label=args.label.upper())

    @app.job(queue="q")
    async def listing(args: Item) -> list[int]:
        return list(range(args.n))

    @app.job(queue="q")
    async def nothing(args: Item) -> None:
        return None

    h_double = await double.enqueue(Item(21, label="x"))
    h_list = await listing.enqueue(Item(3))
    h_none = await nothing.enqueue(Item(0))
    async with app.run():
        with anyio.fail_after(10):
            result = await h_double.result()
            assert result == Doubled(value=42, label="X")
            assert type(result) is Doubled  # a Struct again, not a dict
            assert await h_list.result() == [0, 1, 2]
            await h_none.result()
            assert await app.handle(h_none.id).result() is None
            assert (await h_none.info()).result is None  # nothing stored for None
    job = await h_double.info()
    assert job.state is JobState.COMPLETED
    assert job.attempt == 1
    assert msgspec.json.decode(job.result or b"") == {"value": 42, "label": "X"}
    # A handle made from the id alone decodes plain JSON.
    assert await app.handle(h_double.id).result(timeout=5) == {"value": 42, "label": "X"}


async def test_enqueue_before_and_during_the_runtime(make_app: Callable[..., App]) -> None:
    app = make_app()
    ran: list[int] = []

    @app.job(queue="q")
    async def record(args: Item) -> int:
        ran.append(args.n)
        return args.n + 1000

    # Before the runtime: a direct producer commits on a connection of its own.
    before = await record.enqueue(Item(1))
    assert await before.status() is JobState.WAITING
    assert ran == []
    async with app.run():
        with anyio.fail_after(10):
            assert await before.result() == 1001
            during = await record.enqueue(Item(2))  # through the runtime's Store
            assert await during.result() == 1002
    assert sorted(ran) == [1, 2]
    assert await counts(app, "q") == {"completed": 2}


async def test_enqueue_sync_from_a_plain_thread_while_the_runtime_runs(
    make_app: Callable[..., App],
) -> None:
    app = make_app()

    @app.job(queue="q")
    async def triple(args: Item) -> int:
        return args.n * 3

    async with app.run():
        with anyio.fail_after(10):
            # No event loop in that thread: the sync producer commits directly and the
            # runtime notices another connection's commit (data_version polling).
            handle = await anyio.to_thread.run_sync(lambda: triple.enqueue_sync(Item(5)))
            assert await handle.result() == 15
            handles = await anyio.to_thread.run_sync(
                lambda: triple.enqueue_many_sync([Item(1), Item(2)])
            )
            assert [await h.result() for h in handles] == [3, 6]
    assert (await handle.info()).attempt == 1


async def test_enqueue_many_stores_all_in_one_transaction_and_runs_all(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    ran: list[int] = []

    @app.job(queue="q")
    async def record(args: Item) -> int:
        ran.append(args.n)
        return args.n

    before = await record.enqueue_many([Item(i) for i in range(50)])
    ids = [h.id for h in before]
    assert len(set(ids)) == 50
    assert ids == list(range(ids[0], ids[0] + 50))  # in order, contiguous
    # One transaction: the 50 ENQUEUED events carry one commit time.
    engine = app.engine()
    try:
        enqueued = [e for e in engine.events(0) if e.kind is EventKind.ENQUEUED]
    finally:
        engine.close()
    assert [e.job_id for e in enqueued] == ids
    assert len({e.at_ms for e in enqueued}) == 1

    async with app.run():
        with anyio.fail_after(10):
            during = await record.enqueue_many([Item(i) for i in range(50, 80)])
            assert len({h.id for h in during}) == 30
            results = [await h.result() for h in [*before, *during]]
    assert results == list(range(80))
    assert sorted(ran) == list(range(80))
    assert await counts(app, "q") == {"completed": 80}


async def test_enqueue_many_validates_every_payload_before_storing_any(
    make_app: Callable[..., App],
) -> None:
    app = make_app()

    @app.job(queue="q")
    async def record(args: Item) -> None:
        return None

    bad = [Item(1), Item(2), {"n": "three"}]
    with pytest.raises(PayloadError) as caught:
        await record.enqueue_many(bad)
    assert caught.value.field == "n"
    assert await counts(app, "q") == {}


async def test_enqueue_with_a_key_is_idempotent(make_app: Callable[..., App]) -> None:
    app = make_app()
    ran: list[int] = []

    @app.job(queue="q")
    async def record(args: Item) -> int:
        ran.append(args.n)
        return args.n

    first = await record.enqueue(Item(1), job_id="order-42")
    again = await record.enqueue(Item(2), key="order-42")  # the same key: the same job
    other = await record.enqueue(Item(3), key="order-43")
    assert again.id == first.id != other.id
    async with app.run():
        with anyio.fail_after(10):
            assert await first.result() == 1
            assert await other.result() == 3
            # a key of a finished job still names it
            late = await record.enqueue(Item(4), key="order-42")
            assert late.id == first.id
    assert sorted(ran) == [1, 3]
    assert await counts(app, "q") == {"completed": 2}


# -- payload validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        pytest.param(
            Nested(n="x", inner=Inner(1)),  # type: ignore[arg-type]
            "n",
            "Expected `int`, got `str`",
            id="wrong-field-type",
        ),
        pytest.param({"n": "x"}, "n", "Expected `int`, got `str`", id="dict-wrong-field-type"),
        pytest.param({"n": 1, "inner": {"x": "y"}}, "inner.x", "got `str`", id="dict-nested-field"),
        pytest.param(Other("hi"), None, "takes a Nested, got Other", id="wrong-type"),
        pytest.param(5, None, "takes a Nested, got int", id="not-a-struct"),
    ],
)
async def test_bad_payload_raises_payload_error_naming_the_field_and_stores_nothing(
    make_app: Callable[..., App], payload: object, field: str | None, words: str
) -> None:
    app = make_app()

    @app.job(queue="q")
    async def nested(args: Nested) -> None:
        return None

    with pytest.raises(PayloadError) as caught:
        await nested.enqueue(payload)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert "nested" in str(caught.value)  # the job's name
    with pytest.raises(PayloadError):
        nested.enqueue_sync(payload)
    assert await counts(app, "q") == {}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"inner": {"x": 1}}, "n", id="top-level"),
        pytest.param({"n": 1, "inner": {}}, "inner.x", id="nested"),
    ],
)
async def test_missing_required_field_is_named_in_payload_error(
    make_app: Callable[..., App], payload: dict[str, object], field: str
) -> None:
    app = make_app()

    @app.job(queue="q")
    async def nested(args: Nested) -> None:
        return None

    with pytest.raises(PayloadError) as caught:
        await nested.enqueue(payload)
    assert await counts(app, "q") == {}
    assert caught.value.field == field


async def test_unknown_enqueue_option_says_did_you_mean(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(queue="q")
    async def record(args: Item) -> None:
        return None

    with pytest.raises(ConfigError, match=r"unknown option 'priorty'.*did you mean 'priority'"):
        await record.enqueue(Item(1), priorty=1)
    with pytest.raises(ConfigError, match="did you mean 'delay'"):
        record.enqueue_sync(Item(1), dealy=1)
    with pytest.raises(ConfigError, match="delay_s or run_at_ms, not both"):
        await record.enqueue(Item(1), delay=1, run_at=10**13)
    with pytest.raises(ConfigError, match="'max_attempts': must be between 1 and"):
        await record.enqueue(Item(1), max_attempts=0)
    assert await counts(app, "q") == {}


async def test_enqueue_option_of_the_wrong_type_is_a_config_error(
    make_app: Callable[..., App],
) -> None:
    app = make_app()

    @app.job(queue="q")
    async def record(args: Item) -> None:
        return None

    with pytest.raises(ConfigError):
        await record.enqueue(Item(1), priority="high")
    assert await counts(app, "q") == {}


def test_unknown_app_option_says_did_you_mean() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown option 'concurency'.*did you mean 'concurrency'"
    ):
        App(":memory:", concurency=3)
    with pytest.raises(ConfigError, match="did you mean 'lease_ttl_s'"):
        App(":memory:", lease_ttl=3)
    with pytest.raises(ConfigError, match="concurrency"):
        App(":memory:", concurrency=0)


# -- plugins -----------------------------------------------------------------------------------


def make_plugin() -> tuple[rota.Registry, Callable[[], list[str]]]:
    """A "plugin" module in miniature: its own Registry and jobs, no App in sight."""
    registry = rota.Registry()
    sent: list[str] = []

    @registry.job(queue="mail", max_attempts=2, backoff=rota.fixed(0))
    async def send_mail(args: Other, ctx: Context) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("smtp down")  # the plugin's own retry policy applies
        sent.append(args.text)
        return f"sent {args.text}"

    return registry, lambda: sent


async def test_plugin_registry_included_into_an_app_runs_its_jobs(
    make_app: Callable[..., App],
) -> None:
    registry, sent = make_plugin()
    [definition] = registry.jobs.values()
    with pytest.raises(ConfigError, match="not yet included"):
        await definition.enqueue(Other("early"))

    app = make_app()

    @app.job(queue="q")
    async def own(args: Item) -> int:
        return args.n

    app.include(registry)
    assert app.queues == ["mail", "q"]
    handle = await definition.enqueue(Other("hello"))
    own_handle = await own.enqueue(Item(7))
    async with app.run():
        with anyio.fail_after(10):
            assert await handle.result() == "sent hello"
            assert await own_handle.result() == 7
    assert sent() == ["hello"]
    job = await handle.info()
    assert (job.queue, job.attempt) == ("mail", 2)


async def test_an_error_in_the_run_block_comes_out_as_itself(
    make_app: Callable[..., App],
) -> None:
    app = make_app()

    @app.job(queue="q")
    async def record(args: Item) -> None:
        return None

    with pytest.raises(KeyError, match="from the body"):
        async with app.run():
            raise KeyError("from the body")


async def test_an_enqueue_to_an_idle_local_pool_claims_in_its_own_transaction(
    make_app: Callable[..., App],
) -> None:
    app = make_app(concurrency=4)
    started = anyio.Event()
    release = anyio.Event()

    @app.job(queue="q")
    async def record(args: Item) -> int:
        started.set()
        await release.wait()
        return args.n

    async with app.run() as runtime:
        with anyio.fail_after(10):
            await runtime.wait_for_commit(1.0)  # let the pool's first (empty) claim pass
            for _ in range(50):
                if runtime.pools["q"].actor.statistics().store_calls:  # type: ignore[union-attr]
                    break
                await anyio.sleep(0.01)
            store = runtime.store_ref.actor
            assert store is not None
            before = store.statistics().transactions
            handle = await record.enqueue(Item(7))
            # Committed as claimed by this runtime: active under its owner, attempt 1,
            # in the transaction of the enqueue itself (one commit, not two).
            job = await handle.info()
            assert job.state is JobState.ACTIVE
            assert job.owner == runtime.owner.id
            assert job.attempt == 1
            await started.wait()
            assert store.statistics().transactions - before <= 2  # the enqueue + the info read
            release.set()
            assert await handle.result() == 7
    assert await counts(app, "q") == {"completed": 1}


async def test_a_direct_claim_honours_the_queue_order_and_the_concurrency(
    make_app: Callable[..., App],
) -> None:
    app = make_app(concurrency=2)
    order: list[int] = []
    release = anyio.Event()
    two_started = anyio.Event()

    @app.job(queue="q")
    async def record(args: Item) -> int:
        order.append(args.n)
        if len(order) == 2:
            two_started.set()
        await release.wait()
        return args.n

    # Waiting before the runtime starts, at a better priority than what comes later.
    early = await record.enqueue(Item(1), priority=0)
    async with app.run():
        with anyio.fail_after(10):
            handles = [await record.enqueue(Item(n), priority=5) for n in (2, 3, 4)]
            await two_started.wait()
            await anyio.sleep(0.05)
            assert order == [1, 2]  # two slots: the older, more urgent job first; no more
            release.set()
            assert [await h.result() for h in [early, *handles]] == [1, 2, 3, 4]
    assert order == [1, 2, 3, 4]


async def test_a_paused_queue_gets_no_direct_claim(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(queue="q")
    async def record(args: Item) -> int:
        return args.n

    async with app.run():
        with anyio.fail_after(10):
            await app.queue("q").pause()
            handle = await record.enqueue(Item(1))
            await anyio.sleep(0.05)
            assert await handle.status() is JobState.WAITING
            await app.queue("q").resume()
            assert await handle.result() == 1
