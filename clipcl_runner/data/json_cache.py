"""Reading the big annotation JSON files of COCO and the Karpathy splits once: parse, name bad files, cache.

Parsing the instances JSON is slow (the train file is ~450 MB), so a builder's JSON-able result is
cached under ``cache_dir``, keyed by the source files' paths, sizes and mtimes. A file that is not
valid JSON (a truncated download) fails naming the file and what to fetch again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from ..run_folder import atomic_write
from .errors import DataFormatError, DatasetMissing, prepare_command

log = logging.getLogger(__name__)

INDEX_VERSION = 1


def _stamp(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def cached(cache_dir, tag: str, sources: Sequence[Path], params: dict, build: Callable[[], object]):
    """``build()``'s JSON-able value, cached in ``cache_dir/<tag>_<hash>.json`` for these source files."""
    if cache_dir is None:
        return build()
    key = {"version": INDEX_VERSION, "tag": tag, "sources": [_stamp(p) for p in sources], "params": params}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"{tag}_{digest}.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                return stored["value"]
        except (OSError, ValueError, AttributeError):
            log.warning("ignoring unreadable cache file %s", path)
    value = build()
    atomic_write(path, json.dumps({"key": key, "value": value}))
    return value


def refetch(dataset: str, root: Path) -> str:
    """The fix for a damaged source file: fetch it again, then check the dataset."""
    return f"fetch this file again (see the instructions of {prepare_command(dataset, root)}), then run that command"


def load_json(path: Path, dataset: str, root: Path) -> dict:
    """The JSON object in ``path``; DatasetMissing when absent, DataFormatError naming it when not valid JSON."""
    if not path.is_file():
        raise DatasetMissing(dataset, path, root)
    log.info("parsing %s", path)
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataFormatError(
            path, f"not valid JSON ({error}; a truncated download?)", refetch(dataset, root)
        ) from None
    if not isinstance(value, dict):
        raise DataFormatError(path, f"expected a JSON object, found a {type(value).__name__}", refetch(dataset, root))
    return value


def field(record: dict, key: str, path: Path, dataset: str, root: Path, what: str):
    """``record[key]``, or a DataFormatError naming the file when the key is absent."""
    try:
        return record[key]
    except (KeyError, TypeError):
        raise DataFormatError(
            path, f"{what} has no '{key}' field: {str(record)[:120]}", refetch(dataset, root)
        ) from None
