"""Running a proof's code bundle for its verifier, sandboxed.

A verifier must run the trainer's code to replay a proof, and for the verifier that code
is untrusted. :class:`SandboxRunner` (a :class:`~pol_chain.proof.runner.TaskRunner`)
extracts the committed code bundle into a scratch folder and runs it in a separate
process under bubblewrap (``bwrap``): no network, a read-only view of the machine with
the verifier's data folder and keystore hidden, a private ``/tmp``, the scratch folder
the only writable place, no capabilities, a memory limit and a time limit. Only JSON and
safetensors cross the boundary, and what comes back is parsed as untrusted data.
See docs/sandbox.md for what it guarantees and what it does not.
"""

from pol_chain.sandbox.runner import (
    BundleCodeFailed,
    SandboxRunner,
    SandboxUnavailable,
    sandbox_command,
)

__all__ = ["BundleCodeFailed", "SandboxRunner", "SandboxUnavailable", "sandbox_command"]
