"""The Transfers queue: filters, the job's context menu, "Clear finished", and a question before
throwing away a transfer that is mostly done."""

from __future__ import annotations

import pytest

from gui.engine.events import JobState
from tests.ui.test_truthful_window import ct_study, kill_target, select_study
from tests.ui.transfers_harness import make_bed, until  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(240)


def test_filters_context_menu_and_clear_finished(make_bed, closed_port_url):
    bed = make_bed()
    study = ct_study(bed, 61, slices=2, size=64)
    ui = bed.ui
    panel = ui.panel

    async def scenario() -> None:
        await select_study(bed, study)
        ui.send_action.trigger()
        good = await bed.wait_for_job()
        assert (await bed.wait_for_report(good.id)).state == JobState.SUCCESS
        bed.config.transfers.MaxHttpRetries = 0
        kill_target(bed, closed_port_url)
        await select_study(bed, study)
        ui.send_action.trigger()
        bad = await bed.wait_for_job(exclude={good.id})
        assert (await bed.wait_for_report(bad.id)).state == JobState.FAILURE

        panel.set_filter("failed")
        assert panel.visible_job_ids() == [bad.id]
        panel.set_filter("finished")
        assert panel.visible_job_ids() == [good.id]
        panel.set_filter("active")
        assert panel.visible_job_ids() == []
        panel.set_filter("all")
        assert sorted(panel.visible_job_ids()) == sorted([good.id, bad.id])

        menu = panel.context_menu_for(bad.id)
        enabled = {a.objectName(): a.isEnabled() for a in menu.actions()}
        assert enabled == {"pauseJobAction": False, "resumeJobAction": False, "cancelJobAction": False,
                           "retryJobAction": True, "reportJobAction": True, "removeJobAction": True,
                           "limitJobAction": False}
        next(a for a in menu.actions() if a.objectName() == "reportJobAction").trigger()
        assert panel.detail.job_id == bad.id and panel.detail.commitment.banner_kind == "bad"

        assert panel.clear_button.isEnabled()
        panel.clear_button.click()
        await until(lambda: panel.model.row_of(good.id) < 0, what="the finished job to go")
        assert panel.model.row_of(bad.id) >= 0          # failures stay until dealt with

    bed.run(scenario())


def test_cancelling_a_mostly_done_transfer_asks_first(make_bed):
    bed = make_bed(throttle_mbit=4, bucket_kb=64)
    study = ct_study(bed, 62, slices=10)
    ui = bed.ui
    panel = ui.panel
    asked: list = []

    async def scenario() -> None:
        await select_study(bed, study)
        ui.send_action.trigger()
        job = await bed.wait_for_job()
        def shown_done() -> float:
            row = panel.model.job_row(job.id)
            return row.progress.fraction if row is not None and row.progress is not None else 0.0
        await until(lambda: shown_done() >= 0.5, timeout=120, what="the job half-way in the panel")
        panel.ask_cancel = lambda text: asked.append(text) or False
        panel.select_job(job.id)
        panel.buttons["cancel"].click()
        assert asked and "% done" in asked[0]
        await ui.controller.idle()
        assert not bed.engine.job(job.id).state.finished      # kept running
        panel.ask_cancel = lambda text: asked.append(text) or True
        panel.buttons["cancel"].click()
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.CANCELED and len(asked) == 2

    bed.run(scenario())


def test_speed_limits_from_the_job_menu_and_from_settings(make_bed):
    from PySide6.QtCore import Qt

    from gui.ui.transfers.jobs_model import COL_LIMIT
    bed = make_bed(bucket_kb=256)
    study = ct_study(bed, 63, slices=10)
    ui = bed.ui
    panel = ui.panel
    asked: list = []

    def limit_cell(job_id: str) -> str:
        return str(panel.model.index(panel.model.row_of(job_id), COL_LIMIT).data())

    def limit_tip(job_id: str) -> str:
        return str(panel.model.index(panel.model.row_of(job_id), COL_LIMIT).data(Qt.ItemDataRole.ToolTipRole))

    async def scenario() -> None:
        # Settings ▸ Transfers: the limit for all jobs applies to the engine at once, the one
        # per job is the default of the next job.
        dialog = bed.window.open_settings()
        assert "MaxRate" in dialog.option_edits and "MaxTotalRate" in dialog.option_edits
        dialog.option_edits["MaxTotalRate"].setText("65536")
        dialog.option_edits["MaxRate"].setText("4096")
        assert dialog.save() is True
        assert bed.engine.global_rate.rate == 65536 * 1024

        await select_study(bed, study)
        ui.send_action.trigger()
        job = await bed.wait_for_job()
        # The job's row and header show the tighter cap, the tooltip both and where they are set.
        assert limit_cell(job.id) == "≤ 4.0 MB/s"
        assert "4.0 MB/s for this transfer" in limit_tip(job.id)
        assert "64.0 MB/s for all transfers together" in limit_tip(job.id)
        detail = panel.detail
        assert detail.job_id == job.id and detail.limit_label.isVisibleTo(bed.window)
        assert detail.limit_label.text() == "speed limit ≤ 4.0 MB/s"

        menu = panel.context_menu_for(job.id)
        limit = next(a for a in menu.actions() if a.objectName() == "limitJobAction")
        assert limit.isEnabled() and limit.text() == "Speed limit… (≤ 4.0 MB/s)"
        panel.ask_rate = lambda current: asked.append(current) or 2048
        limit.trigger()
        assert asked == [4096]                              # the default from Settings
        assert bed.engine.job_rate(job.id).rate == 2048 * 1024
        assert job.options.MaxRate == 2048
        assert limit_cell(job.id) == "≤ 2.0 MB/s" and detail.limit_label.text() == "speed limit ≤ 2.0 MB/s"
        report = await bed.wait_for_report(job.id)
        assert report.state == JobState.SUCCESS
        spent = bed.engine.job_rate(job.id)
        # The job's bytes went through its cap (and the global one), and the cap made it wait.
        assert spent.total >= report.bytes and spent.waited > 0
        assert bed.engine.global_rate.total >= spent.total
        assert any(m.startswith("Speed limit:") and "2048 KB/s" in m for m in ui.notifier.messages)
        # Finished: the cap it ran under, and what went through it.
        assert limit_cell(job.id) == "≤ 2.0 MB/s" and "Through its cap:" in limit_tip(job.id)
        finished = panel.context_menu_for(job.id)
        assert not next(a for a in finished.actions() if a.objectName() == "limitJobAction").isEnabled()

        # No cap of its own and none for all: nothing beside the speed, the header says nothing.
        dialog = bed.window.open_settings()
        dialog.option_edits["MaxTotalRate"].setText("0")
        assert dialog.save() is True
        bed.engine.set_job_rate(job.id, 0)
        panel.set_job_limit(job.id, 0)
        assert limit_cell(job.id) == "–" and not detail.limit_label.isVisibleTo(bed.window)

    bed.run(scenario())
