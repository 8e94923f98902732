"""Canonical JSON, hex, and a bounded, typed reader of parsed JSON.

Canonical JSON (RFC 8785 style): sorted keys, ``(',', ':')`` separators, UTF-8, no NaN.
Parsing is for *untrusted* bytes: the size is capped, the nesting depth is measured on
the raw bytes before :func:`json.loads` sees them (so a deeply nested document can never
reach the interpreter's recursion limit, whatever other libraries set it to), and
:class:`JsonObject` reads each field with its type and range, naming the field when one
is wrong.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from pol_chain.format.errors import FormatError

__all__ = [
    "CanonicalRecord",
    "Json",
    "JsonDict",
    "MAX_DEPTH",
    "MAX_JSON_BYTES",
    "JsonObject",
    "canonical_json",
    "from_hex",
    "parse_json",
    "to_hex",
]

Json = None | bool | int | float | str | list["Json"] | dict[str, "Json"]
"""A JSON value (what :func:`json.loads` returns and :func:`canonical_json` accepts)."""
JsonDict = dict[str, Json]
"""A JSON object: the ``to_json`` form of every record."""

MAX_JSON_BYTES = 256 * 1024 * 1024
"""Default size limit of a JSON artefact (a segment of 10^6 steps fits easily)."""

MAX_DEPTH = 32
"""Default nesting limit: pol_chain's own formats nest at most 6 deep."""

UINT63_MAX = (1 << 63) - 1
_TOKENS = re.compile(rb'[\[\]{}"\\]')
_DIGEST = re.compile(r"0[xX][0-9a-fA-F]{64}")


def canonical_json(value: Any) -> bytes:
    """Return the canonical bytes of a JSON value (sorted keys, no spaces, UTF-8); raise
    ``ValueError`` on a NaN or infinity (the encoder checks: no walk of our own, which
    costs the training thread the GIL while the recorder writes a segment)."""
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError as exc:
        raise ValueError(f"not canonical JSON: {exc}") from None
    return text.encode("utf-8")


class CanonicalRecord:
    """A record whose bytes are the canonical JSON of its :meth:`to_json` and whose
    :attr:`digest` is the SHA-256 of those bytes."""

    def to_json(self) -> JsonDict:
        """The JSON form (each record defines it)."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The canonical bytes."""
        return canonical_json(self.to_json())

    @property
    def digest(self) -> bytes:
        """SHA-256 of the canonical bytes."""
        return hashlib.sha256(self.to_bytes()).digest()


def nesting_depth(data: bytes, limit: int) -> int:
    """Return the bracket nesting depth of JSON ``data`` (strings skipped); raise
    ``ValueError`` as soon as it exceeds ``limit``."""
    depth = deepest = 0
    in_string = False
    skip_to = -1
    for match in _TOKENS.finditer(data):
        pos = match.start()
        if pos < skip_to:
            continue
        char = data[pos]
        if in_string:
            if char == 0x5C:  # backslash: the next byte is escaped
                skip_to = pos + 2
            elif char == 0x22:
                in_string = False
            continue
        if char == 0x22:
            in_string = True
        elif char in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                raise ValueError(f"nested deeper than {limit}")
            deepest = max(deepest, depth)
        elif char in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def parse_json(
    data: bytes,
    what: str,
    *,
    canonical: bool = True,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse untrusted ``data`` as JSON (data only, bounded); with ``canonical``, require
    the canonical bytes. Any violation is a :class:`FormatError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FormatError(what, f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise FormatError(what, f"{len(data)} bytes exceed the limit of {max_bytes}")
    raw = bytes(data)
    try:
        nesting_depth(raw, max_depth)
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(what, f"not valid JSON ({exc.__class__.__name__}: {exc})") from None
    if canonical and canonical_json(value) != raw:
        raise FormatError(what, "JSON is not in canonical form")
    return value


def to_hex(digest: bytes) -> str:
    """Return ``digest`` as 0x-prefixed lowercase hex."""
    return "0x" + bytes(digest).hex()


def from_hex(text: str | bytes) -> bytes:
    """Return the bytes of a 0x-prefixed (or bare) hex string; bytes pass through."""
    if isinstance(text, bytes):
        return text
    body = text[2:] if text.startswith(("0x", "0X")) else text
    return bytes.fromhex(body)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class JsonObject:
    """A parsed JSON object of artefact ``what``, read field by field.

    Each accessor checks the field's type and range and raises :class:`FormatError`
    naming the artefact and the dotted field path. :meth:`only` refuses unknown fields.
    """

    def __init__(self, value: Any, what: builtins.str, path: builtins.str = "") -> None:
        if not isinstance(value, dict):
            raise FormatError(
                what, f"expected an object, got {type(value).__name__}", field=path or None
            )
        self.value: dict[builtins.str, Any] = value
        self.what = what
        self.path = path

    def _name(self, key: builtins.str) -> builtins.str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: builtins.str, detail: builtins.str) -> FormatError:
        """The error for field ``key``."""
        return FormatError(self.what, detail, field=self._name(key))

    def only(
        self, required: Iterable[builtins.str], optional: Iterable[builtins.str] = ()
    ) -> JsonObject:
        """Require exactly ``required`` (plus any of ``optional``); return self."""
        need, may = set(required), set(optional)
        missing = need - set(self.value)
        if missing:
            raise self.fail(sorted(missing)[0], "is missing")
        extra = set(self.value) - need - may
        if extra:
            raise self.fail(sorted(extra)[0], "is not a field of this format")
        return self

    def has(self, key: builtins.str) -> builtins.bool:
        """Whether ``key`` is present (and not null)."""
        return self.value.get(key) is not None

    def raw(self, key: builtins.str) -> Any:
        """The raw value of ``key`` (must be present)."""
        if key not in self.value:
            raise self.fail(key, "is missing")
        return self.value[key]

    def int(
        self, key: builtins.str, lo: builtins.int = 0, hi: builtins.int = UINT63_MAX
    ) -> builtins.int:
        """An integer in ``[lo, hi]``."""
        value = self.raw(key)
        if not _is_int(value):
            raise self.fail(key, f"must be an integer, got {type(value).__name__}")
        if not lo <= value <= hi:
            raise self.fail(key, f"{value} is outside [{lo}, {hi}]")
        return int(value)

    def number(self, key: builtins.str) -> float:
        """A finite number."""
        value = self.raw(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.fail(key, f"must be a number, got {type(value).__name__}")
        return float(value)

    def opt_number(self, key: builtins.str) -> float | None:
        """A finite number or null."""
        return None if self.value.get(key) is None else self.number(key)

    def bool(self, key: builtins.str) -> builtins.bool:
        """A boolean."""
        value = self.raw(key)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {type(value).__name__}")
        return value

    def str(self, key: builtins.str, max_len: builtins.int = 4096) -> builtins.str:
        """A string of at most ``max_len`` characters."""
        value = self.raw(key)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {type(value).__name__}")
        if len(value) > max_len:
            raise self.fail(key, f"is longer than {max_len} characters")
        return value

    def opt_str(self, key: builtins.str, max_len: builtins.int = 4096) -> builtins.str | None:
        """A string or null/absent."""
        return None if self.value.get(key) is None else self.str(key, max_len)

    def digest(self, key: builtins.str) -> bytes:
        """A 32-byte digest spelled ``0x`` + 64 hex digits."""
        text = self.str(key, 66)
        return parse_digest(text, lambda detail: self.fail(key, detail))

    def opt_digest(self, key: builtins.str) -> bytes | None:
        """A digest or null/absent."""
        return None if self.value.get(key) is None else self.digest(key)

    def obj(self, key: builtins.str) -> JsonObject:
        """A nested object."""
        return JsonObject(self.raw(key), self.what, self._name(key))

    def opt_obj(self, key: builtins.str) -> JsonObject | None:
        """A nested object or null/absent."""
        return None if self.value.get(key) is None else self.obj(key)

    def list(self, key: builtins.str, max_len: builtins.int = 1 << 24) -> builtins.list[Any]:
        """A list of at most ``max_len`` items."""
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {type(value).__name__}")
        if len(value) > max_len:
            raise self.fail(key, f"has more than {max_len} items")
        return value

    def int_list(
        self,
        key: builtins.str,
        lo: builtins.int = 0,
        hi: builtins.int = UINT63_MAX,
        max_len: builtins.int = 1 << 24,
    ) -> builtins.list[builtins.int]:
        """A list of integers in ``[lo, hi]``."""
        items = self.list(key, max_len)
        for pos, item in enumerate(items):
            if not _is_int(item) or not lo <= item <= hi:
                raise self.fail(
                    f"{key}[{pos}]", f"must be an integer in [{lo}, {hi}], got {item!r}"
                )
        return items

    def str_list(
        self, key: builtins.str, max_len: builtins.int = 1024, max_str: builtins.int = 4096
    ) -> builtins.list[builtins.str]:
        """A list of strings."""
        items = self.list(key, max_len)
        for pos, item in enumerate(items):
            if not isinstance(item, str) or len(item) > max_str:
                raise self.fail(f"{key}[{pos}]", "must be a string")
        return items

    def mapping(self, key: builtins.str, max_len: builtins.int = 4096) -> dict[builtins.str, Any]:
        """A JSON object taken as plain data (e.g. a task's config)."""
        value = self.raw(key)
        if not isinstance(value, dict):
            raise self.fail(key, f"must be an object, got {type(value).__name__}")
        if len(value) > max_len:
            raise self.fail(key, f"has more than {max_len} entries")
        return dict(value)

    def format(self, *accepted: builtins.str) -> builtins.str:
        """Require ``format`` to be one of ``accepted`` (:class:`UnknownFormat` naming
        them otherwise); return it."""
        from pol_chain.format.errors import UnknownFormat

        found = self.value.get("format")
        if found not in accepted:
            raise UnknownFormat(self.what, found, accepted)
        return str(found)


def parse_digest(text: str, fail: Any = None) -> bytes:
    """Parse ``0x`` + 64 hex digits; ``fail(detail)`` builds the error (a ValueError by
    default)."""
    if _DIGEST.fullmatch(text) is None:  # bytes.fromhex alone would take spaces
        detail = f"must be 0x + 64 hex digits, got {text[:80]!r}"
        raise (fail(detail) if fail is not None else ValueError(detail))
    return bytes.fromhex(text[2:])
