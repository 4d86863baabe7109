"""Local files dropped on a pane: DICOM ones are uploaded and verified, others skipped."""

from __future__ import annotations

from pathlib import Path

from gui.engine import BucketProgress, BucketState, JobState, TransferMode
from gui.engine.local_upload import scan_files
from tests.engine.helpers import make_engine, peer, run, small_options, wait_for


def write_folder(root: Path, files) -> None:
    (root / "series" / "deeper").mkdir(parents=True)
    for n, data in enumerate(files):
        folder = root / "series" / ("deeper" if n % 2 else "")
        (folder / f"img{n}.dcm").write_bytes(data)
    (root / "series" / "notes.txt").write_text("not an image")
    (root / "series" / "empty.dcm").write_bytes(b"")
    (root / "copy.dcm").write_bytes(files[0])     # the same instance twice


def test_upload_folder(orthanc_factory, tmp_path, ct_study_files, small_study_files):
    target = orthanc_factory("target")
    files = ct_study_files[:3] + small_study_files[:5]
    write_folder(tmp_path / "drop", files)

    async def go():
        engine = make_engine(tmp_path / "data")
        await engine.start()
        try:
            job, skipped = await engine.upload_files(peer(target), [tmp_path / "drop"])
            return job, skipped, await job.wait()
        finally:
            await engine.close()

    job, skipped, report = run(go())
    reasons = {path.name: reason for path, reason in skipped}
    assert reasons["notes.txt"] == "not a DICOM file"
    assert reasons["empty.dcm"] == "empty file"
    assert "same instance as" in (reasons.get("copy.dcm") or reasons.get("img0.dcm"))
    assert report.state is JobState.SUCCESS and report.mode is TransferMode.UPLOAD
    assert report.verified == report.planned == len(files)
    # The Orthanc IDs computed locally are the ones the target assigned.
    stored = target.instance_md5s()
    found, _ = scan_files([tmp_path / "drop"])
    assert {f.info.id: f.info.md5 for f in found} == stored


def test_nothing_to_upload(orthanc_factory, tmp_path):
    target = orthanc_factory("target")
    (tmp_path / "a.txt").write_text("hello")

    async def go():
        engine = make_engine(tmp_path / "data")
        await engine.start()
        try:
            return await engine.upload_files(peer(target), [tmp_path / "a.txt", tmp_path / "missing"])
        finally:
            await engine.close()

    job, skipped = run(go())
    assert job is None
    assert [reason for _, reason in skipped][0] == "not a DICOM file"
    assert skipped[1][1].startswith("cannot read")



def test_upload_interrupted_by_quitting_resumes_later(orthanc_factory, tmp_path, long_study_files):
    target = orthanc_factory("target")
    folder = tmp_path / "drop"
    folder.mkdir()
    for n, data in enumerate(long_study_files):
        (folder / f"{n:03}.dcm").write_bytes(data)
    data_dir = tmp_path / "data"

    async def first_session():
        engine = make_engine(data_dir, small_options(Threads=1))
        await engine.start()
        done = set()
        engine.subscribe(lambda e: isinstance(e, BucketProgress) and e.state is BucketState.DONE
                         and done.update(e.instance_ids))
        job, _ = await engine.upload_files(peer(target), [folder])
        await wait_for(lambda: len(done) >= 2, what="two files uploaded")
        await engine.close()
        return job.id

    job_id = run(first_session())

    async def second_session():
        engine = make_engine(data_dir, small_options(Threads=1))
        await engine.start()
        try:
            job = engine.job(job_id)
            assert job.state is JobState.PAUSED and job.resources == []
            await engine.resume(job_id)
            return await job.wait()
        finally:
            await engine.close()

    report = run(second_session())
    assert report.state is JobState.SUCCESS and report.verified == len(long_study_files)
    assert report.skipped >= 2 and report.transferred == len(long_study_files) - report.skipped
