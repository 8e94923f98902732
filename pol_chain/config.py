"""Settings of a pol_chain project: defaults < config file < environment < flags.

The config file is ``<data dir>/config.toml`` (``polchain init`` writes a commented one).
Every setting also reads from an environment variable ``POLCHAIN_<NAME>`` (upper case),
and the CLI's flags override both.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pol_chain.errors import PolchainError
from pol_chain.paths import data_dir

__all__ = ["ConfigError", "Settings", "load_settings", "CONFIG_TEMPLATE"]


class ConfigError(PolchainError, ValueError):
    """The configuration file or an override is invalid (one line and a hint, never an
    internal error)."""

    hint = "fix the setting in config.toml, its POLCHAIN_* variable or the flag"


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass(frozen=True)
class Settings:
    """Resolved settings; ``rpc_url`` empty means the embedded Anvil."""

    home: Path = field(default_factory=lambda: data_dir())
    rpc_url: str = ""
    anvil_port: int | None = None  # None: the data folder picks (8545 unless taken)
    keystore: str = ""
    account_index: int = 0
    verifier_account_index: int = 1
    contract_address: str = ""
    store_backend: str = "local"
    kubo_api: str = ""
    kubo_auth: str = ""
    log_range: int | None = None
    availability_deadline: float | None = None
    policy_q: int | None = None
    policy_m: int | None = None
    policy_rho: float | None = None
    policy_cos: float | None = None

    @property
    def embedded(self) -> bool:
        """True when pol_chain manages its own local Anvil."""
        return not self.rpc_url

    @property
    def config_path(self) -> Path:
        """Path of the config file in the data folder."""
        return self.home / "config.toml"


_SECTIONS: dict[str, dict[str, str]] = {
    "chain": {
        "rpc_url": "rpc_url",
        "anvil_port": "anvil_port",
        "keystore": "keystore",
        "account_index": "account_index",
        "verifier_account_index": "verifier_account_index",
        "contract_address": "contract_address",
        "log_range": "log_range",
    },
    "store": {"backend": "store_backend", "kubo_api": "kubo_api", "kubo_auth": "kubo_auth"},
    "policy": {"q": "policy_q", "m": "policy_m", "rho": "policy_rho", "cos": "policy_cos"},
    "agent": {"availability_deadline": "availability_deadline"},
}


def _coerce(name: str, raw: Any) -> Any:
    kind = str({f.name: f.type for f in fields(Settings)}[name])
    if kind.endswith(" | None"):
        if raw is None or raw == "":
            return None
        kind = kind.removesuffix(" | None")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(str(raw)).expanduser().resolve()
        text = str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: cannot read {raw!r} as {kind}") from exc
    if name == "contract_address" and text.strip() and not _ADDRESS.fullmatch(text.strip()):
        raise ConfigError(
            f"setting 'contract_address': {text!r} is not an address (0x and 40 hex digits)",
            hint="pass the ProofLedger address printed by `polchain deploy` "
            "(--contract, POLCHAIN_CONTRACT_ADDRESS or contract_address in config.toml)",
        )
    return text.strip() if name == "contract_address" else text


def load_settings(home: Path | None = None, **overrides: Any) -> Settings:
    """Resolve settings for ``home`` (default: the data folder) with ``overrides`` last."""
    settings = Settings(home=home or data_dir())
    values: dict[str, Any] = {}
    path = settings.config_path
    if path.is_file():
        try:
            doc = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
        for section, mapping in _SECTIONS.items():
            table = doc.get(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [{section}] must be a table")
            for key, value in table.items():
                if key not in mapping:
                    known = ", ".join(sorted(mapping))
                    raise ConfigError(f"{path}: unknown key {section}.{key} (known: {known})")
                values[mapping[key]] = _coerce(mapping[key], value)
    for f in fields(Settings):
        env = os.environ.get(f"POLCHAIN_{f.name.upper()}")
        if env is not None and f.name != "home":
            values[f.name] = _coerce(f.name, env)
    for key, value in overrides.items():
        if value is not None:
            values[key] = _coerce(key, value)
    return replace(settings, **values)


CONFIG_TEMPLATE = """\
# pol_chain configuration. Every key can also be set with an environment variable
# POLCHAIN_<KEY> (e.g. POLCHAIN_RPC_URL) and most with a command-line flag.

[chain]
# Empty: pol_chain runs its own Anvil (state kept in this folder).
rpc_url = ""
# Unset: that Anvil listens on 8545, or on a free port when 8545 is taken, and keeps the
# port it got (chain/anvil.port). Set: exactly this port, refused when taken.
# anvil_port = 8545
# Encrypted eth-account keystore for non-local chains; the password comes from
# POLCHAIN_KEYSTORE_PASSWORD or a prompt. Empty: Anvil's dev accounts.
keystore = ""
# Anvil dev accounts used on the embedded chain (0 = deployer/trainer, 1 = verifier).
account_index = 0
verifier_account_index = 1
# Use this ProofLedger instead of the one recorded in deployments.json.
contract_address = ""
# Most blocks one eth_getLogs request may span (public RPCs limit it); unset: no limit.
# log_range = 10000

[store]
# "local": the embedded content-addressed store in this folder.
# "kubo": also pin every artefact to the Kubo RPC endpoint below (queued when it is down).
backend = "local"
kubo_api = ""        # e.g. "http://127.0.0.1:5001"
kubo_auth = ""       # Authorization header for pinning services speaking the Kubo RPC

[policy]
# Verifier policy; a key left out (or commented) takes the engine's calibrated default.
# q = 1              # top-Q segments per epoch by update size
# m = 30             # random segments drawn from the challenge seed (0: none)
# rho = 0.01         # max normalized error
# cos = 0.99         # min directional cosine

[agent]
# Seconds (of chain time, from the challenge's opening block) during which artefacts the
# agent cannot fetch only delay its vote; after that, and two tries, they fail the run.
# availability_deadline = 3600
"""
