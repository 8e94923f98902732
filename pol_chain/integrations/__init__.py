"""Framework integrations: record and replay runs driven by a framework's own loop.

- :mod:`pol_chain.integrations.lightning` — a Lightning ``Callback`` (extra ``lightning``).
- :mod:`pol_chain.integrations.hf` — a Hugging Face ``TrainerCallback`` and a ``Trainer``
  that takes its data order from the run (extra ``hf``).

Each module imports its framework lazily and names the extra to install when it is
missing. Both build on the proof engine only (``pol_chain.proof``): no chain, no store.
The task gives the framework's replay-relevant settings once; training and the
verifier's replay both read them from the task, so the code that trained is the code
that replays (docs/integrations.md).
"""

from __future__ import annotations

from pol_chain.integrations._common import IntegrationError, MissingExtra

__all__ = ["IntegrationError", "MissingExtra"]
