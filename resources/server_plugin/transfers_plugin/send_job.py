"""``PushTransfer`` jobs: this Orthanc sends resources to one of its peers.

To a peer that speaks the protocol (this plugin or the C++ one): one push
transaction, its buckets PUT by ``Threads`` workers (each reading instance
files through the plugin's ``CacheSize`` cache), then the commit, which the
peer checks all-or-nothing. The asynchronous commit is used only when the
peer's answer announces it. To a stock peer: ``POST /instances`` per
instance, then every MD5 read back; on failure the instances this job
created there are deleted again.

Either way instances the peer already holds with the same MD5 are not sent,
and the checkpoint (transaction, acknowledged buckets, instances posted)
lets a paused, failed or restarted job go on without sending again what the
peer already acknowledged.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Optional

from .codec import SPLIT16, encode, gzip_bytes
from .errors import CORRUPTED_FILE, NETWORK_PROTOCOL, PluginError
from .jobs import Job
from .peer_http import PeerError, PeerHttp

MB = 1024 * 1024
UPLOAD_SHARE = 0.95        # progress reached when every bucket is acknowledged; the commit gives the rest


def parallel(items: Iterable[Any], work: Callable[[Any], Any], threads: int, job: Optional[Job] = None) -> List[Any]:
    """``work(item)`` for every item on ``threads`` threads, results in order.

    The first exception is raised once the others have finished; with a
    job, items not started yet are skipped as soon as a stop is asked.
    """
    items = list(items)
    results: List[Any] = [None] * len(items)
    errors: List[BaseException] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        if errors or (job is not None and job.stop):
            return
        try:
            results[index] = work(items[index])
        except BaseException as exc:  # collected, re-raised in the caller's thread
            with lock:
                errors.append(exc)

    if len(items) <= 1 or threads <= 1:
        for index in range(len(items)):
            one(index)
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(items)), thread_name_prefix="transfers-worker") as pool:
            list(pool.map(one, range(len(items))))
    if errors:
        raise errors[0]
    if job is not None:
        job.check_stop()
    return results


def infos_of(wire: Any, records: List[Dict[str, str]]) -> List[Any]:
    return [wire.parse_instance_info(r, "checkpoint") for r in records]


class Speed:
    """Bytes on the wire during this run, for NetworkSpeedKBs."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.bytes = 0
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self.bytes += count

    def kbs(self) -> int:
        elapsed = max(1e-3, time.monotonic() - self.start)
        return int(self.bytes / 1024 / elapsed)


class PeerJobRunner:
    """Runs one job against the peer its request names, over one peer client."""

    def __init__(self, plugin: Any) -> None:
        self.plugin = plugin
        self.wire = plugin.wire

    def run(self, job: Job) -> None:
        peer = self.plugin.peer_client(job.request["Peer"])
        try:
            self._run(job, peer)
        finally:
            peer.close()

    def _run(self, job: Job, peer: PeerHttp) -> None:
        raise NotImplementedError


class SendRunner(PeerJobRunner):
    # --- the job ---------------------------------------------------------------

    def _run(self, job: Job, peer: PeerHttp) -> None:
        cp = job.checkpoint
        settings = self.plugin.job_settings
        if "Instances" not in cp:
            infos = self.plugin.resolve_local(job.request["Resources"])
            cp["Instances"] = [i.to_json() for i in infos]
        infos = infos_of(self.wire, cp["Instances"])
        total = sum(i.size for i in infos)
        job.publish(TotalInstances=len(infos), TotalSizeMB=total // MB,
                    SenderTransferID=job.request["SenderTransferID"])
        job.check_stop()
        if "Mode" not in cp:
            cp["Mode"] = "push" if speaks_protocol(peer, job) else "plain"
        if "ToSend" not in cp:
            md5s = md5s_on_peer(peer, [i.id for i in infos], settings.threads, job,
                                resources=job.request["Resources"], bulk=cp["Mode"] == "push")
            cp["ToSend"] = [i.id for i in infos if md5s.get(i.id) != i.md5]
            cp["Absent"] = [i.id for i in infos if md5s.get(i.id) is None]
            cp["AlreadyOnPeer"] = len(infos) - len(cp["ToSend"])
        self.plugin.registry.save(job)
        wanted = set(cp["ToSend"])
        to_send = [i for i in infos if i.id in wanted]
        job.publish(Mode=cp["Mode"], Commitment=self._commitment(job, len(infos)))
        if to_send:
            if cp["Mode"] == "push":
                self._push(job, peer, to_send)
            else:
                self._plain(job, peer, to_send)
        cp["Verified"] = len(cp["ToSend"])
        job.publish(1.0, Commitment=self._commitment(job, len(infos)), CompletedHttpQueries=peer.queries)

    @staticmethod
    def _commitment(job: Job, total: int) -> Dict[str, Any]:
        """Per-instance outcome: verified on the peer, already there, still to do."""
        cp = job.checkpoint
        verified = int(cp.get("Verified", 0))
        present = int(cp.get("AlreadyOnPeer", 0))
        return {"Verified": verified, "AlreadyOnPeer": present,
                "Pending": max(0, total - verified - present), "Problems": cp.get("Problems", [])}

    # --- push transaction --------------------------------------------------------

    def _push(self, job: Job, peer: PeerHttp, to_send: List[Any]) -> None:
        cp = job.checkpoint
        settings = self.plugin.job_settings
        cp.setdefault("BucketSize", settings.bucket_size)
        buckets = self.wire.plan_buckets(to_send, int(cp["BucketSize"]))
        compression = job.request["Compression"]
        headers = {self.wire.SENDER_TRANSFER_ID_HEADER: job.request["SenderTransferID"]}
        total = sum(b.total_size for b in buckets)
        speed = Speed()

        def lost_transaction(exc: PeerError, attempt: int) -> bool:
            """The peer lost the transaction (restarted, or discarded it as least
            recently used): the first time, forget it so that a new one is opened
            and everything is sent once more."""
            if exc.status != 404 or attempt != 0:
                return False
            cp.pop("Transaction", None)
            cp["Sent"] = []
            return True

        for attempt in range(2):
            if not cp.get("Transaction"):
                self._create_transaction(job, peer, to_send, buckets, compression, headers)
            tid = cp["Transaction"]
            if cp.get("Cookie"):
                headers["Cookie"] = cp["Cookie"]
            if cp.get("Codec"):
                job.publish(Codec=cp["Codec"])
            sent = set(cp.get("Sent", []))
            job.publish(TotalBuckets=len(buckets), SentBuckets=len(sent), ResumedFromBucket=len(sent))
            lock = threading.Lock()
            done = [sum(buckets[i].total_size for i in sent if i < len(buckets))]

            def put(index: int) -> None:
                body = self._bucket_bytes(buckets[index])
                raw = len(body)
                if compression == "gzip":
                    # The codec when the peer accepted it at the transaction's creation.
                    body = encode(body, cp.get("Codec") or "gzip", self.plugin.options.gzip_level)
                peer.request("PUT", "%s/%s/%d" % (self.wire.URI_PUSH, tid, index), body, headers)
                speed.add(len(body))
                with lock:
                    sent.add(index)
                    cp["Sent"] = sorted(sent)
                    done[0] += raw
                    fraction = done[0] / total if total else 1.0
                job.publish(UPLOAD_SHARE * fraction, UploadedSizeMB=speed.bytes // MB, SentBuckets=len(sent),
                            NetworkSpeedKBs=speed.kbs(), CompletedHttpQueries=peer.queries)
                self.plugin.registry.save_soon(job)

            try:
                parallel([i for i in range(len(buckets)) if i not in sent], put, settings.threads, job)
            except PeerError as exc:
                if not lost_transaction(exc, attempt):
                    raise
                continue
            finally:
                self.plugin.registry.save(job)
            job.check_stop()
            try:
                self._commit(job, peer, tid, headers)
            except PeerError as exc:
                if not lost_transaction(exc, attempt):
                    raise
                continue
            cp.pop("Transaction", None)
            job.publish(CompletedHttpQueries=peer.queries)
            return

    def _create_transaction(self, job: Job, peer: PeerHttp, to_send: List[Any], buckets: List[Any],
                            compression: str, headers: Dict[str, str]) -> None:
        cp = job.checkpoint
        # Ask for the split16-gzip codec (an extension of this project, only used
        # when the peer's answer accepts it), unless this server's Codecs is [].
        codec = SPLIT16 if compression == "gzip" and SPLIT16 in self.plugin.options.codecs else None
        body = self.wire.build_push_request(to_send, buckets, compression, asynchronous_commit=True, codec=codec)
        _, answer_headers, data = peer.request("POST", self.wire.URI_PUSH, json.dumps(body).encode(), headers)
        try:
            answer = json.loads(data)
            tid = answer["ID"]
        except (ValueError, KeyError, TypeError):
            raise PluginError(NETWORK_PROTOCOL, "peer %r answered the push request with %r, not a transaction"
                              % (peer.peer.name, data[:100]))
        cp["Transaction"] = str(tid)
        cp["Asynchronous"] = answer.get("AsynchronousCommit") is True
        cp["Codec"] = SPLIT16 if codec is not None and answer.get("Codec") == SPLIT16 else None
        cookie = answer_headers.get("set-cookie")
        if cookie:
            # Replayed on this transaction's later requests (sticky load balancers).
            cp["Cookie"] = cookie.split(";", 1)[0]
        cp["Sent"] = []
        self.plugin.registry.save(job)

    def _bucket_bytes(self, bucket: Any) -> bytes:
        pieces = []
        for chunk in bucket.chunks:
            data = self.plugin.chunks.cache.get(chunk.instance_id)
            pieces.append(memoryview(data)[chunk.offset:chunk.offset + chunk.size])
        return b"".join(pieces)

    def _commit(self, job: Job, peer: PeerHttp, tid: str, headers: Dict[str, str]) -> None:
        settings = self.plugin.job_settings
        uri = self.wire.commit_uri(tid)
        if not job.checkpoint.get("Asynchronous"):
            peer.request("POST", uri, b"", headers, timeout=settings.commit_timeout)
            return
        peer.request("POST", uri, b"", headers, ok=(200, 202))
        started = time.monotonic()
        deadline = started + settings.commit_timeout
        while True:
            status = self.wire.parse_commit_status(peer.json("GET", uri, headers=headers))
            if status.status == self.wire.COMMIT_SUCCESS:
                return
            if status.status == self.wire.COMMIT_FAILURE:
                error = status.error or {}
                problems = error.get("Instances")
                if isinstance(problems, list):
                    job.checkpoint["Problems"] = problems[:100]
                raise PeerError("peer %r refused the commit: %s" % (
                    peer.peer.name, error.get("Details") or error.get("Message") or "no details"),
                    error.get("HttpStatus"), error)
            if time.monotonic() > deadline:
                raise PeerError("peer %r did not finish the commit within PeerCommitTimeout (%d s)"
                                % (peer.peer.name, settings.commit_timeout))
            # Most commits take a few seconds: ask often at first, then once a second.
            time.sleep(0.05 if time.monotonic() - started < 3 else 1.0)

    # --- stock peer ------------------------------------------------------------

    def _plain(self, job: Job, peer: PeerHttp, to_send: List[Any]) -> None:
        cp = job.checkpoint
        settings = self.plugin.job_settings
        compression = job.request["Compression"]
        absent = set(cp.get("Absent", []))
        posted = set(cp.get("Posted", []))
        created = set(cp.get("Created", []))
        lock = threading.Lock()
        total = sum(i.size for i in to_send)
        done = [sum(i.size for i in to_send if i.id in posted)]
        speed = Speed()

        def post(info: Any) -> None:
            data = self.plugin.chunks.cache.get(info.id)
            headers = {"Content-Type": "application/dicom"}
            body = data
            if compression == "gzip":
                body = gzip_bytes(data, self.plugin.options.gzip_level)
                headers["Content-Encoding"] = "gzip"
            peer.request("POST", "/instances", body, headers)
            speed.add(len(body))
            with lock:
                posted.add(info.id)
                if info.id in absent:
                    created.add(info.id)
                cp["Posted"], cp["Created"] = sorted(posted), sorted(created)
                done[0] += info.size
                fraction = done[0] / total if total else 1.0
            job.publish(UPLOAD_SHARE * fraction, UploadedSizeMB=speed.bytes // MB, PostedInstances=len(posted),
                        NetworkSpeedKBs=speed.kbs(), CompletedHttpQueries=peer.queries)
            self.plugin.registry.save_soon(job)

        # Keys exist before the workers start: they only replace values, so a
        # save running meanwhile never sees the checkpoint change size.
        cp["Posted"], cp["Created"] = sorted(posted), sorted(created)
        job.publish(PostedInstances=len(posted), TotalToPost=len(to_send))
        try:
            parallel([i for i in to_send if i.id not in posted], post, settings.threads, job)
        finally:
            self.plugin.registry.save(job)
        # The stock peer says nothing about what it stored: read every MD5 back.
        md5s = md5s_on_peer(peer, [i.id for i in to_send], settings.threads, job)
        problems = []
        for info in to_send:
            found = md5s.get(info.id)
            if found != info.md5:
                problems.append({"ID": info.id, "Problem": "not stored on the peer" if found is None
                                 else "MD5 %s on the peer, %s here" % (found, info.md5)})
        if problems:
            cp["Problems"] = problems[:100]
            raise PluginError(CORRUPTED_FILE, "%d instance(s) did not arrive intact on peer %r (%s); the"
                              " instances this job had added there were deleted again"
                              % (len(problems), peer.peer.name, ", ".join(p["ID"] for p in problems[:3])))
        job.publish(CompletedHttpQueries=peer.queries)

    # --- undo ------------------------------------------------------------------

    def cleanup(self, job: Job) -> None:
        """After a cancel or a failure: nothing half-imported stays on the peer."""
        cp = job.checkpoint
        if not cp.get("Transaction") and not cp.get("Created"):
            return
        peer = self.plugin.peer_client(job.request["Peer"])
        try:
            tid = cp.pop("Transaction", None)
            if tid:
                headers = {"Cookie": cp["Cookie"]} if cp.get("Cookie") else {}
                try:
                    peer.request("DELETE", "%s/%s" % (self.wire.URI_PUSH, tid), headers=headers)
                except PeerError:
                    pass  # already gone, or the peer is down: it drops idle transactions itself
            for instance_id in cp.get("Created", []):
                peer.request("DELETE", "/instances/%s" % instance_id, ok=(200, 404))
            cp["Created"], cp["Posted"], cp["Sent"] = [], [], []
        finally:
            peer.close()


# --- helpers shared with the pull job ---------------------------------------------

def speaks_protocol(peer: PeerHttp, job: Job) -> bool:
    """Whether the peer runs a transfers plugin (an empty lookup answers), refusing a peer
    that rejects our credentials rather than treating it as stock."""
    headers = {"sender-transfer-id": job.request["SenderTransferID"]}
    try:
        answer = peer.json("POST", "/transfers/lookup", [], headers=headers)
    except PeerError as exc:
        if exc.status in (404, 405):
            return False
        raise
    return isinstance(answer, dict) and isinstance(answer.get("Instances"), list)


LOOKUP_SLICE = 2000          # instances per lookup on the peer (the plugins accept 10,000 resources)
SMALL_GET_CONCURRENCY = 16   # tiny answers: the round trip limits, so many in flight
_PLURAL = {"Patient": "patients", "Study": "studies", "Series": "series"}


def md5s_on_peer(peer: PeerHttp, ids: List[str], threads: int, job: Optional[Job] = None,
                 resources: Optional[List[Dict[str, str]]] = None,
                 bulk: bool = False) -> Dict[str, Optional[str]]:
    """The peer's stored MD5 of each instance, None where it does not have it,
    in as few round trips as the peer allows (one GET per instance is 80 s for
    2,000 instances over a 40 ms link):

    - ``resources`` (the job's, holding every instance of ``ids``): one
      ``GET /{level}/{id}/instances`` each first says which instances the peer
      holds at all (404: none), and only those are asked for;
    - ``bulk`` (the peer speaks the protocol): one lookup per 2,000 instances
      lists their MD5s; it fails as a whole when one is absent, and then
    - one ``GET /instances/{id}/attachments/dicom/md5`` each decides.
    """
    found: Dict[str, Optional[str]] = {}
    held = _held_on_peer(peer, resources) if resources else None
    if held is not None:
        found.update((i, None) for i in ids if i not in held)
        ids = [i for i in ids if i in held]
    if not ids:
        return found
    if bulk:
        looked_up = _lookup_md5s(peer, ids)
        if looked_up is not None:
            found.update(looked_up)
            return found

    def one(instance_id: str) -> Optional[str]:
        try:
            _, _, data = peer.request("GET", "/instances/%s/attachments/dicom/md5" % instance_id)
        except PeerError as exc:
            if exc.status == 404:
                return None
            raise
        return data.decode("ascii", "replace").strip()

    found.update(zip(ids, parallel(ids, one, max(threads, SMALL_GET_CONCURRENCY), job)))
    return found


def _held_on_peer(peer: PeerHttp, resources: List[Dict[str, str]]) -> Optional[set]:
    """IDs of the instances the peer holds below the resources, or None when it
    cannot tell (an instance-level resource, an unexpected answer)."""
    held: set = set()
    for resource in resources:
        plural = _PLURAL.get(resource.get("Level", ""))
        if plural is None:
            return None
        try:
            items = peer.json("GET", "/%s/%s/instances" % (plural, resource["ID"]))
        except PeerError as exc:
            if exc.status == 404:
                continue   # not there: none of its instances are
            raise
        if not isinstance(items, list):
            return None
        held.update(str(item.get("ID")) for item in items if isinstance(item, dict))
    return held


def _lookup_md5s(peer: PeerHttp, ids: List[str]) -> Optional[Dict[str, Optional[str]]]:
    found: Dict[str, Optional[str]] = {}
    for start in range(0, len(ids), LOOKUP_SLICE):
        body = [{"Level": "Instance", "ID": i} for i in ids[start:start + LOOKUP_SLICE]]
        try:
            answer = peer.json("POST", "/transfers/lookup", body)
        except PeerError:
            return None
        items = answer.get("Instances") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            return None
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("MD5"), str):
                found[str(item.get("ID"))] = item["MD5"]
    if not set(ids) <= set(found):
        return None
    return {i: found[i] for i in ids}


def new_transfer_id() -> str:
    return str(uuid.uuid4())
