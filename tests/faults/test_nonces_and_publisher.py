"""Finding 2: two processes on one account never collide on nonces; the live publisher
keeps going after an error."""

from __future__ import annotations

import faults_chain as fc
import pytest

pytestmark = pytest.mark.fault("data_lost")


def test_two_processes_on_one_account_never_collide() -> None:
    outcome = fc.two_processes_one_account(journal=True)
    assert outcome.survived, outcome.detail
    assert outcome.facts["nonces_used"] == 30


def test_a_nonce_taken_by_another_process_is_retried() -> None:
    # no journal, so no inter-process lock: "nonce too low" answers are retried
    outcome = fc.two_processes_one_account(journal=False)
    assert outcome.survived, outcome.detail


def test_live_publisher_retries_until_the_chain_is_back() -> None:
    outcome = fc.publisher_error_then_recovery()
    assert len(outcome.facts["errors"]) >= 2, outcome.detail  # it kept trying, with backoff
    assert outcome.facts["committed"] == outcome.facts["total"], outcome.detail
    assert outcome.facts["close_raised"] == "RpcUnreachable"  # no last sync: close() says so
    assert outcome.facts["finalize_idempotent"]
    assert outcome.survived and not outcome.data_lost


@pytest.mark.fault("wrong_verdict")
def test_a_growing_proof_is_published_without_walking_what_was_stored_again() -> None:
    """Each sync of a live run used to walk every stored artefact's DAG again and fold
    every leaf (a run's publisher slowed as it grew); it now walks none it stored itself,
    and a changed earlier leaf is still refused."""
    import json

    from pol_chain.compose.publish import ProofDiverged, Publisher
    from pol_chain.format import Manifest, canonical_json

    with fc.chain() as node:
        out = node.data / "proof"
        binding, client, store = fc.bound_proof(node, out)
        path = out / "manifest.json"
        full = path.read_bytes()
        entries = len(Manifest.from_bytes(full).entries)
        path.write_bytes(Manifest.from_bytes(full).truncated(3, keep_final=False).to_bytes())
        walked: list[str] = []
        has = store.has

        def counting_has(cid: str) -> bool:  # counts, then asks the store
            walked.append(cid)
            return has(cid)

        store.has = counting_has  # type: ignore[method-assign]
        publisher = Publisher(out, store, client, binding)
        assert publisher.sync().committed_after == 3
        path.write_bytes(full)  # three checkpoints later
        assert publisher.sync().committed_after == entries
        assert walked == []
        man = json.loads(full)
        man["entries"][1]["leaf"] = "0x" + "ee" * 32
        path.write_bytes(canonical_json(man))
        with pytest.raises(ProofDiverged, match="accumulator"):
            publisher.sync()
