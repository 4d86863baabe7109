"""Move buckets into one push transaction and commit it: the engine of push
mode, reused by pull mode to deliver staged data to an accelerated target.

Where the bytes come from is the caller's business (a :class:`BucketReader`):
the source server (push mode) or the staging area (pull mode).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Awaitable, Callable, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from gui.client.errors import OrthancError
from gui.engine import compression as gz
from gui.engine.events import BucketState
from gui.engine.journal import PushTransactionEntry
from gui.engine.link_probe import is_distant
from gui.engine.piece_size import PieceSize, SplitPlan, is_link_failure
from gui.engine.resend import commit_problems
from gui.engine.target_md5 import md5s_on
from gui.engine.plain_mode_relay import relay_pools
from gui.engine.push_mode.push_transaction import (CommitFailed, NotRelayed, PushTransaction, TransactionGone,
                                                   TransactionState)
from gui.engine.transport_base import TransferContext, TransferFailed
from gui.protocol.wire import CODECS, Bucket, InstanceInfo

log = logging.getLogger(__name__)

# The link probe's first PUT must be at least this large to measure bandwidth.
PROBE_MIN_BYTES = 1024 * 1024
# A transaction the target keeps dropping is recreated at most this often.
MAX_RECREATE = 3
# The transaction state (with the done buckets) is saved at most this often.
SAVE_INTERVAL = 1.0

# Observed single-request throughput towards each target (raw bytes/s): the
# next job to the same target decides its compression without a probe.
_LINK_RATES: Dict[str, float] = {}


class BucketReader(Protocol):
    async def read(self, bucket: Bucket, on_retry: Optional[Callable[[int, OrthancError], None]]
                   ) -> bytes: ...

    def rewind(self, buckets: Sequence[Bucket]) -> None: ...

    # Optional: ``delivered(bucket)`` is called once a bucket reached the target.


def plan_fingerprint(instances: Sequence[InstanceInfo], buckets: Sequence[Bucket]) -> str:
    """Identifies what a transaction was created for, so a resumed job only
    reuses a transaction made for exactly the same plan."""
    digest = hashlib.sha1()
    for info in instances:
        digest.update(f"{info.id}:{info.size}:{info.md5};".encode())
    for bucket in buckets:
        digest.update(repr(bucket.to_json()).encode())
    return digest.hexdigest()


async def run_workers(count: int, worker: Callable[[], Awaitable[None]]) -> None:
    """Run ``count`` copies of ``worker``; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, count))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


class _SwitchCompression(Exception):
    """The link measured while the first buckets went says the guessed
    compression was wrong: the transaction is made again the other way."""

    def __init__(self, compression: str) -> None:
        super().__init__(compression)
        self.compression = compression


class _LinkProbe:
    """The link's rate measured on every bucket in flight at once (all the
    workers send from the first second): wire bytes of the PUTs answered so
    far, over the time during which at least one of them was crossing. A
    PUT crosses from its start until the target had all of it: its answer,
    less the time the target says it spent storing the bucket (our plugin's
    ``Transfers-Handling-Seconds``; without it, until the answer). Time when
    no body was crossing (every worker compressing its next bucket) and the
    target's storing are not the link's: counting them made a loaded LAN
    look slower than gzip."""

    def __init__(self, sample: gz.Sample, guess: str, round_size: int) -> None:
        self.sample = sample
        self.guess = guess
        # PUTs to wait for: the first round of workers, which share the
        # link; fewer answered would miss the bytes of those still crossing.
        self.round_size = max(1, round_size)
        self.wire = 0
        self.spans: List[Tuple[float, float]] = []

    def crossed(self, wire: int, start: float, end: float) -> None:
        self.wire += wire
        self.spans.append((start, end))

    def rate(self) -> Optional[float]:
        if self.wire < PROBE_MIN_BYTES or len(self.spans) < self.round_size:
            return None
        return self.wire / max(_covered(self.spans), 1e-6)


def _covered(spans: Sequence[Tuple[float, float]]) -> float:
    """Seconds covered by at least one of ``spans``."""
    total, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


class _Prepared:
    """A bucket's body ready to PUT, and the retries it took so far; or,
    with ``relay``, the source GET whose answer is spliced into the PUT."""

    def __init__(self, body: bytes, relay: Optional[str] = None) -> None:
        self.body = body
        self.retries = 0
        self.relay = relay


class BucketPusher:
    def __init__(self, ctx: TransferContext, buckets: Sequence[Bucket], reader: BucketReader, *,
                 link_rate: Optional[float] = None, asynchronous_commit: bool = False,
                 max_recreate: int = MAX_RECREATE, read_ahead: bool = True) -> None:
        self.ctx = ctx
        self.buckets = list(buckets)
        # The job's buckets as planned; the transaction may be planned on
        # smaller pieces of them over a hostile link (piece_size.py).
        self.split = SplitPlan(self.buckets)
        self.piece = PieceSize(max((b.total_size for b in self.buckets), default=0),
                               key=ctx.target.base_url)
        self._sizes = {i.id: i.size for i in ctx.instances}
        self._part_wire: Dict[int, int] = {}
        self._failing: Set[int] = set()
        self.reader = reader
        self.link_rate = link_rate
        self.asynchronous_commit = asynchronous_commit
        self.max_recreate = max_recreate
        # Off when the reader has its own look-ahead (pull mode's staging
        # area, whose memory bound a second one would break).
        self.read_ahead = read_ahead
        self.tx: Optional[PushTransaction] = None
        self.compression: Optional[str] = None
        self.decision_reason = ""
        self._done: Set[int] = set()
        self._prefetched: Dict[int, bytes] = {}
        # Buckets read from the source while the first one measures the link
        # (raw bytes: good whatever the measurement decides).
        self._early_reads: Dict[int, "asyncio.Future[bytes]"] = {}
        # Bucket 0 compressed while its transaction was being created: the
        # compression it was made for, and the body to come.
        self._encoded: Dict[int, Tuple[str, "asyncio.Future[bytes]"]] = {}
        self._probe: Optional[_LinkProbe] = None
        self._relay_refused: Set[int] = set()   # buckets that could not be relayed: read and sent
        self.relayed = 0                          # buckets spliced from the source into their PUT
        self._fingerprint = plan_fingerprint(ctx.instances, self.buckets)
        self._last_save = 0.0
        self._put_rate: Optional[float] = None
        self._last_send_seconds = 0.0   # the last PUT's body on the way, in seconds
        self.wire_bytes = 0
        self._commit_started = False
        # True when the link probe reversed the first guess (docs, tests).
        self.switched_compression = False
        self.codec: Optional[str] = None       # codec the first bucket's sample favours over gzip
        self.codecs: Tuple[str, ...] = ()      # every codec it favours, best first (offered in that order)
        self.codec_used: Optional[str] = None  # codec the target confirmed for the transaction

    # --- the whole run ---------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            if self.ctx.shutting_down:
                # The app is quitting, not the user cancelling: keep the staged
                # transaction so the resumed job sends only what is missing.
                await asyncio.shield(self._save(force=True))
                raise
            await asyncio.shield(self.discard())
            raise
        except TransferFailed:
            await asyncio.shield(self.discard())
            raise
        except (OrthancError, OSError, ValueError) as exc:
            await asyncio.shield(self.discard())
            raise TransferFailed(str(exc)) from exc
        finally:
            self._drop_encoded()
            if self._put_rate:
                _LINK_RATES[self.ctx.target.base_url] = self._put_rate

    async def _run(self) -> None:
        ctx = self.ctx
        if not self.buckets:
            return
        resumed = await self._resume()
        if not resumed and self.piece.size < self.piece.initial:
            # This target's link was hostile in an earlier job: start in pieces.
            self.buckets = self.split.resplit(self.piece.size, self._sizes)
        if not resumed:
            try:
                await self._open()
            except TransactionGone as gone:
                # Dropped during the link probe (target restarted): start a new one.
                log.warning("%s during the link probe; recreating it", gone)
                await self._start_over()
            except OrthancError as exc:
                # The probing first bucket could not cross the link: pieces.
                if not self._shrink(exc):
                    raise
                await self.tx.delete()  # type: ignore[union-attr]
                await self._start_over()
        recreated = 0
        while True:
            # What the target lacks is asked while the buckets travel (one
            # look-up round trip fewer between the last bucket and the
            # commit). Not with import as it arrives: our own early imports
            # would then look like instances the target had before.
            absent = None if ctx.options.ImportAsItArrives else asyncio.ensure_future(self._find_absent())
            try:
                try:
                    await self._send_all()
                    await ctx.wait_running()
                    assert self.tx is not None
                    await self._record_absent(await absent if absent is not None else None)
                finally:
                    if absent is not None:   # no-op once awaited; else its outcome is dropped
                        absent.cancel()
                        await asyncio.gather(absent, return_exceptions=True)
                self._commit_started = True
                await self.tx.commit()
                await ctx.journal.set_push_transaction(None)
                self.tx = None
                return
            except TransactionGone as gone:
                if self._commit_started and await self._target_has_everything():
                    # The commit went through but its answer was lost.
                    await ctx.journal.set_push_transaction(None)
                    self.tx = None
                    return
                recreated += 1
                if recreated > self.max_recreate:
                    raise TransferFailed(f"{gone}; gave up after recreating it {self.max_recreate} times")
                log.warning("%s: recreating it and sending all buckets again", gone)
            except OrthancError as exc:
                if not self._shrink(exc):
                    raise
                await self.tx.delete()  # type: ignore[union-attr]
                log.warning("%s: a new transaction in pieces of %d KB (the buckets sent so far go again)",
                            exc, self.piece.size // 1024)
            except _SwitchCompression as switch:
                log.info("auto compression: %s after all (%s); a new transaction", switch.compression,
                         self.decision_reason)
                self.switched_compression = True
                self._probe = None
                await self.tx.delete()  # type: ignore[union-attr]
                self.compression = switch.compression
            except CommitFailed as failed:
                if self._resend_corrupted(failed):
                    continue   # the same transaction: only the corrupted instances' buckets again
                if not resumed:
                    raise TransferFailed(f"{ctx.target.peer.name} refused the commit: {failed.reason}")
                # A transaction resumed from an earlier run may have lost buckets
                # we believed sent: start over once before declaring failure.
                log.warning("commit of resumed transaction failed (%s); sending everything again",
                            failed.reason)
                await self.tx.delete()  # type: ignore[union-attr]
            resumed = False
            await self._start_over()

    def _shrink(self, exc: OrthancError) -> bool:
        """A bucket failed for good on the link (every retry reset or timed
        out): plan the transaction again on smaller pieces, if it can shrink."""
        if not is_link_failure(exc) or self.tx is None or self._commit_started:
            return False
        failed = max((self.buckets[i].total_size for i in self._failing), default=0)
        self._failing.clear()
        if not self.piece.shrink(failed or None):
            return False
        self.buckets = self.split.resplit(self.piece.size, self._sizes)
        self.ctx.notes.append(f"the link to {self.ctx.target.peer.name} broke every bucket of {failed // 1024} KB: "
                              f"a new push transaction in pieces of at most {self.piece.size // 1024} KB")
        return True

    def _event(self, index: int, state: BucketState, **extra: object) -> None:
        """A bucket event of transaction bucket ``index``, shown on the job's
        planned bucket it belongs to (the same one unless split)."""
        split = self.split
        if not split.piece:
            self.ctx.bucket_event(index, self.buckets[index], state, **extra)
            return
        original = split.owner[index]
        others = self._done - {index}
        if state is BucketState.DONE and not split.complete(original, self._done):
            state = BucketState.SENDING
        values = dict(extra)
        values["raw_done"] = split.done_bytes(original, others) + int(extra.get("raw_done") or 0)  # type: ignore[call-overload]
        values["wire_done"] = sum(self._part_wire.get(n, 0) for n in split.parts_of(original) if n in others) \
            + int(extra.get("wire_done") or 0)  # type: ignore[call-overload]
        values.pop("wire_total", None)
        self.ctx.bucket_event(original, split.originals[original], state, **values)

    def _resend_corrupted(self, failed: CommitFailed) -> bool:
        """A commit refused for instances with a wrong MD5 or size (a byte
        corrupted on the way): mark their buckets to be sent again into the
        same transaction (the target keeps it after a failed commit and
        checks a bucket sent twice as written), within the job's re-send
        budget (resend.py). False: the refusal stands."""
        problems = commit_problems(failed.instances)
        if not problems or not self.ctx.resends.allow_all(
                {i: f"refused by the commit: {p}" for i, p in problems.items()}):
            return False
        indexes = [n for n, b in enumerate(self.buckets) if problems.keys() & set(b.instance_ids())]
        self._done.difference_update(indexes)
        self.ctx.done_buckets.difference_update({self.split.owner[n] for n in indexes})
        self.reader.rewind([self.buckets[n] for n in indexes])
        return True

    # --- creating, resuming, discarding the transaction -------------------------------------

    async def _resume(self) -> bool:
        saved = self.ctx.journal.push_transaction()
        state = TransactionState.from_json(saved.transaction) if saved is not None else None
        if saved is None or state is None or saved.plan != self._fingerprint:
            if state is not None:
                await self._transaction(state).delete()
            return False
        # Whether it still exists shows on the first PUT or the commit (404):
        # the protocol has no "GET transaction"; a dropped one is recreated.
        self.tx = self._transaction(state)
        self.compression = state.compression
        if saved.piece:
            self.buckets = self.split.resplit(saved.piece, self._sizes)   # the transaction's own plan
        self._done = {i for i in saved.done if 0 <= i < len(self.buckets)}
        self.ctx.compression_used = state.compression
        log.info("resuming push transaction %s (%d of %d buckets already sent)", state.id,
                 len(self._done), len(self.buckets))
        return True

    def _transaction(self, state: TransactionState) -> PushTransaction:
        opts = self.ctx.options
        return PushTransaction(self.ctx.target, state, transfer_id=self.ctx.transfer_id,
                               retries=opts.MaxHttpRetries, commit_timeout=opts.PeerCommitTimeout)

    async def _create(self, compression: str) -> None:
        opts = self.ctx.options
        # Where gzip was chosen and the sample shrank more with a codec, ask
        # for it: our plugin confirms it, any other server keeps gzip.
        codecs = self.codecs if compression == "gzip" else ()
        self.tx = await PushTransaction.create(
            self.ctx.target, self.ctx.instances, self.buckets, compression,
            transfer_id=self.ctx.transfer_id, retries=opts.MaxHttpRetries,
            commit_timeout=opts.PeerCommitTimeout, asynchronous_commit=self.asynchronous_commit,
            codecs=codecs, import_as_it_arrives=opts.ImportAsItArrives)
        self.compression = compression
        self.ctx.compression_used = compression  # the protocol's name; a codec is a kind of gzip
        self.codec_used = self.tx.state.compression if self.tx.state.compression in CODECS else None
        await self._save(force=True)

    def _drop_encoded(self) -> None:
        for _compression, body in self._encoded.values():
            body.cancel()
        self._encoded.clear()
        for reading in self._early_reads.values():
            reading.cancel()
            # A read that failed meanwhile must not be reported as never retrieved.
            reading.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._early_reads.clear()

    async def _start_over(self, compression: Optional[str] = None) -> None:
        """A new transaction, every bucket to be sent again (the old one is
        gone or discarded); same compression unless another is given."""
        self._drop_encoded()
        self._done.clear()
        self._part_wire.clear()
        self.ctx.done_buckets.clear()
        self.reader.rewind(self.buckets)
        await self._create(compression or self.compression or "none")

    async def _open(self) -> None:
        """Create the transaction, choosing its compression first when ``auto``."""
        mode = self.ctx.compression
        if mode in ("gzip", "none"):
            self.decision_reason = "chosen by the user"
            await self._create(mode)
            return
        first = self.buckets[0]
        link = self.link_rate or _LINK_RATES.get(self.ctx.target.base_url)
        # The round trip is measured while the first bucket is read and sampled.
        distance = asyncio.ensure_future(is_distant(self.ctx.target)) if link is None else None
        try:
            self._event(0, BucketState.READING)
            raw = await self.reader.read(first, None)
            self._prefetched[0] = raw
            sample = await gz.measure(raw, limit=gz.QUICK_SAMPLE_BYTES)
            self.codec, self.codecs = sample.codec, sample.codecs
            distant = await distance if distance is not None else False
        finally:
            if distance is not None and not distance.done():
                distance.cancel()
        if link is None and sample.ratio >= gz.MIN_USEFUL_RATIO:
            await self._open_by_guess(raw, sample, "gzip" if distant else "none")
            return
        decision = gz.decide_push(sample, link, self.ctx.options.Threads)
        log.info("auto compression: %s (%s)", decision.compression, decision.reason)
        self.decision_reason = decision.reason
        await self._create(decision.compression)

    async def _open_by_guess(self, raw: bytes, sample: gz.Sample, guess: str) -> None:
        """Link speed unknown, data that shrinks: start as the round trip
        suggests (compressed to a distant target, whose link is most likely
        slower than gzip). With more than two buckets the first one's PUT then
        measures the link; if that says otherwise the transaction is made
        again the other way, and only that one bucket was sent in vain
        (cheaply: the link turned out fast, or the bucket went compressed)."""
        if guess == "gzip":
            # Compress the first bucket while the creation request travels.
            want = self.codec or "gzip"
            self._encoded[0] = (want, asyncio.ensure_future(gz.compress(raw, compression=want)))
        try:
            await self._create(guess)
        except BaseException:
            self._drop_encoded()
            raise
        if guess == "gzip" and len(self.buckets) > 2 and self.read_ahead:
            # A distant target: every worker starts at once and the link is
            # measured on all of them together (_deliver); no bucket goes
            # alone. Only a wrong guess costs the buckets sent until then
            # (read again from the source; not so from pull mode's staging
            # area, which frees a bucket once delivered: there the first
            # bucket still goes alone).
            self._probe = _LinkProbe(sample, guess, min(self.ctx.options.Threads, len(self.buckets)))
            self.decision_reason = f"ratio {sample.ratio:.2f}, distant target; the link is being measured"
            log.info("auto compression: %s (%s)", guess, self.decision_reason)
            return
        if len(self.buckets) <= 2:
            self.decision_reason = (f"ratio {sample.ratio:.2f}, {'distant' if guess == 'gzip' else 'near'} "
                                    "target, too few buckets to measure the link")
            log.info("auto compression: %s (%s)", guess, self.decision_reason)
            return
        prepared = await self._prepare(0)
        if self.read_ahead:
            # The next workers' buckets are read meanwhile: the link's
            # measurement then costs the first bucket's PUT, not the reads too.
            for index in range(1, min(len(self.buckets), self.ctx.options.Threads)):
                self._early_reads[index] = asyncio.ensure_future(self.reader.read(self.buckets[index], None))
        wire = len(prepared.body)
        await self._deliver(0, prepared)
        if wire < PROBE_MIN_BYTES:
            # A small body measures the round trip, not the bandwidth.
            self.decision_reason = f"first bucket too small to measure the link; kept {guess}"
            log.info("auto compression: %s", self.decision_reason)
            return
        link = wire / max(self._last_send_seconds, 1e-6)
        decision = gz.decide_push(sample, link, self.ctx.options.Threads)
        log.info("auto compression: %s (%s; first bucket sent %s)", decision.compression,
                 decision.reason, guess)
        self.decision_reason = decision.reason
        if decision.compression == guess:
            return
        self.switched_compression = True
        await self.tx.delete()  # type: ignore[union-attr]
        self._prefetched[0] = raw
        await self._start_over(decision.compression)

    async def discard(self) -> None:
        """Delete the transaction (current or saved); the target keeps nothing."""
        tx = self.tx
        if tx is None:
            saved = self.ctx.journal.push_transaction()
            state = TransactionState.from_json(saved.transaction) if saved is not None else None
            tx = self._transaction(state) if state is not None else None
        if tx is not None:
            await tx.delete()
        self.tx = None
        if self._commit_started or self.ctx.created_on_target:
            # A commit that was cut short (cancel, lost answer) may have
            # imported some instances: remove those this job brought.
            await self.ctx.delete_created_on_target()
        try:
            await self.ctx.journal.set_push_transaction(None)
        except Exception as exc:  # noqa: BLE001 - cleanup must go on; the job store logs its own errors
            log.warning("could not forget the push transaction state: %s", exc)

    async def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.tx is None or (not force and now - self._last_save < SAVE_INTERVAL):
            return
        self._last_save = now
        await self.ctx.journal.set_push_transaction(
            PushTransactionEntry(self.tx.state.to_json(), self._fingerprint, sorted(self._done),
                                 self.split.piece))

    async def _find_absent(self) -> List[str]:
        """The instances the target lacks (asked before any of ours is imported)."""
        ids = [i.id for i in self.ctx.instances if i.id not in self.ctx.created_on_target]
        found = await md5s_on(self.ctx.target, ids, bulk=True, concurrency=self.ctx.options.Threads * 2,
                              retries=self.ctx.options.MaxHttpRetries, resources=self.ctx.resources)
        absent = []
        for instance_id in ids:
            value = found.get(instance_id)
            if isinstance(value, OrthancError):
                raise value
            if value is None:
                absent.append(instance_id)
        return absent

    async def _record_absent(self, absent: Optional[List[str]] = None) -> None:
        """Before committing, note (durably) which instances the target lacks:
        only those may be deleted if the job is cancelled during the commit.
        ``absent``: found already (while the buckets travelled)."""
        await self.ctx.mark_created_many((await self._find_absent()) if absent is None else absent)

    async def _target_has_everything(self) -> bool:
        found = await md5s_on(self.ctx.target, [i.id for i in self.ctx.instances], bulk=True,
                              concurrency=self.ctx.options.Threads)
        return bool(found) and all(found.get(i.id) == i.md5 for i in self.ctx.instances)

    # --- sending buckets ---------------------------------------------------------------------

    async def _send_all(self) -> None:
        todo = [i for i in range(len(self.buckets)) if i not in self._done]
        for index in todo:
            self._event(index, BucketState.QUEUED)
        for index in sorted(self._done):
            bucket = self.buckets[index]
            self._event(index, BucketState.DONE, raw_done=bucket.total_size)
            original = self.split.owner[index]
            if self.split.complete(original, self._done) and index == self.split.parts_of(original)[-1]:
                self._delivered(self.split.originals[original])
        queue = iter(todo)

        async def worker() -> None:
            # Each worker reads (and compresses) its next bucket while the
            # current one is being sent: the source and the link both stay
            # busy, and a worker holds at most two buckets (the memory bound
            # is Threads x 2 x BucketSize).
            ahead: Optional[Tuple[int, "asyncio.Future[_Prepared]"]] = None
            try:
                while True:
                    if ahead is None:
                        index = next(queue, None)
                        if index is None:
                            return
                        await self.ctx.wait_running()
                        ahead = (index, asyncio.ensure_future(self._prepare(index)))
                    index, reading = ahead
                    ahead = None
                    prepared = await reading
                    following = next(queue, None) if self.read_ahead else None
                    if following is not None:
                        ahead = (following, asyncio.ensure_future(self._prepare(following)))
                    await self.ctx.wait_running()
                    await self._deliver(index, prepared)
            finally:
                if ahead is not None:
                    ahead[1].cancel()
                    await asyncio.gather(ahead[1], return_exceptions=True)

        await run_workers(self.ctx.options.Threads, worker)
        await self._save(force=True)

    def _failed(self, index: int, retries: int, exc: BaseException) -> None:
        if is_link_failure(exc):
            self._failing.add(index)
        if not isinstance(exc, (TransactionGone, asyncio.CancelledError)):
            self._event(index, BucketState.FAILED, retries=retries, error=str(exc))

    async def _prepare(self, index: int) -> "_Prepared":
        """The bucket's body as it will be sent: read, and compressed if the
        transaction says gzip."""
        bucket = self.buckets[index]
        assert self.tx is not None
        prepared = _Prepared(b"")

        def on_retry(attempt: int, error: OrthancError) -> None:
            prepared.retries += 1
            self._event(index, BucketState.RETRYING, retries=prepared.retries,
                             error=str(error))

        relay = self._relay_path(index)
        if relay is not None:
            prepared.relay = relay   # nothing to read: the bytes go from socket to socket
            return prepared
        try:
            body = self._prefetched.pop(index, None)
            reading = self._early_reads.pop(index, None)
            if body is None and reading is not None:
                self._event(index, BucketState.READING, retries=prepared.retries)
                body = await reading
            early = self._encoded.pop(index, None)
            if early is not None and early[0] != self.tx.state.compression:
                early[1].cancel()   # made for a codec the target did not confirm
                early = None
            if body is None:
                self._event(index, BucketState.READING, retries=prepared.retries)
                body = await self.reader.read(bucket, on_retry)
            if early is not None:
                self._event(index, BucketState.COMPRESSING, retries=prepared.retries)
                body = await early[1]   # compressed while the transaction was created
            elif self.tx.state.compression != "none":  # gzip, or the codec the target confirmed
                self._event(index, BucketState.COMPRESSING, retries=prepared.retries)
                body = await gz.compress(body, compression=self.tx.state.compression)
        except BaseException as exc:
            self._failed(index, prepared.retries, exc)
            raise
        prepared.body = body
        return prepared

    def _relay_path(self, index: int) -> Optional[str]:
        """The source GET to splice into bucket ``index``'s PUT, when it can
        be relayed: an uncompressed transaction, a source plugin whose
        answer needs no change (``SourceReader.relay_path``), plain HTTP and
        no speed limit on both sides, no bytes of it read already, and the
        link not being measured on this bucket's PUT."""
        assert self.tx is not None
        if self.tx.state.compression != "none" or self._probe is not None:
            return None
        if index in self._prefetched or index in self._early_reads or index in self._encoded \
                or index in self._relay_refused:
            return None
        path_of = getattr(self.reader, "relay_path", None)
        if path_of is None or relay_pools(self.ctx.source, self.ctx.target) is None:
            return None
        path: Optional[str] = path_of(self.buckets[index])
        return path

    async def _deliver_relayed(self, index: int, prepared: "_Prepared") -> bool:
        """Relay bucket ``index`` from the source; False if it must go the usual way."""
        assert self.tx is not None and prepared.relay is not None
        pools = relay_pools(self.ctx.source, self.ctx.target)
        if pools is None:
            return False
        raw_total = self.buckets[index].total_size
        # Read and sent at once: both states, as for a bucket read then sent.
        self._event(index, BucketState.READING, retries=prepared.retries)
        self._event(index, BucketState.SENDING, raw_done=0, wire_done=0, wire_total=raw_total,
                    retries=prepared.retries)
        start = time.perf_counter()
        try:
            handling = await self.tx.put_relayed(index, pools, prepared.relay, raw_total)
        except NotRelayed as exc:
            log.debug("bucket %d not relayed (%s): read and sent", index, exc)
            return False
        except BaseException as exc:
            self._failed(index, prepared.retries, exc)
            raise
        end = time.perf_counter()
        crossed = max(start + 1e-6, end - handling) if handling is not None else end
        self._last_send_seconds = crossed - start
        self._observe_put(raw_total, self._last_send_seconds)
        self.relayed += 1
        await self._finished(index, raw_total, prepared.retries)
        return True

    async def _deliver(self, index: int, prepared: "_Prepared") -> None:
        bucket = self.buckets[index]
        assert self.tx is not None
        raw_total = bucket.total_size
        if prepared.relay is not None:
            if await self._deliver_relayed(index, prepared):
                return
            # Read (and compressed, were the transaction to say so) as any bucket.
            self._relay_refused.add(index)
            retries = prepared.retries
            prepared = await self._prepare(index)
            prepared.retries += retries
        body = prepared.body
        prepared.body = b""  # the PUT holds it from here on

        def on_retry(attempt: int, error: OrthancError) -> None:
            prepared.retries += 1
            self._event(index, BucketState.RETRYING, retries=prepared.retries,
                             error=str(error))

        wire_total = len(body)
        try:
            last = -1

            def on_progress(sent: int) -> None:
                nonlocal last
                if sent == last:
                    return
                last = sent
                raw_done = raw_total if sent >= wire_total else (sent * raw_total) // max(wire_total, 1)
                self._event(index, BucketState.SENDING, raw_done=raw_done,
                                 wire_done=sent, wire_total=wire_total, retries=prepared.retries)

            start = time.perf_counter()
            handling = await self.tx.put(index, body, on_progress, on_retry)
            end = time.perf_counter()
            # The link's share of the PUT: until the target had the whole body,
            # not its storing afterwards (which, on a loaded LAN, made the link
            # look slower than gzip).
            crossed = max(start + 1e-6, end - handling) if handling is not None else end
            self._last_send_seconds = crossed - start
            if self._probe is not None:
                self._probe.crossed(wire_total, start, crossed)
            self._observe_put(wire_total, self._last_send_seconds)
        except BaseException as exc:
            self._failed(index, prepared.retries, exc)
            raise
        await self._finished(index, wire_total, prepared.retries)

    async def _finished(self, index: int, wire_total: int, retries: int) -> None:
        """Bookkeeping once bucket ``index`` is on the target."""
        ctx, raw_total = self.ctx, self.buckets[index].total_size
        self.wire_bytes += wire_total
        self._part_wire[index] = wire_total
        self._done.add(index)
        self.piece.succeeded()
        original = self.split.owner[index]
        complete = self.split.complete(original, self._done)
        if complete:
            self._delivered(self.split.originals[original])
        self._event(index, BucketState.DONE, raw_done=raw_total, wire_done=wire_total,
                    wire_total=wire_total, retries=retries)
        if complete:
            await ctx.mark_bucket_done(original)
        await self._save()
        self._check_probe()

    def _check_probe(self) -> None:
        """Once enough bytes crossed, confirm the guessed compression or switch."""
        probe = self._probe
        link = probe.rate() if probe is not None else None
        if probe is None or link is None:
            return
        self._probe = None
        decision = gz.decide_push(probe.sample, link, self.ctx.options.Threads)
        log.info("auto compression: %s (%s; the first buckets sent %s)", decision.compression,
                 decision.reason, probe.guess)
        self.decision_reason = decision.reason
        if decision.compression != probe.guess:
            if 2 * len(self._done) >= len(self.buckets):
                # Half or more is on the target already: a new transaction
                # would send that again for a saving on less than that.
                self.decision_reason += f"; kept {probe.guess}, {len(self._done)} of {len(self.buckets)} buckets sent"
                log.info("auto compression: %s kept (%s)", probe.guess, self.decision_reason)
                return
            raise _SwitchCompression(decision.compression)

    def _delivered(self, bucket: Bucket) -> None:
        # Readers that stage data (pull mode) may free it now.
        delivered = getattr(self.reader, "delivered", None)
        if delivered is not None:
            delivered(bucket)

    def _observe_put(self, wire: int, seconds: float) -> None:
        if wire < 64 * 1024 or seconds <= 0:
            return  # tiny bodies measure latency, not throughput
        rate = wire / seconds
        self._put_rate = rate if self._put_rate is None else 0.7 * self._put_rate + 0.3 * rate
