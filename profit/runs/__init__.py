"""Batch runs that survive crashes and grow past one machine.

    job = VerifyJob(network=net.source, options=VerifyOptions(eps=0.02))
    batch = Batch(job, image_tasks(load_images(count=200)), RunOptions(workers=2))
    finished = batch.execute()               # resume later: RunOptions(resume=batch.run_id)
    results = job.results(finished.rows)     # ImageResults, as verify_images gives them

`jobs`: picklable job descriptions whose item functions call the library on one item
(verify an eps-ball, decide a VNN-LIB instance, proof features of an image, explanations of
an instance, contrastive explanations of an image with its id and meta data); `store`: the
SQLite results store (one table per kind, a runs table, one transaction per finished item,
no duplicates); `pool`: the local process pool (time limits, crashed workers, Ctrl-C); `ray`:
the same items as Ray tasks (optional, never the default); `driver`: new or resumed runs of a
job into the store, and `explain_many` (CEM of many images in a pool, keyed by id, no store).
"""

import importlib
from typing import TYPE_CHECKING

_MODULES = {  # the submodule that defines each public name (loaded on first use: the CLI's
    # argument tables need the constants without importing every job's library)
    "profit.runs.driver": ("Batch", "FinishedRun", "RunOptions", "default_workers", "explain_many"),
    "profit.runs.jobs": ("JOBS", "CEMItem", "CEMJob", "ExplainJob", "FeaturesJob", "ImageItem", "Job", "VerifyJob",
                         "VnnlibJob", "cem_tasks", "hard_limit", "image_tasks", "read_instances", "summarize_rows"),
    "profit.runs.pool": ("BACKENDS", "Done", "ProcessPool", "Task", "run_serial"),
    "profit.runs.store": ("DEFAULT_STORE", "KINDS", "STATUSES", "RunInfo", "Store", "code_version"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    """Import a public name's submodule on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'profit.runs' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from profit.runs.driver import Batch, FinishedRun, RunOptions, default_workers, explain_many
    from profit.runs.jobs import (
        JOBS, CEMItem, CEMJob, ExplainJob, FeaturesJob, ImageItem, Job, VerifyJob, VnnlibJob, cem_tasks, hard_limit,
        image_tasks, read_instances, summarize_rows,
    )
    from profit.runs.pool import BACKENDS, Done, ProcessPool, Task, run_serial
    from profit.runs.store import DEFAULT_STORE, KINDS, STATUSES, RunInfo, Store, code_version
