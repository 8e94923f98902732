"""Compile contracts/ProofLedger.sol into pol_chain/ledger/artifacts/ProofLedger.json.

Uses py-solc-x with a native ``solc`` of the pinned version when one is installed (py-solc-x's
own installs or ``solc`` on PATH), else ``scripts/solcjs_bridge.js`` (solc-js, same bytecode).

    .venv/bin/python scripts/compile_contracts.py          # (re)write the artefact
    .venv/bin/python scripts/compile_contracts.py --check  # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import solcx

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "contracts"
NODE_MODULES = ROOT / "node_modules"
BRIDGE = ROOT / "scripts" / "solcjs_bridge.js"
ARTIFACT = ROOT / "pol_chain" / "ledger" / "artifacts" / "ProofLedger.json"
SOLC_VERSION = "0.8.37"
CONTRACT = "ProofLedger"
SOURCE = "contracts/ProofLedger.sol"
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "viaIR": False,
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"]}
    },
}

__all__ = ["ARTIFACT", "build_artifact", "check", "compile_sources", "main"]


def _solc_binary() -> tuple[Path, str]:
    """Return (executable, description) of the compiler to use."""
    try:
        for version in solcx.get_installed_solc_versions():
            if str(version) == SOLC_VERSION:
                return Path(solcx.install.get_executable(version)), f"native solc {version}"
    except Exception:  # noqa: BLE001 - an unreadable solcx folder just means "none"
        pass
    on_path = shutil.which("solc")
    if on_path:
        out = subprocess.run([on_path, "--version"], capture_output=True, text=True).stdout
        if f"Version: {SOLC_VERSION}+" in out:
            return Path(on_path), f"native solc on PATH ({on_path})"
    if not (NODE_MODULES / "solc").is_dir():
        raise SystemExit(
            "no solc found: install solc-js with scripts/bootstrap.sh (npm install solc@"
            f"{SOLC_VERSION}) or a native solc {SOLC_VERSION}"
        )
    return BRIDGE, "solc-js via scripts/solcjs_bridge.js"


def _resolve_import(path: str) -> Path:
    for base in (ROOT, NODE_MODULES):
        candidate = base / path
        if candidate.is_file():
            return candidate
    raise SystemExit(f"import not found: {path}")


def _collect_sources() -> dict[str, str]:
    """Return every source the contract needs (itself plus transitive imports), by unit name."""
    import re

    pattern = re.compile(r'^\s*import\s+(?:[^"\']*from\s+)?["\']([^"\']+)["\']', re.M)
    sources: dict[str, str] = {}
    todo = [SOURCE]
    while todo:
        unit = todo.pop()
        if unit in sources:
            continue
        text = _resolve_import(unit).read_text()
        sources[unit] = text
        for imp in pattern.findall(text):
            if imp.startswith("."):
                imp = str((Path(unit).parent / imp).as_posix())
                parts: list[str] = []
                for part in imp.split("/"):
                    if part == "..":
                        parts.pop()
                    elif part != ".":
                        parts.append(part)
                imp = "/".join(parts)
            todo.append(imp)
    return dict(sorted(sources.items()))


def source_digest(sources: dict[str, str]) -> str:
    """SHA-256 over (unit name, content) of every source, in sorted order."""
    h = hashlib.sha256()
    for name, text in sorted(sources.items()):
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return "0x" + h.hexdigest()


def compile_sources(sources: dict[str, str]) -> tuple[dict[str, Any], str]:
    """Compile with py-solc-x; return (output for ProofLedger, compiler long version)."""
    binary, how = _solc_binary()
    std_input = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": SETTINGS,
    }
    output = solcx.compile_standard(std_input, solc_binary=binary, allow_paths=[str(ROOT)])
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise SystemExit("\n".join(e.get("formattedMessage", str(e)) for e in errors))
    version = json.loads(output["contracts"][SOURCE][CONTRACT]["metadata"])["compiler"]["version"]
    print(f"compiled {CONTRACT} with {how} ({version})", file=sys.stderr)
    return output["contracts"][SOURCE][CONTRACT], version


def build_artifact() -> dict[str, Any]:
    """Compile and return the artefact dictionary."""
    sources = _collect_sources()
    out, version = compile_sources(sources)
    return {
        "contractName": CONTRACT,
        "sourceName": SOURCE,
        "compiler": {"name": "solc", "version": version},
        "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
        "sourceDigest": source_digest(sources),
        "sources": sorted(sources),
        "abi": out["abi"],
        "bytecode": "0x" + out["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + out["evm"]["deployedBytecode"]["object"],
    }


def _dump(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def check() -> list[str]:
    """Return the reasons the committed artefact is stale (empty when it is fresh)."""
    if not ARTIFACT.is_file():
        return [f"{ARTIFACT} is missing"]
    committed = json.loads(ARTIFACT.read_text())
    fresh = build_artifact()
    return [
        f"{key} differs"
        for key in ("sourceDigest", "settings", "abi", "bytecode", "deployedBytecode")
        if committed.get(key) != fresh.get(key)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the artefact is stale")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        if problems:
            print(
                f"stale artefact ({', '.join(problems)}): run scripts/compile_contracts.py",
                file=sys.stderr,
            )
            return 1
        print("artefact is up to date", file=sys.stderr)
        return 0
    artifact = build_artifact()
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(_dump(artifact))
    print(f"wrote {ARTIFACT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
