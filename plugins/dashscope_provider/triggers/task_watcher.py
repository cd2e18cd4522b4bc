"""One watcher per DashScope account in the triggerer: every wait of the account shares its task-list polls.

A trigger that waits for a task registers the task id with the :class:`AccountWatcher` of its (base URL,
account) and awaits a future. One loop per account then, once a *round*:

1. lists the account's in-flight tasks, ``status=PENDING`` then ``status=RUNNING``, every page, in a 24 h
   window (``GET /api/v1/tasks/``, :func:`~dashscope_provider.hooks.task_list.list_query`). A task only moves
   forward, so read in that order an in-flight task is in one of the two lists;
2. reads a single task (``GET /api/v1/tasks/{id}``, with its own trigger's hook) only when it is *not* in
   them: it finished (its outputs and usage are read once), or the list does not show it (older than the
   list keeps, ``UNKNOWN``, a task store lagging its submit). A task the list keeps not showing is read
   again only every :data:`FALLBACK_FACTOR` poll intervals, so ``UNKNOWN`` is still believed only after
   ``unknown_confirmations`` answers.

Cost: a round is ``ceil(pending / 100) + 1`` list pages however many triggers wait, and a row one read. The
rounds follow the account's pace: a round comes about as often as the account has finished a task lately
(:meth:`AccountWatcher.round_gap`), so at the real pace (a task a minute or more, one at a time) a row
costs about one round, three queries; faster paces share a round among several rows. All calls of one
watcher go through its own pacer (:data:`WATCH_QPS`) and the account's shared limiter (429 answers hold
every caller of the account back).

Nothing here persists: a restarted triggerer re-creates the triggers, which register again. The watcher
object stays in :data:`_WATCHERS` (its pace, a few numbers) while its loop runs only while a task is watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dashscope_provider.exceptions import DashScopeAPIError, DashScopeError
from dashscope_provider.hooks.task_list import TASK_LIST_PAGE_SIZE, list_query
from dashscope_provider.models import TASK_LIST_MARGIN, TASK_LIST_MAX_WINDOW, DashScopeTask, TaskStatus
from dashscope_provider.rate_limit import AsyncRateLimiter

if TYPE_CHECKING:
    from dashscope_provider.hooks.dashscope_async import DashScopeAsyncHook

log = logging.getLogger(__name__)

#: Consecutive 401 answers after which the key is taken to be wrong (not a blip during a key rotation).
AUTH_FAILURES_BEFORE_ERROR = 3
#: Longest pause between polls while the service keeps failing.
MAX_ERROR_BACKOFF = 300.0
#: Requests per second one account's watcher sends at most (list pages and single reads): with 1,000
#: tasks pending, a round's 11 pages stay at most 2 in any second, far below the account's 20 QPS.
WATCH_QPS = 1.6
#: The longest pause between two rounds, however slow the account: a finished task is seen within it.
MAX_ROUND_GAP = 300.0
#: The shortest pause between two rounds (a trigger's ``poll_interval`` of 0 must not spin).
MIN_ROUND_GAP = 0.05
#: A task the list does not show is read directly at most every this many of its poll intervals.
FALLBACK_FACTOR = 4
#: Finishes remembered for the account's pace (the mean time between them).
PACE_SAMPLES = 16
#: A round comes every this many of the account's recent times per finished task: a round (2 pages) then
#: finds 1.5 tasks ended on average, so a row costs about 2.3 queries at the real pace (one task at a
#: time), and a finished task is seen within 1.5 tasks' time, less than the 3 tasks the documented
#: ``dashscope`` pool keeps queued behind the running one. A round of more pages (a long queue) comes
#: every ``pages / 2`` finishes instead: at most 2 pages per finished task, and a queue that long has
#: more tasks left in it than the round waits for.
PACE_FACTOR = 1.5
#: With this few tasks watched, a round reads each instead of listing: a listing costs at least two pages
#: (PENDING, RUNNING), so reading costs no more, and an ended task is seen at once (a lone wait, as in
#: ``dag.test()`` or a run's last rows).
FEW_TASKS = 2
#: The statuses a round lists, in this order: a task moves PENDING -> RUNNING -> ended, never back.
IN_FLIGHT = (TaskStatus.PENDING, TaskStatus.RUNNING)
#: A runaway guard: pages read for one status in one round.
MAX_PAGES = 200


@dataclass(frozen=True)
class WatchOutcome:
    """How a watched wait ended: the task in its final state, or an error that ends the wait (a refused key)."""

    task: DashScopeTask | None
    error: str | None = None


class WatcherFailed(DashScopeError):
    """The account's watcher loop ended unexpectedly: its waiters fall back to polling on their own."""


@dataclass(eq=False)
class _Watched:
    """One task id being watched: its waiters and what the watcher knows of it.

    ``next_read`` is None while the task list vouches for the task (or has not judged it yet), else the loop
    time at which to read it directly.
    """

    task_id: str
    hook: DashScopeAsyncHook
    poll_interval: float
    confirmations: int
    waiters: list[asyncio.Future[WatchOutcome]] = field(default_factory=list)
    last: DashScopeTask | None = None
    listed: bool = False
    next_read: float | None = None
    unknown_seen: int = 0
    auth_failures: int = 0
    errors: int = 0

    @property
    def fallback_gap(self) -> float:
        """Seconds between two direct reads of this task while the list does not show it."""
        return max(self.poll_interval, MIN_ROUND_GAP) * FALLBACK_FACTOR

    def resolve(self, outcome: WatchOutcome) -> None:
        """End every waiter of this task (a waiter already cancelled is left alone)."""
        for future in self.waiters:
            if not future.done():
                future.set_result(outcome)
        self.waiters.clear()


@dataclass(frozen=True)
class Watch:
    """A trigger's registration: the future its wait ends with, and the last state the watcher saw."""

    outcome: asyncio.Future[WatchOutcome]
    _entry: _Watched

    @property
    def last_seen(self) -> DashScopeTask | None:
        """The task's last status seen in the list or read (None before the first round)."""
        return self._entry.last


class AccountWatcher:
    """Watches every registered task of one (base URL, account) from one asyncio loop; see the module.

    :param key: (base URL, account), as :meth:`DashScopeAsyncHook.account_key` gives it.
    :param loop: the event loop it runs in (the triggerer's).
    """

    def __init__(self, key: tuple[str, str], loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self._watched: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self._pacer = AsyncRateLimiter(WATCH_QPS)
        self._finishes: deque[float] = deque(maxlen=PACE_SAMPLES)
        self._started = loop.time()
        self._next_round = 0.0
        self._list_errors = 0
        self._hook_turn = 0
        self._pages_per_round = 2
        #: What this watcher sent so far (rounds, list pages, single reads): for logs, tests and benchmarks.
        self.rounds = self.pages = self.reads = 0

    @property
    def running(self) -> bool:
        """Whether its loop is running (it stops when no task is watched; a loop being cancelled is not)."""
        return self._task is not None and not self._task.done() and not self._task.cancelling()

    @property
    def watched(self) -> int:
        """How many task ids are watched."""
        return len(self._watched)

    @property
    def lists(self) -> bool:
        """Whether a round lists the account's tasks; with :data:`FEW_TASKS` or fewer watched it reads each."""
        return len(self._watched) > FEW_TASKS

    @contextlib.asynccontextmanager
    async def watch(
        self, task_id: str, hook: DashScopeAsyncHook, poll_interval: float, confirmations: int
    ) -> AsyncIterator[Watch]:
        """Register ``task_id`` for the block; its :attr:`Watch.outcome` resolves when the task ends.

        Leaving the block (the wait ended, timed out or was cancelled) unregisters it; the loop stops with
        the last registration.
        """
        future: asyncio.Future[WatchOutcome] = self.loop.create_future()
        entry = self._watched.get(task_id)
        if entry is None or not entry.waiters:  # none, or one already ended whose trigger is still leaving
            entry = self._watched[task_id] = _Watched(task_id, hook, float(poll_interval), confirmations)
        entry.poll_interval = min(entry.poll_interval, float(poll_interval))
        entry.confirmations = max(entry.confirmations, confirmations)
        entry.waiters.append(future)
        self._start()
        try:
            yield Watch(future, entry)
        finally:
            self._unregister(entry, future)

    def _start(self) -> None:
        if self.running:
            return
        self._started = self.loop.time()
        # A fresh watcher looks soon (a restarted triggerer's tasks may have ended); a known pace says when
        # a task of this account is likely to have ended (the one just registered was just submitted).
        first = min(self._base_gap(), 1.0) if len(self._finishes) < 2 else self.round_gap()
        self._next_round = self._started + first
        self._task = self.loop.create_task(self._run(), name=f"dashscope-watcher-{self.key[1]}")
        self._task.add_done_callback(self._ended)

    def _unregister(self, entry: _Watched, future: asyncio.Future[WatchOutcome]) -> None:
        if future in entry.waiters:
            entry.waiters.remove(future)
        if not future.done():
            future.cancel()
        if not entry.waiters and self._watched.get(entry.task_id) is entry:
            del self._watched[entry.task_id]
        if not self._watched and self._task is not None and self.running:
            self._task.cancel()

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The loop ended: if by a bug rather than by having nothing to watch, its waiters fall back."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("DashScope watcher of account %s failed (%r); its waits poll on their own", self.key[1], error)
        for entry in self._watched.values():
            for future in entry.waiters:
                if not future.done():
                    future.set_exception(WatcherFailed(f"the account's watcher failed: {error!r}"))

    # -- pace -------------------------------------------------------------------------------------

    def _base_gap(self) -> float:
        return max(min((e.poll_interval for e in self._watched.values()), default=15.0), MIN_ROUND_GAP)

    def round_gap(self) -> float:
        """Seconds until the next round: :data:`PACE_FACTOR` times the account's recent time per finished
        task, or the time since a task last finished when that is longer (a dry spell: the gap doubles
        round after round), within the shortest ``poll_interval`` watched and :data:`MAX_ROUND_GAP`.

        So a round finds about 1.5 finished tasks at the real pace (``pages / 2`` when a long queue makes
        the round longer than 3 pages), and many at a faster one.
        """
        now = self.loop.time()
        pace = 0.0
        if len(self._finishes) >= 2:
            per_finish = (self._finishes[-1] - self._finishes[0]) / (len(self._finishes) - 1)
            pace = max(PACE_FACTOR, self._pages_per_round / 2) * per_finish
        since = now - max(self._finishes[-1] if self._finishes else self._started, self._started)
        base = self._base_gap()
        return min(max(pace, since, base), max(MAX_ROUND_GAP, base))

    # -- the loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while self._watched:
            reads = [e.next_read for e in self._watched.values() if e.next_read is not None]
            await asyncio.sleep(max(0.0, min([self._next_round, *reads]) - self.loop.time()))
            if self.loop.time() >= self._next_round:
                await self._round()
            await self._read_due()

    async def _round(self) -> None:
        """List the in-flight tasks; each watched task the lists do not show becomes due for a direct read."""
        self.rounds += 1
        if not self.lists:
            self._read_instead()
            return
        judged = list(self._watched.values())  # registered before the lists were read
        hook = self._list_hook(judged)
        pages_before = self.pages
        try:
            in_flight = await self._in_flight(hook)
        except DashScopeError as error:
            self._list_failed(judged, hook, error)
            return
        self._list_errors = 0
        self._pages_per_round = self.pages - pages_before
        now = self.loop.time()
        for entry in judged:
            status = in_flight.get(entry.task_id)
            if status is not None:
                entry.last = DashScopeTask(entry.task_id, status)
                entry.listed, entry.next_read, entry.errors = True, None, 0
                if entry.hook.dashscope_conn_id == hook.dashscope_conn_id:
                    entry.auth_failures = 0
            elif entry.listed or entry.next_read is None:
                # It left the in-flight lists (it ended), or the list has never shown it: read it now.
                entry.listed, entry.next_read = False, now
        self._next_round = now + self.round_gap()

    def _read_instead(self) -> None:
        """A round of :data:`FEW_TASKS` or fewer: each watched task read directly, every ``poll_interval``."""
        now = self.loop.time()
        for entry in self._watched.values():
            entry.next_read = now
        self._next_round = now + self._base_gap()

    def _list_hook(self, entries: list[_Watched]) -> DashScopeAsyncHook:
        """Any watched task's hook can list the account's tasks; after a failed list, try the next one's."""
        hooks = list({e.hook.dashscope_conn_id: e.hook for e in entries}.values())
        return hooks[self._hook_turn % len(hooks)]

    async def _in_flight(self, hook: DashScopeAsyncHook) -> dict[str, TaskStatus | str]:
        """task id -> status of every PENDING and RUNNING task of the account created in the last 24 h."""
        end = datetime.now(UTC)
        start = end - (TASK_LIST_MAX_WINDOW - 2 * TASK_LIST_MARGIN)  # widened by the margin to 24 h
        found: dict[str, TaskStatus | str] = {}
        for status in IN_FLIGHT:
            query = list_query(start, end, None, status)
            for page_no in range(1, MAX_PAGES + 1):
                await self._pacer.acquire()
                self.pages += 1
                page = await hook.list_task_page(
                    {**query, "page_no": str(page_no), "page_size": str(TASK_LIST_PAGE_SIZE)}
                )
                for listed in page.tasks:
                    found[listed.task_id] = listed.status
                    if (entry := self._watched.get(listed.task_id)) is not None:  # fresh for a timeout's event
                        entry.last = DashScopeTask(listed.task_id, listed.status)
                if not page.tasks or page_no >= page.total_page:
                    break
        return found

    def _list_failed(self, judged: list[_Watched], hook: DashScopeAsyncHook, error: DashScopeError) -> None:
        """The lists could not be read: back off, and read the watched tasks directly at their slow pace."""
        self._list_errors += 1
        self._hook_turn += 1
        now = self.loop.time()
        log.warning("Listing the tasks of DashScope account %s failed (%s); will try again", self.key[1], error)
        refused = isinstance(error, DashScopeAPIError) and error.status_code == 401
        for entry in judged:
            if refused and entry.hook.dashscope_conn_id == hook.dashscope_conn_id:  # this key was refused
                self._count_auth_failure(entry, error)  # type: ignore[arg-type]
            if entry.next_read is None and entry.waiters:
                entry.next_read = now + entry.fallback_gap
        base = self._base_gap()
        self._next_round = now + min(base * 2 ** (self._list_errors - 1), max(base, MAX_ERROR_BACKOFF))

    def _count_auth_failure(self, entry: _Watched, error: DashScopeAPIError) -> None:
        entry.auth_failures += 1
        if entry.auth_failures >= AUTH_FAILURES_BEFORE_ERROR:
            entry.resolve(WatchOutcome(entry.last, str(error)))

    async def _read_due(self) -> None:
        """Read every watched task whose direct read is due, one request each, through the pacer."""
        now = self.loop.time()
        due = [e for e in self._watched.values() if e.next_read is not None and e.next_read <= now]
        await asyncio.gather(*(self._read(entry) for entry in due))

    async def _read(self, entry: _Watched) -> None:
        """One direct read of a task; a final answer ends its waiters, anything else reschedules it."""
        await self._pacer.acquire()
        if not entry.waiters:  # unregistered while waiting for its slot
            return
        self.reads += 1
        entry.next_read = self.loop.time() + entry.fallback_gap
        try:
            task = await entry.hook.get_task(entry.task_id)
        except DashScopeAPIError as error:
            self._read_failed(entry, error)
            if error.status_code == 401:
                self._count_auth_failure(entry, error)
            return
        except DashScopeError as error:  # transport failures that outlasted the hook's own retries
            self._read_failed(entry, error)
            return
        entry.last, entry.errors, entry.auth_failures = task, 0, 0
        entry.unknown_seen = entry.unknown_seen + 1 if task.status == TaskStatus.UNKNOWN else 0
        if task.is_terminal and (task.status != TaskStatus.UNKNOWN or entry.unknown_seen >= entry.confirmations):
            if task.status != TaskStatus.UNKNOWN:
                self._finishes.append(self.loop.time())
            entry.resolve(WatchOutcome(task))
        elif not task.is_terminal and self.lists:  # read instead of a listing, a running task is expected
            log.info("DashScope task %s is %s but not in the account's task list", task.task_id, task.status)

    def _read_failed(self, entry: _Watched, error: DashScopeError) -> None:
        entry.errors += 1
        backoff = entry.fallback_gap * 2 ** (entry.errors - 1)
        entry.next_read = self.loop.time() + min(backoff, max(entry.fallback_gap, MAX_ERROR_BACKOFF))
        log.warning("Reading DashScope task %s failed (%s); will try again", entry.task_id, error)


#: The watchers of this process, by (base URL, account): shared by every trigger of that account.
_WATCHERS: dict[tuple[str, str], AccountWatcher] = {}


def watcher_for(key: tuple[str, str]) -> AccountWatcher:
    """The watcher of one (base URL, account) in the running event loop; created on first use.

    A watcher belongs to one event loop (the triggerer has one; tests start several): one made in another
    loop, finished or not, is replaced.
    """
    loop = asyncio.get_running_loop()
    watcher = _WATCHERS.get(key)
    if watcher is None or watcher.loop is not loop:
        watcher = _WATCHERS[key] = AccountWatcher(key, loop)
    return watcher


def watchers() -> Iterable[AccountWatcher]:
    """Every watcher of this process (for tests and benchmarks)."""
    return list(_WATCHERS.values())
