"""Code bundles on both sides: packing a task's own code, checking and loading it.

**Packing** (:func:`collect_bundle`, on the trainer's machine): starting from the entry
module, every module it imports (``import``/``from … import``, relative ones too, found
by reading the source, not by running it) whose file lies in the trainer's project — the
folder given, or else the folder the entry's top-level package or file is in; for a task
that ships inside an installed distribution, the entry's own package folder — is packed;
every other import outside the standard library becomes a requirement, by distribution
name and version.

**Loading** (:func:`activate`, in a verifier's sandbox, or in a trainer's process so
that the code that trains is byte for byte the code that is committed): a meta-path
finder that imports the bundled module names from the bundle's files, whatever is
installed under those names.

**Requirements** (:func:`check_requirements`): every distribution the bundle needs must be
installed at the same (public) version; otherwise :class:`CannotVerify` naming it — the
verifier's trouble, not a verdict.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType

from pol_chain.format import BundleManifest, CodeBundle, Requirement
from pol_chain.proof.errors import CannotVerify, SpecError

__all__ = [
    "BundleFinder",
    "activate",
    "changed_modules",
    "check_requirements",
    "collect_bundle",
    "installed_distributions",
    "requirement_problems",
]


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    origin = Path(spec.origin)
    return origin if origin.suffix == ".py" and origin.is_file() else None


def changed_modules(bundle: CodeBundle) -> list[str]:
    """The bundle's modules whose source, as this process would import it, is not the
    bundle's (edited, or missing): a trainer running them would train other code than
    the code its run committed, which the verifier replays."""
    changed = []
    for name in sorted(bundle.manifest.modules):
        file = _module_file(name)
        try:
            same = file is not None and file.read_bytes() == bundle.sources[name]
        except OSError:
            same = False
        if not same:
            changed.append(name)
    return changed


def _imports(name: str, source: bytes, is_package: bool) -> Iterator[str]:
    """Absolute names the module ``name`` imports (and ``pkg.sub`` for ``from pkg
    import sub``), read from its source."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise SpecError(f"task module {name} does not parse: {exc}") from None
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            if target:
                yield target
                for alias in node.names:
                    yield f"{target}.{alias.name}"


Distributions = Mapping[str, list[str]]
"""Top-level module name → the installed distributions providing it."""


_INSTALLED: tuple[tuple[tuple[str, int], ...], Distributions] | None = None


def _path_fingerprint() -> tuple[tuple[str, int], ...]:
    """Every import path with its directory's mtime: installing, upgrading or removing a
    distribution adds or removes a ``*.dist-info`` entry there, changing the mtime."""
    marks = []
    for entry in sys.path:
        try:
            marks.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            marks.append((entry, -1))
    return tuple(marks)


def installed_distributions() -> Distributions:
    """Top-level module → installed distributions (``packages_distributions``), scanned
    again only when an import path changes (one scan reads every distribution's
    metadata: ~0.2 s, once per verification otherwise)."""
    global _INSTALLED
    mark = _path_fingerprint()
    if _INSTALLED is None or _INSTALLED[0] != mark:
        _INSTALLED = (mark, importlib.metadata.packages_distributions())
    return _INSTALLED[1]


def _distribution(top: str, installed: Distributions) -> Requirement | None:
    names = installed.get(top, [])
    for dist in sorted(set(names)):
        try:
            return Requirement(dist, importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _project_root(
    entry_module: str, path: Path, project: Path | None, installed: Distributions
) -> Path:
    if project is not None:
        return project.resolve()
    top = entry_module.split(".")[0]
    if _distribution(top, installed) is not None:  # shipped inside an installed distribution
        return path.parent.resolve()
    depth = entry_module.count(".") + (1 if path.name == "__init__.py" else 0)
    root = path.parent
    for _ in range(depth):
        root = root.parent
    return root.resolve()


def collect_bundle(entry: str, project: Path | str | None = None) -> CodeBundle:
    """Pack the task ``entry`` (``module:function``): its module and every local module it
    imports (see the module docstring), with the requirements of the rest."""
    module, _, func = entry.partition(":")
    path = _module_file(module)
    if path is None:
        raise SpecError(f"cannot find the source file of task module {module!r}")
    installed = installed_distributions()
    root = _project_root(module, path, Path(project) if project is not None else None, installed)
    modules: dict[str, str] = {}
    sources: dict[str, bytes] = {}
    requirements: set[Requirement] = set()
    queue = [module]
    seen: set[str] = set()
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        file = _module_file(name)
        if file is None or not file.resolve().is_relative_to(root):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in modules:
                continue
            if file is None and name.rpartition(".")[0] in modules:
                continue  # "from pkg import name": a name, not a submodule
            found = _distribution(top, installed)
            if found is not None:
                requirements.add(found)
            continue
        rel = file.resolve().relative_to(root).as_posix()
        source = file.read_bytes()
        modules[name] = rel
        sources[name] = source
        parent = name.rpartition(".")[0]
        if parent:
            queue.append(parent)
        queue.extend(_imports(name, source, file.name == "__init__.py"))
    if not func.isidentifier():
        raise SpecError(f"task entry point must be 'module:function', got {entry!r}")
    manifest = BundleManifest(entry, modules, tuple(sorted(requirements)))
    return CodeBundle(manifest, sources)


def _public(version: str) -> str:
    """The public part of a version (``2.13.0+cpu`` → ``2.13.0``): builds of one release
    for other hardware compute the same."""
    return version.split("+", 1)[0]


def requirement_problems(bundle: CodeBundle) -> list[str]:
    """What differs between the distributions the bundle needs and those installed here
    (missing, or at another public version), one line per distribution."""
    problems = []
    for req in bundle.manifest.requirements:
        try:
            here = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{req.name}=={req.version} is not installed")
            continue
        if _public(here) != _public(req.version):
            problems.append(f"{req.name} is {here} here, the bundle needs {req.version}")
    return problems


def check_requirements(bundle: CodeBundle) -> None:
    """Raise :class:`CannotVerify` unless every required distribution is installed here
    at the same public version."""
    problems = requirement_problems(bundle)
    if problems:
        raise CannotVerify(
            "the task's code needs " + "; ".join(problems),
            hint="install the same versions (pip install NAME==VERSION), then retry",
        )


class BundleFinder(importlib.abc.MetaPathFinder):
    """Imports the bundle's module names from its files in ``root`` (first on the path)."""

    def __init__(self, root: Path, manifest: BundleManifest) -> None:
        self.root = root
        self.modules = dict(manifest.modules)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        rel = self.modules.get(fullname)
        if rel is None:
            return None
        file = self.root / rel
        is_package = file.name == "__init__.py"
        return importlib.util.spec_from_file_location(
            fullname,
            file,
            submodule_search_locations=[str(file.parent)] if is_package else None,
        )


def activate(root: Path, manifest: BundleManifest) -> BundleFinder:
    """Make the bundled modules (extracted under ``root``) the ones that import: drop any
    already imported under those names and put a :class:`BundleFinder` first."""
    for name in manifest.modules:
        sys.modules.pop(name, None)
    finder = BundleFinder(root, manifest)
    sys.meta_path.insert(0, finder)
    importlib.invalidate_caches()
    return finder


def extract(bundle: CodeBundle, root: Path) -> Path:
    """Write the bundle's module files under ``root``; return it."""
    for name, rel in bundle.manifest.modules.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bundle.sources[name])
    return root
