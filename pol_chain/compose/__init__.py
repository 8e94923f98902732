"""Composition of the layers: settings → ledger client and store; proof dir → store and
chain (:mod:`.publish`); chain and store → a verifiable proof (:mod:`.fetch`).

This is the only package besides the CLI and the agent that imports more than one layer.
"""
