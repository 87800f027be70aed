#!/usr/bin/env python3
"""Opens dgr shard sets (rank lists, candidates) as other tools read them: every shard with
pyarrow and with polars, as they are. Checks the manifest's checksums and row counts, the
schema metadata, and per row that the list columns agree in length.

Usage: check_shard_sets.py DIR [DIR ...]   (a DIR holds manifest.json or candidates.json)
Needs: pip install pyarrow polars
"""
import hashlib
import json
import sys
from pathlib import Path

import polars as pl
import pyarrow.ipc as ipc

SETS = {
    "manifest.json": ("dgr.rank-list-shards", "dgr.rank-list",
                      ["passage_ids", "candidate_scores", "teacher_scores", "teacher_ranks", "labels"]),
    "candidates.json": ("dgr.candidate-shards", "dgr.candidates", ["passage_ids", "scores", "passage_keys"]),
}


def check(directory: Path) -> int:
    name = next((n for n in SETS if (directory / n).is_file()), None)
    assert name, f"{directory}: no manifest.json or candidates.json"
    set_format, record_format, lists = SETS[name]
    manifest = json.loads((directory / name).read_text())
    assert manifest["format"] == set_format and manifest["version"] == 1, manifest["format"]
    rows = 0
    for shard in manifest["shards"]:
        path = directory / shard["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"], f"{path}: checksum"
        table = ipc.open_file(path).read_all()
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        assert meta["dgr.format"] == record_format and meta["dgr.schema_version"] == "1", meta
        assert table.num_rows == shard["queries"], f"{path}: {table.num_rows} rows"
        frame = pl.read_ipc(path)
        assert frame.height == table.num_rows and frame.columns == table.column_names, path
        lengths = [frame[c].list.len().to_list() for c in lists]
        assert all(l == lengths[0] for l in lengths), f"{path}: list columns differ in length"
        if record_format == "dgr.rank-list":
            for ranks in frame["teacher_ranks"].to_list():
                assert sorted(ranks) == list(range(len(ranks))), f"{path}: ranks not a permutation"
        rows += table.num_rows
    assert rows == manifest["queries"], f"{directory}: {rows} rows, manifest says {manifest['queries']}"
    print(f"{directory}: {len(manifest['shards'])} shards, {rows} rows: pyarrow and polars read them")
    return rows


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        check(Path(arg))
