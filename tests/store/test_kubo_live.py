"""Against a real Kubo node: set POLCHAIN_KUBO_API (e.g. http://127.0.0.1:5001) to run.

Optional POLCHAIN_KUBO_AUTH is sent as the Authorization header. No Kubo binary can be
installed on the project's machines, so this is skipped there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pol_chain.store import KuboClient, LocalStore

API = os.environ.get("POLCHAIN_KUBO_API")

pytestmark = [
    pytest.mark.kubo,
    pytest.mark.skipif(not API, reason="POLCHAIN_KUBO_API is not set (no live Kubo node)"),
]


def test_live_roundtrip(tmp_path: Path) -> None:
    assert API
    kubo = KuboClient(API, auth=os.environ.get("POLCHAIN_KUBO_AUTH"))
    store = LocalStore(tmp_path / "s")
    data = os.urandom(3 * 1024 * 1024 + 5)
    cid = store.put_bytes(data)
    assert kubo.version()["Version"]
    assert kubo.push(store, cid) == cid
    assert kubo.is_pinned(cid)
    assert kubo.add(data) == cid  # same CID when Kubo adds with the same parameters
    assert kubo.cat(cid, expect_sha256=hashlib.sha256(data).digest()) == data
    other = LocalStore(tmp_path / "o")
    kubo.fetch(other, cid)
    assert other.get_bytes(cid) == data
    kubo.pin_rm(cid)
    kubo.close()
