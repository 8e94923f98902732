"""Where pol_chain keeps its data and finds its Node tools.

The data folder holds the embedded chain's state, deployments per chain id, the local
artefact store, proof directories and the agent's state. It is, in order:
``$POLCHAIN_HOME``; the nearest ``.polchain`` folder in the current directory or above;
``./.polchain``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["data_dir", "node_modules_dir", "node_tool", "project_root"]

DATA_DIR_NAME = ".polchain"


def data_dir(create: bool = False) -> Path:
    """Return the data folder (see module docstring); create it when asked."""
    env = os.environ.get("POLCHAIN_HOME")
    if env:
        path = Path(env).expanduser().resolve()
    else:
        cwd = Path.cwd().resolve()
        found = next(
            (p / DATA_DIR_NAME for p in (cwd, *cwd.parents) if (p / DATA_DIR_NAME).is_dir()),
            None,
        )
        path = found or cwd / DATA_DIR_NAME
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def project_root() -> Path:
    """Return the source checkout holding this package (where ``node_modules`` lives)."""
    return Path(__file__).resolve().parent.parent


def node_modules_dir() -> Path:
    """Return the ``node_modules`` folder with pol_chain's npm tools."""
    env = os.environ.get("POLCHAIN_NODE_MODULES")
    return Path(env).resolve() if env else project_root() / "node_modules"


def node_tool(name: str) -> Path | None:
    """Find an npm-installed executable ``name`` (project-local first, then ``PATH``)."""
    local = node_modules_dir() / ".bin" / name
    if local.exists():
        return local
    found = shutil.which(name)
    return Path(found) if found else None
