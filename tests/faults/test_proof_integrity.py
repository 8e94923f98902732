"""Finding 3: a checkpoint that changed after it was recorded is never committed."""

from __future__ import annotations

import faults_chain as fc
import pytest

pytestmark = pytest.mark.fault("data_lost")


def test_truncated_checkpoint_is_refused_and_nothing_committed() -> None:
    outcome = fc.truncated_checkpoint()
    assert outcome.survived, outcome.detail
    assert outcome.facts == {"committed": 0, "status": "REGISTERED"}
    assert "does not hash to its digest in the manifest" in outcome.detail
