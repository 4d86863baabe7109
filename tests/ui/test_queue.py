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
                           "retryJobAction": True, "reportJobAction": True, "removeJobAction": True}
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
