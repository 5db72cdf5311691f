"""One output schema for the whole run, whatever types the input files brought.

Input files disagree: a side column is an int in one file and a string in another, null in the first thousand
rows and a struct later, absent from half the files. Every shard must still have the same schema, or
``pq.read_table("OUTPUT/data")`` fails on the user's side. So the pipeline collects the schema of every read
task's results, :func:`unify` decides one type per column (deterministically, from the schemas alone), and each
shard is :func:`conform`-ed to it before it is written.

The rule per column: types that Arrow can widen losslessly are widened (null -> anything, int32 -> int64,
int -> float, string -> large_string, structs with different fields -> their union); types it cannot (int
and string, a list and a struct) become strings, non-string values written as JSON. The report lists every
column that was turned into strings and the types it had.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc


def schema_to_json(schema: pa.Schema) -> str:
    """A schema as text that survives a JSON file (Arrow's own IPC serialization, base64-free hex)."""
    return schema.serialize().to_pybytes().hex()


def schema_from_json(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(text)))


def unify(schemas: Iterable[pa.Schema]) -> tuple[pa.Schema, dict[str, list[str]]]:
    """One schema covering every column of ``schemas``, and the columns that had to become strings.

    Column order is by first appearance; the writer reorders columns anyway.
    """
    fields: dict[str, list[pa.Field]] = {}
    for schema in schemas:
        for f in schema:
            fields.setdefault(f.name, []).append(f)
    out: list[pa.Field] = []
    stringified: dict[str, list[str]] = {}
    for name, fs in fields.items():
        typed = [f for f in fs if not pa.types.is_null(f.type)]
        if not typed:
            out.append(pa.field(name, pa.string()))
            continue
        try:
            merged = pa.unify_schemas([pa.schema([f]) for f in typed], promote_options="permissive").field(name)
            out.append(pa.field(name, merged.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            out.append(pa.field(name, pa.large_string() if any(pa.types.is_large_string(f.type) for f in typed)
                                else pa.string()))
            stringified[name] = sorted({str(f.type) for f in typed})
    return pa.schema(out), stringified


def json_string(value: object) -> str | None:
    """A value of a column that had to become strings: a string stays as it is, None stays null, anything
    else is written as JSON. The reader (within a batch) and ``conform`` (across files) both use it."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _as_json_strings(arr: pa.ChunkedArray | pa.Array, target: pa.DataType) -> pa.Array:
    return pa.array([json_string(v) for v in arr.to_pylist()], type=target)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly the columns and types of ``schema`` (missing columns are nulls)."""
    if table.schema.equals(schema):
        return table  # the common case (every file alike): no copy
    arrays, out_fields = [], []
    for f in schema:
        if f.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, f.type))
        else:
            col = table.column(f.name)
            if col.type == f.type:
                arrays.append(col)
            else:
                try:
                    arrays.append(pc.cast(col, f.type))
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
                        raise
                    arrays.append(_as_json_strings(col, f.type))
        out_fields.append(f)
    return pa.Table.from_arrays(arrays, schema=pa.schema(out_fields))
