"""Trajectory files of the field (AgentGym, ShareGPT, OpenAI messages, LLaMA-Factory, and agentclone's own rows):
import and export, as JSON / JSON Lines, Parquet or Hugging Face dataset folders (``agentclone.formats.hf``).

Formats are plugins (``register_formats``); ``make_format(name)`` makes a registered one.
``agentclone.formats.base`` has the interface and the conversation <-> trajectory mapping.
"""

from agentclone.formats.base import (
    ExportOptions,
    ExportStats,
    Format,
    FormatError,
    ImportOptions,
    ImportStats,
    RecordError,
    export_file,
    import_file,
    iter_import,
    iter_import_hub,
    iter_records,
)
from agentclone.formats.native import AgentcloneRows


def make_format(name: str) -> Format:
    """The registered format ``name`` (``UnknownNameError`` listing the registered ones otherwise)."""
    from agentclone.plugins import create

    return create("format", name)


__all__ = [
    "ExportOptions", "ExportStats", "Format", "FormatError", "ImportOptions", "ImportStats", "RecordError",
    "export_file", "import_file", "iter_import", "iter_import_hub", "iter_records", "make_format",
    "AgentcloneRows",
]
