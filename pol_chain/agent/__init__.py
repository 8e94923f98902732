"""The verifier agent: watches the ledger for challenges, fetches the challenged run's
artefacts from the store, verifies them with the proof engine, pins the report and
attests on-chain. Its state (SQLite) makes a restart resume without double work or
double votes.
"""

from pol_chain.agent.daemon import ChallengeOutcome, VerifierAgent
from pol_chain.agent.state import AgentState

__all__ = ["AgentState", "ChallengeOutcome", "VerifierAgent"]
