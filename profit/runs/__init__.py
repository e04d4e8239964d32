"""Batch runs that survive crashes and grow past one machine.

    job = VerifyJob(network=net.source, options=VerifyOptions(eps=0.02))
    batch = Batch(job, image_tasks(load_images(count=200)), RunOptions(workers=2))
    finished = batch.execute()               # resume later: RunOptions(resume=batch.run_id)
    results = job.results(finished.rows)     # ImageResults, as verify_images gives them

`jobs`: picklable job descriptions whose item functions call the library on one item
(verify an eps-ball, decide a VNN-LIB instance, proof features of an image, explanations of
an instance); `store`: the SQLite results store (one table per kind, a runs table, one
transaction per finished item, no duplicates); `pool`: the local process pool (time limits,
crashed workers, Ctrl-C); `ray`: the same items as Ray tasks (optional, never the default);
`driver`: new or resumed runs of a job into the store.
"""

from profit.runs.driver import BACKENDS, DEFAULT_STORE, Batch, FinishedRun, RunOptions, default_workers
from profit.runs.jobs import (
    JOBS, ExplainJob, FeaturesJob, ImageItem, Job, VerifyJob, VnnlibJob, hard_limit, image_tasks,
    read_instances, summarize_rows,
)
from profit.runs.pool import Done, ProcessPool, Task, run_serial
from profit.runs.store import KINDS, STATUSES, RunInfo, Store, code_version

__all__ = [
    "BACKENDS", "Batch", "DEFAULT_STORE", "Done", "ExplainJob", "FeaturesJob", "FinishedRun", "ImageItem", "JOBS",
    "Job", "KINDS", "ProcessPool", "RunInfo", "RunOptions", "STATUSES", "Store", "Task", "VerifyJob",
    "VnnlibJob", "code_version", "default_workers", "hard_limit", "image_tasks", "read_instances", "run_serial",
    "summarize_rows",
]
