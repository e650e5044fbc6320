"""Deprecated name of ``agentclone.builders`` (data builders were called trainers before 0.2).

``import agentclone.trainers.bc`` and friends keep working and warn once.
"""

import importlib
import sys
import warnings

warnings.warn("agentclone.trainers is now agentclone.builders; import from there", DeprecationWarning, stacklevel=2)

for _name in ("base", "bc", "critical", "reflection", "leap"):
    try:
        sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"agentclone.builders.{_name}")
    except ImportError:  # pragma: no cover - a module not written yet
        pass

from agentclone.builders.base import BuildContext, DataBuilder, make_builder  # noqa: E402,F401
