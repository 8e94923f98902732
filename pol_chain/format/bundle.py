"""The code bundle: a task's own code, packed deterministically (``polchain-bundle-v1``).

A bundle is an uncompressed ustar archive with, in sorted order, ``polchain-bundle.json``
(canonical JSON, :class:`BundleManifest`) and every module file under ``src/``. Every
member has mtime 0, uid/gid 0, no owner names and mode 0644, so the same files give the
same bytes, whatever machine packs them. The manifest lists the entry point, each
bundled module (its name and path) and the requirements — the distributions the code
imports from outside the bundle, with their versions — which a verifier must have.

:func:`read_bundle` parses untrusted bundle bytes: sizes, member counts and names are
bounded, only regular files are accepted, and every listed module must be present.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pol_chain.format._json import CanonicalRecord, JsonDict, JsonObject, parse_json
from pol_chain.format.errors import FormatError
from pol_chain.format.names import BUNDLE_FORMAT

__all__ = [
    "BUNDLE_MANIFEST",
    "BundleManifest",
    "CodeBundle",
    "Requirement",
    "read_bundle",
    "write_bundle",
]

BUNDLE_MANIFEST = "polchain-bundle.json"
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_MEMBERS = 1024
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, order=True)
class Requirement:
    """A distribution the bundled code imports, at the version it was packed with."""

    name: str
    version: str

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class BundleManifest(CanonicalRecord):
    """The bundle's table of contents: entry point, modules (name → path), requirements."""

    entry: str
    modules: Mapping[str, str]
    requirements: tuple[Requirement, ...] = ()

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {
            "entry": self.entry,
            "format": BUNDLE_FORMAT,
            "modules": dict(sorted(self.modules.items())),
            "requirements": [r.to_json() for r in sorted(self.requirements)],
        }

    @classmethod
    def from_json(cls, value: Any) -> BundleManifest:
        """Parse and validate a bundle manifest."""
        obj = JsonObject(value, "bundle manifest")
        obj.format(BUNDLE_FORMAT)
        obj.only(("entry", "format", "modules", "requirements"))
        modules = obj.mapping("modules", MAX_MEMBERS)
        for name, path in modules.items():
            parts = name.split(".")
            if not all(p.isidentifier() for p in parts):
                raise obj.fail("modules", f"{name!r} is not a module name")
            if not isinstance(path, str) or not _safe(path) or not path.endswith(".py"):
                raise obj.fail(f"modules.{name}", f"{path!r} is not a path in the bundle")
        reqs = []
        for pos, item in enumerate(obj.list("requirements", 256)):
            req = JsonObject(item, "bundle manifest", f"requirements[{pos}]").only(
                ("name", "version")
            )
            reqs.append(Requirement(req.str("name", 128), req.str("version", 64)))
        entry = obj.str("entry", 512)
        module, _, func = entry.partition(":")
        if module not in modules or not func.isidentifier():
            raise obj.fail("entry", f"{entry!r} does not name a bundled module's function")
        return cls(entry, modules, tuple(reqs))


def _safe(path: str) -> bool:
    norm = posixpath.normpath(path)
    return bool(path) and norm == path and not path.startswith(("/", "..")) and "\\" not in path


@dataclass(frozen=True)
class CodeBundle:
    """A bundle in memory: its manifest and each module's source bytes (by module name)."""

    manifest: BundleManifest
    sources: Mapping[str, bytes] = field(default_factory=dict)


def write_bundle(bundle: CodeBundle) -> bytes:
    """The deterministic archive bytes of ``bundle``."""
    out = io.BytesIO()
    files = {BUNDLE_MANIFEST: bundle.manifest.to_bytes()}
    for name, path in bundle.manifest.modules.items():
        files[f"src/{path}"] = bundle.sources[name]
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for member in sorted(files):
            data = files[member]
            info = tarfile.TarInfo(member)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def read_bundle(data: bytes, what: str = "code bundle") -> CodeBundle:
    """Parse untrusted bundle bytes (bounded; regular files only; data, never code)."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise FormatError(what, f"{len(data)} bytes exceed the limit of {MAX_BUNDLE_BYTES}")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS:
                    raise FormatError(what, f"more than {MAX_MEMBERS} members")
                if not member.isfile() or not _safe(member.name):
                    raise FormatError(what, f"member {member.name!r} is not a plain file inside it")
                if member.size > MAX_FILE_BYTES:
                    raise FormatError(
                        what, f"member {member.name!r} is larger than {MAX_FILE_BYTES}"
                    )
                handle = tar.extractfile(member)
                assert handle is not None
                files[member.name] = handle.read()
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise FormatError(what, f"not a valid archive ({type(exc).__name__})") from None
    if BUNDLE_MANIFEST not in files:
        raise FormatError(what, f"no {BUNDLE_MANIFEST}")
    manifest = BundleManifest.from_json(parse_json(files[BUNDLE_MANIFEST], f"{what} manifest"))
    sources = {}
    for name, path in manifest.modules.items():
        if f"src/{path}" not in files:
            raise FormatError(what, f"module {name} is listed but src/{path} is missing")
        sources[name] = files[f"src/{path}"]
    extra = set(files) - {BUNDLE_MANIFEST} - {f"src/{p}" for p in manifest.modules.values()}
    if extra:
        raise FormatError(what, f"files not in its manifest: {sorted(extra)[:3]}")
    return CodeBundle(manifest, sources)
