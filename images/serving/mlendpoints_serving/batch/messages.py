"""What the coordinator and a worker process say to each other over their pipe: typed, pickled messages.

Coordinator -> worker: `Task` (score this mini-batch, this attempt). Worker -> coordinator:
`Ready` once the model (or the script's init()) loaded, else `InitFailed`; then one `Done`
(committed, with its manifest) or `Failed` (raised; the coordinator retries) per `Task`.
Closing the pipe tells an idle worker to exit.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlendpoints_serving.batch.parts import Manifest
from mlendpoints_serving.batch.plan import MiniBatch


@dataclass(frozen=True)
class Task:
    batch: MiniBatch
    attempt: int  # 1 for the first try


@dataclass(frozen=True)
class Ready:
    pass


@dataclass(frozen=True)
class InitFailed:
    error: str  # "<ExceptionType>: <message>"


@dataclass(frozen=True)
class Done:
    manifest: Manifest


@dataclass(frozen=True)
class Failed:
    error: str  # "<ExceptionType>: <message>"


WorkerMessage = Ready | InitFailed | Done | Failed
