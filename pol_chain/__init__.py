"""pol_chain: a blockchain-anchored proof-of-learning ledger.

Layers (each knows nothing of the ones beside it):

- :mod:`pol_chain.proof`  — the proof engine: recording, replay, verification (PyTorch).
- :mod:`pol_chain.ledger` — the ProofLedger contract and its typed client (web3.py).
- :mod:`pol_chain.store`  — content-addressed artefact storage (local UnixFS store, Kubo RPC).
- :mod:`pol_chain.commitment` — the leaf / accumulator / seed definitions shared by all.
- :mod:`pol_chain.cli`, :mod:`pol_chain.agent` — compose the layers into the tool.
"""

__version__ = "0.1.0"
