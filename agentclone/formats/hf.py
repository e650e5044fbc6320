"""Hugging Face ``datasets`` and Parquet: reading records from tables, writing them as Parquet or as a
dataset folder with a dataset card.

Reading (``iter_table_records``) yields ``(where, record)`` pairs, batch by batch, from

- a ``.parquet`` file (``pyarrow``'s ``iter_batches``);
- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``load_from_disk``,
  memory-mapped, read in slices; a ``Dataset`` folder holds one split, read whatever ``split`` says);
- any other folder: the data files ``datasets`` itself would find there (a dataset card's ``configs``,
  or the hub's folder conventions such as ``data/train-*.parquet``), read file by file: Parquet as
  above, JSON / JSON Lines with the streaming JSON reader;
- the hub (``iter_hub_records``): ``datasets.load_dataset(name, split=..., streaming=True)``.

Arrow stores every column for every row, so a field a record did not have reads back as null: nulls
inside table rows are dropped (``drop_nulls``), and a null means "absent" to the formats (a turn with a
null ``loss`` has no flag). ``where`` names the file and the row (``data/train-00000-of-00001.parquet:
row 7``), for ``FormatError`` messages.

Writing needs one Arrow schema for all rows, while a format's records may leave out optional fields or
hold ``null`` in some rows. ``write_parquet`` reads the records twice: the first pass spools them to an
unnamed temporary file and merges the type of every field (``infer_type`` / ``merge_types``: absent or
null fits any type, an int column with a float becomes float, a list's items and an object's keys merge
recursively); a field with two types (a string in one record, a list in another) is a ``FormatError``
naming the record and field, before anything is written. The second pass writes the Parquet file with
that schema (as ``datasets.Features``, stored in the file's metadata and in the card). An object that is
empty in every record (``{}``) has no Arrow struct type: it is stored as null (read back: absent).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from agentclone.errors import UserError
from agentclone.formats.base import FormatError, RecordError, iter_records

BATCH = 256  # rows per Arrow batch read, and per Parquet row group written (x4)
SPLIT_FILE = "{split}-00000-of-00001.parquet"
CARD_TAG = "agentclone"  # in the card's tags: marks a folder agentclone may replace


def drop_nulls(value: Any) -> Any:
    """``value`` with every ``None`` under an object key removed, recursively (Arrow's null = absent)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


# -- reading ----------------------------------------------------------------------------------------


def is_table_source(path: Path) -> bool:
    """Whether ``import`` reads ``path`` as a table (a ``.parquet`` file or a folder) rather than JSON."""
    return path.is_dir() or path.suffix == ".parquet"


def iter_table_records(path: Path, split: str = "train") -> Iterator[tuple[str, dict]]:
    """``(where, record)`` for each row of a Parquet file, a ``save_to_disk`` folder or a dataset folder."""
    if path.is_file():
        yield from _parquet_rows(path)
    elif (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        yield from _saved_rows(path, split)
    else:
        yield from _folder_rows(path, split)


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH):
            for record in batch.to_pylist():
                yield f"{path}: row {row}", drop_nulls(record)
                row += 1
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{path}: not a readable Parquet file (at row {row}: {exc})") from None


def _missing_split(path: Path | str, split: str, splits: Iterable[str]) -> FormatError:
    known = ", ".join(map(str, splits)) or "none"
    return FormatError(f"{path}: no split {split!r}; its splits: {known} (pass --split)")


def _saved_rows(path: Path, split: str) -> Iterator[tuple[str, dict]]:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable save_to_disk folder ({exc})") from None
    where = path
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise _missing_split(path, split, dataset)
        dataset, where = dataset[split], path / split
    table = dataset.with_format("arrow")
    for start in range(0, len(dataset), BATCH):
        for row, record in enumerate(table[start : start + BATCH].to_pylist(), start):
            yield f"{where}: row {row}", drop_nulls(record)


def _folder_rows(path: Path, split: str) -> Iterator[tuple[str, dict]]:
    from datasets import load_dataset_builder

    try:
        with tempfile.TemporaryDirectory() as cache:  # only its data files are wanted: no cache, no lock files
            files = load_dataset_builder(str(path), cache_dir=cache).config.data_files or {}
    except (OSError, ValueError) as exc:  # no data files, or files datasets cannot tell apart
        raise FormatError(f"{path}: no dataset found in this folder ({exc})") from None
    if split not in files:
        raise _missing_split(path, split, files)
    for name in files[split]:
        file = Path(name)
        if file.suffix == ".parquet":
            yield from _parquet_rows(file)
        elif file.suffix in (".json", ".jsonl"):
            for index, line, record in iter_records(file):
                yield f"{file}: record {index} (line {line})", record
        else:
            raise FormatError(f"{file}: agentclone reads Parquet, JSON and JSON Lines data files, not {file.suffix!r}")


def hub_unreachable(name: str, exc: BaseException) -> UserError:
    return UserError(
        f"cannot reach the Hugging Face Hub to load {name!r} ({exc}): download the dataset where there is a network "
        f"(`huggingface-cli download {name} --repo-type dataset --local-dir DIR`) and pass its folder instead: "
        "`agentclone import DIR --from FORMAT ...`")


def iter_hub_records(name: str, split: str = "train") -> Iterator[tuple[str, dict]]:
    """``(where, record)`` for each row of hub dataset ``name``, streamed."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    try:
        rows = iter(datasets.load_dataset(name, split=split, streaming=True))
    except ConnectionError as exc:
        raise hub_unreachable(name, exc) from None
    except DatasetNotFoundError as exc:
        raise UserError(f"no dataset {name!r} on the Hugging Face Hub ({exc})") from None
    except ValueError as exc:  # an unknown split names the known ones
        raise FormatError(f"{name} (hub): {exc}") from None
    row = 0
    while True:
        try:
            record = next(rows)
        except StopIteration:
            return
        except ConnectionError as exc:
            raise hub_unreachable(name, exc) from None
        yield f"{name} (hub, split {split}): row {row}", drop_nulls(record)
        row += 1


# -- one schema for all rows ----------------------------------------------------------------------
# A type is ("null",), ("bool",), ("int64",), ("float64",), ("string",), ("list", item) or
# ("struct", {key: type}) (keys in first-seen order).

NULL = ("null",)


def _describe(t: tuple) -> str:
    return {"list": "a list", "struct": "an object"}.get(t[0], t[0].replace("64", ""))


def merge_types(a: tuple, b: tuple, field: str) -> tuple:
    """The type of a field holding values of types ``a`` and ``b`` (``RecordError`` when there is none)."""
    if a == NULL or a == b:
        return b
    if b == NULL:
        return a
    if {a[0], b[0]} == {"int64", "float64"}:
        return ("float64",)
    if a[0] == b[0] == "list":
        return ("list", merge_types(a[1], b[1], f"{field}[]"))
    if a[0] == b[0] == "struct":
        keys = dict(a[1])
        for key, t in b[1].items():
            keys[key] = merge_types(keys[key], t, f"{field}.{key}" if field else key) if key in keys else t
        return ("struct", keys)
    raise RecordError(field or "(record)", f"is {_describe(b)} here but {_describe(a)} in earlier records: a Parquet "
                      "column has one type (make the field one type in every record)")


def infer_type(value: Any, field: str = "") -> tuple:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return ("bool",)
    if isinstance(value, int):
        return ("int64",)
    if isinstance(value, float):
        return ("float64",)
    if isinstance(value, str):
        return ("string",)
    if isinstance(value, list):
        item = NULL
        for v in value:
            item = merge_types(item, infer_type(v, f"{field}[]"), f"{field}[]")
        return ("list", item)
    if isinstance(value, dict):
        return ("struct", {k: infer_type(v, f"{field}.{k}" if field else k) for k, v in value.items()})
    raise RecordError(field or "(record)", f"a {type(value).__name__} has no Parquet type")


def to_feature(t: tuple):
    """The ``datasets`` feature of a type (an object with no keys in any record: null)."""
    from datasets import List, Value

    if t[0] == "list":
        return List(to_feature(t[1]))
    if t[0] == "struct":
        return {k: to_feature(v) for k, v in t[1].items()} if t[1] else Value("null")
    return Value(t[0])


def _empty_structs_to_null(value: Any, t: tuple) -> Any:
    """``value`` with objects whose type has no keys replaced by None (they are stored as null)."""
    if value is None:
        return None
    if t[0] == "struct":
        return {k: _empty_structs_to_null(value.get(k), kt) for k, kt in t[1].items()} if t[1] else None
    if t[0] == "list":
        return [_empty_structs_to_null(v, t[1]) for v in value]
    return value


def _has_empty_struct(t: tuple) -> bool:
    if t[0] == "struct":
        return not t[1] or any(_has_empty_struct(v) for v in t[1].values())
    return t[0] == "list" and _has_empty_struct(t[1])


# -- writing --------------------------------------------------------------------------------------


@dataclass
class TableInfo:
    features: Any  # datasets.Features of the rows written
    rows: int
    num_bytes: int  # their size in Arrow (what datasets calls a split's num_bytes)


def _write_rows(records: Iterable[dict], target: Path, label: Path) -> TableInfo:
    """Write ``records`` as the Parquet file ``target`` (two passes through an unnamed spool file next to it).

    A record that does not fit the others' types raises ``FormatError`` naming ``label`` (the output), the
    record's index and the field, before ``target`` is opened.
    """
    import pyarrow.parquet as pq
    from datasets import Features

    schema_type: tuple = ("struct", {})
    rows = 0
    with tempfile.TemporaryFile(dir=target.parent if target.parent.exists() else None) as spool:
        for index, record in enumerate(records):
            try:
                schema_type = merge_types(schema_type, infer_type(record), "")
            except RecordError as exc:
                raise FormatError(f"{label}: record {index}: field '{exc.field}': {exc}") from None
            spool.write(json.dumps(record, ensure_ascii=False).encode("utf-8", errors="backslashreplace") + b"\n")
            rows += 1
        features = Features(to_feature(schema_type) if schema_type[1] else {})
        empty = _has_empty_struct(schema_type)
        spool.seek(0)
        num_bytes = 0
        with pq.ParquetWriter(str(target), features.arrow_schema) as writer:
            batch: list[dict] = []
            for line in spool:
                record = json.loads(line)
                batch.append(_empty_structs_to_null(record, schema_type) if empty else record)
                if len(batch) == BATCH * 4:
                    num_bytes += _write_batch(writer, batch, features)
                    batch = []
            if batch:
                num_bytes += _write_batch(writer, batch, features)
    return TableInfo(features=features, rows=rows, num_bytes=num_bytes)


def _write_batch(writer, batch: list[dict], features) -> int:
    import pyarrow as pa

    table = pa.Table.from_pylist(batch, schema=features.arrow_schema)
    writer.write_table(table)
    return table.nbytes


def write_parquet(records: Iterable[dict], path: Path) -> TableInfo:
    """Write ``records`` as one Parquet file, atomically (a hidden temporary file renamed into place)."""
    from agentclone.data import AtomicFile

    out = AtomicFile(path, hidden=True)
    try:
        info = _write_rows(records, Path(out.tmp), path)
    except BaseException:
        out.abort()
        raise
    out.commit()
    return info


def _card_of(folder: Path) -> str | None:
    card = folder / "README.md"
    return card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None


def check_dataset_folder(folder: Path) -> None:
    """Refuse an output folder agentclone did not write (one it wrote, or an empty one, is replaced)."""
    if folder.exists() and not folder.is_dir():
        raise FormatError(f"{folder}: exists and is not a folder (--hf-dataset writes a folder)")
    if folder.is_dir() and any(folder.iterdir()):
        card = _card_of(folder) or ""
        if f"- {CARD_TAG}\n" not in card.split("\n---\n", 1)[0]:
            raise FormatError(f"{folder}: a folder that agentclone did not write is in the way (no agentclone "
                              "dataset card in it): remove it or choose another --output")


def write_dataset_folder(records: Iterable[dict], folder: Path, card, split: str = "train") -> TableInfo:
    """Write ``folder/data/{split}-00000-of-00001.parquet`` and ``folder/README.md`` (``card(info) -> text``),
    atomically: everything is written to a hidden temporary folder next to ``folder``, which replaces it
    only when every record was good; a failure removes the temporary folder and leaves ``folder`` as it was."""
    from agentclone.data import AtomicFolder

    with AtomicFolder(folder, check=check_dataset_folder) as staged:
        (staged.tmp / "data").mkdir()
        info = _write_rows(records, staged.tmp / "data" / SPLIT_FILE.format(split=split), folder)
        if not info.rows:  # datasets cannot load a Parquet file without rows and columns
            raise FormatError(f"{folder}: no records to write (a dataset folder needs at least one)")
        (staged.tmp / "README.md").write_text(card(info), encoding="utf-8")
    return info


# -- the dataset card -------------------------------------------------------------------------------


def card_yaml(info: TableInfo, split: str = "train") -> str:
    """The card's YAML front matter: ``configs`` (where the data files are) and ``dataset_info``."""
    import yaml

    meta = {
        "configs": [{"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*.parquet"}]}],
        "dataset_info": {
            "features": info.features._to_yaml_list(),
            "splits": [{"name": split, "num_bytes": info.num_bytes, "num_examples": info.rows}],
        },
        "tags": [CARD_TAG, "agent-trajectories"],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def describe_features(features: Any, indent: str = "") -> list[str]:
    """One markdown bullet per field (nested fields indented under theirs)."""
    from datasets import List, Value

    lines = []
    for name, feature in features.items():
        item = feature.feature if isinstance(feature, List) else None
        if isinstance(feature, dict) or isinstance(item, dict):
            kind = "list of objects" if item is not None else "object"
            lines.append(f"{indent}- `{name}`: {kind}")
            lines.extend(describe_features(item if item is not None else feature, indent + "  "))
        elif item is not None:
            lines.append(f"{indent}- `{name}`: list of {getattr(item, 'dtype', item)}")
        else:
            lines.append(f"{indent}- `{name}`: {feature.dtype if isinstance(feature, Value) else feature}")
    return lines


def dataset_card(fmt, info: TableInfo, stats, command: str | None, folder: Path, split: str = "train") -> str:
    """The dataset card (``README.md``) of a folder ``export --hf-dataset`` writes: YAML front matter that
    ``datasets.load_dataset`` reads, then what the format and its fields are, the loss convention, the counts
    and the command that made it."""
    import inspect
    import sys

    doc = inspect.getdoc(sys.modules.get(type(fmt).__module__)) or inspect.getdoc(type(fmt)) or fmt.description
    n = stats.records
    if fmt.carries_loss:
        loss = (f"Per-turn loss flags are kept: each assistant turn's flag (`{fmt.loss_field or 'loss'}`) is agentclone's "
                "`Step.loss`, so a trainer that reads it trains exactly the turns agentclone would.")
    else:
        loss = (f"The {fmt.name} format has no per-turn loss flag: every assistant turn is written alike, and a "
                f"trainer of this format trains them all (or only the last, if it is told so). Of the {n} "
                f"trajectories, {stats.loss_all} have loss on every assistant turn, {stats.loss_last} only on the "
                f"last one, {stats.loss_other} on other turns (those lose their flags here).")
    made = f"`{command}`" if command else "agentclone's `export_file` (Python API)"
    lines = [
        card_yaml(info, split),
        f"# {folder.name}",
        "",
        f"Agent trajectories in the **{fmt.name}** format ({fmt.description}), written by "
        "agentclone: one row per trajectory.",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'dataset = load_dataset("path/to/{folder.name}", split="{split}")',
        "```",
        "",
        f"Back into agentclone: `agentclone import path/to/{folder.name} --from {fmt.name} --output trajectories.jsonl`.",
        "",
        "## Fields",
        "",
        *describe_features(info.features),
        "",
        "Every row has every column (Parquet has one schema): a null means that the record does not have that field "
        "(agentclone reads a null as absent, e.g. a turn without a loss flag).",
        "",
        doc,
        "",
        "## Loss",
        "",
        loss,
        "",
        "## Counts",
        "",
        "| records | steps (assistant turns) | assistant turns with loss | trajectories without steps (skipped) |",
        "|---|---|---|---|",
        f"| {n} | {stats.steps} | {stats.loss_steps} | {stats.skipped_empty} |",
        "",
        "## How it was made",
        "",
        made,
        "",
    ]
    return "\n".join(lines)
