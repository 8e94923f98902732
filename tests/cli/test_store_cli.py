"""`polchain store …` round trip, and `polchain calibrate` (no chain needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .helpers import Cli, make_cli

HELLO_CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"  # ipfs-car's


def test_store_round_trip(cli: Cli, tmp_path: Path) -> None:
    (cli.workdir / "hello.txt").write_bytes(b"hello world")
    added = cli.json("store", "add", "hello.txt")
    assert added["cid"] == HELLO_CID
    digest = "0x" + hashlib.sha256(b"hello world").hexdigest()
    cli.run("store", "get", HELLO_CID, "back.txt", "--sha256", digest)
    assert (cli.workdir / "back.txt").read_bytes() == b"hello world"

    wrong = cli.run(
        "store", "get", HELLO_CID, "nope.txt", "--sha256", "0x" + "00" * 32, check=False
    )
    assert wrong.returncode != 0 and wrong.stderr.startswith("error: ")
    assert not (cli.workdir / "nope.txt").exists()  # nothing written on a digest mismatch

    big = cli.workdir / "big.bin"
    big.write_bytes(bytes(range(256)) * 12_000)  # 3 MB: a dag-pb root over raw leaves
    cid = cli.json("store", "add", "big.bin")["cid"]
    cli.run("store", "export", cid, "big.car")
    other = make_cli(tmp_path / "other")
    (other.workdir / "big.car").write_bytes((cli.workdir / "big.car").read_bytes())
    assert other.run("store", "import", "big.car").stdout.split() == [cid]
    other.run("store", "get", cid, "copy.bin")
    assert (other.workdir / "copy.bin").read_bytes() == big.read_bytes()
    report = other.json("store", "verify")
    # two identical 1 MiB chunks are stored once: 2 distinct leaves + the root
    assert report["damaged"] == [] and report["checked"] == 3


def test_calibrate_recommends_thresholds(cli: Cli) -> None:
    result = cli.json("calibrate", "digits", "--segments", "2")
    assert result["bitwise_identical"]["deterministic"] is True
    rec = result["recommended"]
    assert 0 < rec["rho"] < 1 and 0.5 <= rec["c"] <= 0.99
    assert rec["rho"] >= result["honest"]["max_normalized_error"]  # honest replays pass
