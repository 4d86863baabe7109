"""``PullTransfer`` jobs: this Orthanc retrieves resources from a peer with the protocol.

The peer's lookup gives the instances with sizes and MD5s; instances this
server already holds with the same MD5 are left out; the others are cut
into buckets (with the pull URL limit) and fetched with
``GET /transfers/chunks`` by ``Threads`` workers. Each bucket goes straight
into a staging transaction of this plugin (the push receiver's own, so the
bucket's size is checked on arrival), and the job ends with that
transaction's commit: every MD5 checked before anything is imported, all
or nothing.
"""

from __future__ import annotations

import threading
from typing import Any, List

from .codec import SPLIT16, SPLIT16_RLE, decode_bucket
from .commit import commit
from .errors import NETWORK_PROTOCOL, UNKNOWN_RESOURCE, PluginError
from .jobs import Job
from .peer_http import PeerError, PeerHttp
from .send_job import UPLOAD_SHARE, PeerJobRunner, Speed, infos_of, parallel

MB = 1024 * 1024


class PullRunner(PeerJobRunner):
    def _lookup(self, job: Job, peer: PeerHttp) -> List[Any]:
        headers = {self.wire.SENDER_TRANSFER_ID_HEADER: job.request["SenderTransferID"]}
        try:
            answer = peer.json("POST", self.wire.URI_LOOKUP, job.request["Resources"], headers=headers)
        except PeerError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            if exc.status == 404 and body.get("OrthancStatus") == 17 and "lookup" in str(body.get("Details", "")):
                raise PluginError(UNKNOWN_RESOURCE, "peer %r does not have what was asked: %s"
                                  % (peer.peer.name, body.get("Details")))
            if exc.status in (404, 405) and not body.get("Details"):
                raise PluginError(UNKNOWN_RESOURCE, "peer %r has no transfers plugin (POST %s answered %d):"
                                  " pulling needs one there" % (peer.peer.name, self.wire.URI_LOOKUP, exc.status))
            raise
        originator = job.request.get("Originator")
        if originator and isinstance(answer, dict) and answer.get("Originator") not in (None, originator):
            raise PluginError(UNKNOWN_RESOURCE, "peer %r is not the server that asked for this pull (its"
                              " Originator is %s, the request said %s)"
                              % (peer.peer.name, answer.get("Originator"), originator))
        try:
            return self.wire.parse_lookup_answer(answer)
        except self.wire.WireFormatError as exc:
            raise PluginError(NETWORK_PROTOCOL, "peer %r answered the lookup with bad JSON: %s"
                              % (peer.peer.name, exc))

    def _run(self, job: Job, peer: PeerHttp) -> None:
        cp = job.checkpoint
        settings = self.plugin.job_settings
        store = self.plugin.store
        if "Instances" not in cp:
            cp["Instances"] = [i.to_json() for i in self._lookup(job, peer)]
        infos = infos_of(self.wire, cp["Instances"])
        job.publish(TotalInstances=len(infos), TotalSizeMB=sum(i.size for i in infos) // MB,
                    SenderTransferID=job.request["SenderTransferID"])
        job.check_stop()
        if "ToFetch" not in cp:
            local = self.plugin.local_md5s([i.id for i in infos])
            cp["ToFetch"] = [i.id for i in infos if local.get(i.id) != i.md5]
            cp["AlreadyHere"] = len(infos) - len(cp["ToFetch"])
            self.plugin.registry.save(job)
        wanted = set(cp["ToFetch"])
        to_fetch = [i for i in infos if i.id in wanted]
        job.publish(Mode="pull", Commitment=self._commitment(job, len(infos)))
        if not to_fetch:
            job.publish(1.0)
            return
        compression = job.request["Compression"]
        cp.setdefault("BucketSize", settings.bucket_size)
        buckets = self.wire.plan_buckets(to_fetch, int(cp["BucketSize"]), pull_base_url=peer.url,
                                         compression=compression)
        for attempt in range(2):
            txn = store.lookup(cp["Transaction"]) if cp.get("Transaction") else None
            if txn is None:
                # Staged buckets do not survive a restart of Orthanc: those are fetched again.
                # Staged uncompressed: each answer is decoded here, in whichever
                # encoding the peer chose (gzip, or the codec when it honours it).
                txn = store.create(self.wire.PushRequest(to_fetch, buckets, "none"))
                cp["Transaction"] = txn.id
                self.plugin.registry.save(job)
            try:
                self._fetch_and_commit(job, peer, buckets, txn)
                break
            except PluginError as exc:
                if attempt == 0 and store.lookup(txn.id) is None and exc.code == UNKNOWN_RESOURCE[0]:
                    # Our staging transaction was discarded as least recently used
                    # (MaxPushTransactions): stage everything once more in a new one.
                    cp.pop("Transaction", None)
                    continue
                if exc.instances:
                    cp["Problems"] = exc.instances[:100]
                raise
        cp.pop("Transaction", None)
        cp["Verified"] = len(to_fetch)
        job.publish(1.0, Commitment=self._commitment(job, len(infos)), CompletedHttpQueries=peer.queries)

    def _fetch_and_commit(self, job: Job, peer: PeerHttp, buckets: List[Any], txn: Any) -> None:
        store = self.plugin.store
        compression = job.request["Compression"]
        total = sum(b.total_size for b in buckets)
        with txn.lock:
            received = set(txn.received)
        done = [sum(buckets[i].total_size for i in received)]
        count = [len(received)]
        lock = threading.Lock()
        speed = Speed()
        job.publish(TotalBuckets=len(buckets), ReceivedBuckets=len(received), ResumedFromBucket=len(received))

        # With gzip, the strongest codec this server honours (the URL offers
        # split16-gzip too, to a source that knows only that one); the source
        # answers in one that pays on the data, or gzip (its Content-Type says).
        honoured = self.plugin.options.codecs
        asked = next((c for c in (SPLIT16_RLE, SPLIT16) if c in honoured), None) if compression == "gzip" else None
        uri_compression = asked or compression

        def fetch(index: int) -> None:
            bucket = buckets[index]
            _, headers, body = peer.request("GET", self.wire.chunks_uri(bucket, uri_compression))
            speed.add(len(body))
            encoding = compression
            used = self.wire.codec_of_content_type(headers.get("content-type", ""))
            if compression == "gzip" and asked is not None and used is not None:  # any codec decodes here
                encoding = used
                job.publish(Codec=used)
            raw = decode_bucket(body, encoding, bucket.total_size, "bucket %d from peer %r" % (index, peer.peer.name))
            staged = store.acquire(txn.id)
            try:
                store.put_bucket(staged, str(index), bytes(raw))  # its size was checked while decoding
            finally:
                store.release(staged)
            with lock:
                done[0] += bucket.total_size
                count[0] += 1
                fraction = done[0] / total if total else 1.0
            job.publish(UPLOAD_SHARE * fraction, DownloadedSizeMB=speed.bytes // MB, ReceivedBuckets=count[0],
                        NetworkSpeedKBs=speed.kbs(), CompletedHttpQueries=peer.queries)

        parallel([i for i in range(len(buckets)) if i not in received], fetch,
                 self.plugin.job_settings.threads, job)
        job.check_stop()
        commit(store, self.plugin.importer, txn)

    @staticmethod
    def _commitment(job: Job, total: int) -> dict:
        cp = job.checkpoint
        verified, present = int(cp.get("Verified", 0)), int(cp.get("AlreadyHere", 0))
        return {"Verified": verified, "AlreadyHere": present,
                "Pending": max(0, total - verified - present), "Problems": cp.get("Problems", [])}

    def cleanup(self, job: Job) -> None:
        tid = job.checkpoint.pop("Transaction", None)
        if tid and self.plugin.store.lookup(tid) is not None:
            try:
                self.plugin.store.discard(tid)
            except PluginError:
                pass  # discarded meanwhile
