"""The transfer engine: pure asyncio, no Qt. Driven by the UI, the CLI and tests."""

from gui.engine.events import (BucketProgress, BucketState, CommitmentReport, EngineEvent,
                               InstanceVerdict, JobFinished, JobProgress, JobState, TransferMode)
from gui.engine.transfer_engine import EngineError, Job, PlanSummary, TransferEngine

__all__ = ["TransferEngine", "Job", "PlanSummary", "EngineError", "JobState", "BucketState",
           "TransferMode", "BucketProgress", "JobProgress", "InstanceVerdict", "CommitmentReport",
           "JobFinished", "EngineEvent"]
