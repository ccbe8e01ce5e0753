"""Hugging Face datasets on disk, the way Seg-Zero publishes its training and evaluation sets.

Training (``refCOCOg_2k_840``: ``image``, ``problem``, ``solution``) and evaluation (RefCOCO
family: ``image``, ``mask``, ``text``, ...) read their rows here, from local paths only (no
hub): a ``.parquet`` file, a folder of parquet files (a hub snapshot, e.g.
``data/test-00000-of-00001.parquet``) or a ``save_to_disk`` folder. Rows are plain dicts and
image columns keep their encoded bytes (``{"bytes": ..., "path": ...}``), so the reader that
decodes them bounds the size first; parquet is streamed a few rows at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Decoded dataset images are bounded (about 8k x 6k), well below PIL's decompression-bomb
# limit (~89 MP): a broken file must not take a run down.
MAX_IMAGE_PIXELS = 50_000_000
PARQUET_BATCH_ROWS = 8


class DatasetError(RuntimeError):
    """The dataset cannot be opened at all (missing path, unknown format, unreadable file)."""


@dataclass(frozen=True)
class Row:
    source: str  # the parquet file or saved folder the row came from
    index: int  # row number within ``source``
    values: dict[str, Any]


def is_saved_dataset(path: Path) -> bool:
    """A ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` folder."""
    return path.is_dir() and (
        (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()
    )


def parquet_files(path: Path) -> list[Path]:
    """The parquet file itself, or every parquet file below a folder, in name order."""
    if path.is_file():
        return [path] if path.suffix == ".parquet" else []
    return sorted(path.rglob("*.parquet")) if path.is_dir() else []


def is_table(path: Path) -> bool:
    """Whether ``path`` holds a dataset this module reads."""
    return is_saved_dataset(path) or bool(parquet_files(path))


def read_rows(
    path: str | Path,
    *,
    columns: Sequence[str] = (),
    required: Sequence[str] = (),
    split: str | None = None,
) -> Iterator[Row]:
    """Rows in file and row order. ``columns`` limits what is read (those present; all when
    empty); a missing ``required`` column raises :class:`DatasetError`. A saved
    ``DatasetDict`` gives its ``split`` (or its only split)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if is_saved_dataset(path):
        yield from _saved_rows(path, columns, required, split)
        return
    files = parquet_files(path)
    if not files:
        raise DatasetError(f"{path}: no parquet files or saved dataset found")
    for file in files:
        yield from _parquet_rows(file, columns, required)


def _missing(where: Path, names: Sequence[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in names]
    if missing:
        raise DatasetError(f"{where} lacks the columns {missing}")


def _parquet_rows(file: Path, columns: Sequence[str], required: Sequence[str]) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DatasetError(f"{file} is not a readable parquet file: {exc}") from exc
    names = parquet.schema_arrow.names
    _missing(file, names, required)
    wanted = [c for c in columns if c in names] or None
    index = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
        for values in batch.to_pylist():
            yield Row(str(file), index, values)
            index += 1


def _saved_rows(
    path: Path, columns: Sequence[str], required: Sequence[str], split: str | None
) -> Iterator[Row]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for a broken folder
        raise DatasetError(f"{path} is not a readable save_to_disk dataset: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split is not None and split in loaded:
            loaded = loaded[split]
        elif len(loaded) == 1:
            loaded = next(iter(loaded.values()))
        else:
            raise DatasetError(
                f"{path} holds the splits {list(loaded)}: point at one split's folder"
            )
    _missing(path, loaded.column_names, required)
    if columns:
        loaded = loaded.select_columns([c for c in columns if c in loaded.column_names])
    for column, feature in loaded.features.items():
        if isinstance(feature, datasets.Image):  # keep the bytes; the reader decodes, bounded
            loaded = loaded.cast_column(column, datasets.Image(decode=False))
    for index, values in enumerate(loaded):
        yield Row(str(path), index, values)
