"""The score-cache replay: every body once, repeats in between, through the service's own cache."""

import json

import numpy as np
import pytest

from tools import cache_replay


def test_the_stream_sends_every_body_once_plus_repeats_of_earlier_requests():
    stream = cache_replay.repeat_stream(200, 0.5, seed=1)
    assert sorted(set(stream.tolist())) == list(range(200))
    repeats = len(stream) - 200
    assert 120 < repeats < 300  # about r / (1 - r) = 1 repeat per new body
    assert len(cache_replay.repeat_stream(50, 0.0, seed=1)) == 50  # no repeats at r = 0
    with pytest.raises(ValueError, match="repeat share"):
        cache_replay.repeat_stream(10, 1.0, seed=1)


def test_hits_are_the_repeats_the_bounded_cache_still_holds(tmp_path):
    bodies = [{"text": f"request number {i}"} for i in range(300)]
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"body": b}) + "\n" for b in bodies))
    output = tmp_path / "replay.md"
    argv = [
        "--requests",
        str(path),
        "--repeat-shares",
        "0,0.4",
        "--sizes",
        "10,1000",
        "--output",
        str(output),
    ]
    assert cache_replay.main(argv) == 0
    table = output.read_text()
    rows = [
        line.split("|") for line in table.splitlines() if line.startswith("| 0%") or line.startswith("| 40%")
    ]
    hit = {(r[1].strip(), r[2].strip()): float(r[5].strip().rstrip("%")) for r in rows}
    assert hit[("0%", "10")] == hit[("0%", "1000")] == 0.0  # distinct texts never hit
    stream = cache_replay.repeat_stream(300, 0.4, seed=13)
    repeat_share = 100 * (1 - 300 / len(stream))
    assert hit[("40%", "1000")] == pytest.approx(
        repeat_share, abs=0.06
    )  # an unbounded cache hits every repeat
    assert hit[("40%", "10")] < hit[("40%", "1000")]  # a small LRU forgets older requests
    assert np.isfinite(float(rows[0][6]))


def test_missing_bench_requests_say_which_command_builds_them(tmp_path, capsys):
    assert cache_replay.main(["--requests", str(tmp_path / "nope.jsonl")]) == 2
    assert "make bench-requests" in capsys.readouterr().err
