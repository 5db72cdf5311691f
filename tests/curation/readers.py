"""Reading helpers shared by the reader tests."""

import pyarrow as pa

from curation.io import ReadAccount, ReaderConfig, plan_reads, read_task


def read_all(inputs, text_column="text", cfg=ReaderConfig(), reserved=frozenset()):
    """All rows of ``inputs``; checks on the way that each task yields one row per record it counted."""
    tables = []
    for task in plan_reads(inputs, text_column, cfg, reserved).tasks:
        account = ReadAccount(task.source)
        got = list(read_task(task, text_column, cfg, reserved, account))
        assert sum(t.num_rows for t in got) == account.records, task
        tables += got
    return pa.concat_tables(tables, promote_options="permissive").to_pylist() if tables else []
