"""Benchmark of the plugin's receiving side (not a test: prints figures).

    cd /work/main && /tmp/venv/bin/python -m tests.server.bench_push [slices]

Pushes one CT series (512x512 slices, about 525 KB each) to a plugin-equipped
Orthanc on loopback, with 1 and then 4 concurrent bucket PUTs, for both
compressions, and times the PUT phase and the commit separately.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

from gui.sandbox import synthetic_studies as synth
from gui.sandbox.orthanc_process import OrthancProcess
from tests.server.push_helpers import PluginHttp, plan_push

ROUNDS = 3


def _put_all(http: PluginHttp, tid: str, bodies, workers: int) -> None:
    jobs = list(enumerate(bodies))

    def run(part):
        for index, body in part:
            answer = http.put(tid, index, body)
            assert answer.status_code == 200, answer.text

    threads = [threading.Thread(target=run, args=(jobs[n::workers],)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main(slices: int = 40) -> None:
    spec = synth.make_study_spec(900, "CT BENCH")
    files = list(synth.ct_series(spec, slices, seed=900))
    total_mb = sum(len(f) for f in files) / 2 ** 20
    with OrthancProcess(name="bench", with_accelerator=True) as server:
        http = PluginHttp(server, timeout=600)
        print("%d instances, %.1f MB, buckets of 1 MB" % (len(files), total_mb))
        for compression in ("none", "gzip"):
            plan = plan_push(files, 1024 * 1024, compression)
            wire_mb = sum(len(b) for b in plan.bodies) / 2 ** 20
            for workers in (1, 4):
                put_times, commit_times = [], []
                for _ in range(ROUNDS):
                    tid = http.create(plan)
                    start = time.perf_counter()
                    _put_all(http, tid, plan.bodies, workers)
                    put_times.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    answer = http.commit(tid)
                    commit_times.append(time.perf_counter() - start)
                    assert answer.status_code == 200, answer.text
                    for info in plan.infos:
                        server.request("DELETE", "/instances/%s" % info.id)
                put_s, commit_s = statistics.median(put_times), statistics.median(commit_times)
                print("%-4s %d PUT worker(s): %6.1f MB/s of DICOM (%.1f MB on the wire) in %.2f s;"
                      " commit of %d instances %.2f s"
                      % (compression, workers, total_mb / put_s, wire_mb, put_s, len(files), commit_s))
        http.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
