"""`tierwise label` against a local OpenAI-compatible server with scripted answers and verdicts."""

import json
import threading
import time

import httpx
import pytest
from tierwise.cli.main import main as tierwise
from tierwise.core.policy_file import DEFAULT_POLICY_FILE
from tierwise.evidence.llm_api import ChatClient
from tierwise.ops.label_journal import Journal

from tools.fake_llm import FakeScript, FakeServer, policy_strengths

NEEDS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
TIER_OF = {0: ["fast"], 1: ["balanced"], 2: ["frontier"]}
CALLS_PER_REQUEST = 3 + 4  # three answers, two candidates judged in both orders


@pytest.fixture(scope="module")
def server():
    fake = FakeServer(FakeScript(policy_strengths(DEFAULT_POLICY_FILE))).start()
    yield fake
    fake.stop()


def fresh_script(server):
    """A new script of a new generation: calls an earlier test sent (to the earlier generation's
    URL) are answered but never counted here, however late the server handles them."""
    generation = server.script.generation + 1
    vars(server.script).update(vars(FakeScript(policy_strengths(DEFAULT_POLICY_FILE), generation=generation)))
    return server.script


@pytest.fixture
def script(server):
    return fresh_script(server)


class ScriptedTimeouts(httpx.AsyncBaseTransport):
    """httpx's transport, except that the first `count` answered calls reach the server and then raise the
    ReadTimeout httpx raises when a read outlasts its timeout: a timeout without waiting for one, so a
    slow machine cannot add any (a real 0.3 s timeout also fired on calls that were merely slow)."""

    def __init__(self, count: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.count = count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.count > 0 and response.status_code == 200:
            self.count -= 1
            await response.aclose()
            raise httpx.ReadTimeout("scripted timeout", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def logs(tmp_path):
    path = tmp_path / "requests.jsonl"
    with open(path, "w") as sink:
        for index, needs in enumerate(NEEDS):
            sink.write(
                json.dumps(
                    {"model": "x", "messages": [{"role": "user", "content": f"task {index} needs={needs}"}]}
                )
                + "\n"
            )
        sink.write("{broken\n")
    return path


def label(server, logs, out, *extra):
    base = [
        "label",
        "--input",
        str(logs),
        "--output",
        str(out),
        "--base-url",
        server.base_url,
        "--no-progress",
        "--backoff",
        "0.01",
    ]
    return tierwise([*base, *extra])


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_labels_match_the_scripted_truth_with_evidence(server, script, logs, tmp_path, capsys):
    out = tmp_path / "labeled.jsonl"
    assert label(server, logs, out, "--yes", "--concurrency", "4") == 0
    err = capsys.readouterr().err
    assert f"{len(NEEDS) * 3} answer + {len(NEEDS) * 4} judge calls" in err and "estimated cost" in err
    assert "requests.jsonl:11: invalid JSON" in err
    labeled = rows(out)
    assert [r["allowed_tiers"] for r in labeled] == [TIER_OF[n] for n in NEEDS]
    assert len(script.calls) == len(NEEDS) * CALLS_PER_REQUEST
    evidence = labeled[1]["evidence"]
    assert evidence["tiers"]["fast"]["outcomes"] == ["loss", "loss"]
    assert evidence["tiers"]["balanced"]["verdicts"] == {"reference_first": "TIE", "candidate_first": "TIE"}
    assert evidence["tiers"]["frontier"]["model"] == "o3" and evidence["cost_usd"] > 0
    assert labeled[0]["messages"][0]["content"] == "task 0 needs=0" and labeled[0]["source"] == "judged"


def test_nothing_is_sent_without_yes_or_a_budget(server, script, logs, tmp_path, capsys):
    assert label(server, logs, tmp_path / "o.jsonl") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: add --yes to spend about") and "Traceback" not in "".join(err)
    assert script.calls == []
    assert label(server, logs, tmp_path / "o.jsonl", "--dry-run") == 0 and script.calls == []


def test_a_budget_stop_then_a_resumed_run_pays_nothing_twice(server, script, logs, tmp_path, capsys):
    out = tmp_path / "labeled.jsonl"
    # the estimate (300 output tokens per answer; frontier and the o3 judge at 15/75) is ~0.12 USD
    # per request and the short fake answers cost far less: room for about three
    assert label(server, logs, out, "--max-cost", "0.15", "--concurrency", "1") == 0
    err = capsys.readouterr().err
    first = len(rows(out))
    assert 1 <= first < len(NEEDS) and "left for the budget" in err
    stats_first = len(script.calls)
    assert stats_first == first * CALLS_PER_REQUEST
    journal = Journal(out.with_name(out.name + ".journal.jsonl"))
    spent = sum(e["cost_usd"] for e in journal.entries.values())
    journal.close()
    assert spent <= 0.15
    with open(out.with_name(out.name + ".journal.jsonl"), "a") as torn:  # a kill mid-write
        torn.write('{"key": "abc", "role": "ans')
    assert label(server, logs, out, "--yes") == 0
    assert "already in the journal (free)" in capsys.readouterr().err
    assert len(rows(out)) == len(NEEDS)
    assert len(script.calls) == len(NEEDS) * CALLS_PER_REQUEST  # every call exactly once overall


def test_swapped_order_cancels_a_position_biased_judge(server, script, logs, tmp_path, capsys):
    script.bias = "A"  # the judge always prefers whatever is shown first
    out = tmp_path / "labeled.jsonl"
    assert label(server, logs, out, "--yes", "--stats", str(tmp_path / "stats.json")) == 0
    assert all(r["allowed_tiers"] == ["frontier"] for r in rows(out))  # no cheap answer accepted by position
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["position_bias"] == 2 * len(NEEDS)


def test_unreadable_verdicts_are_asked_again_then_dropped(server, script, logs, tmp_path, capsys):
    script.unreadable_verdicts = 3
    out = tmp_path / "labeled.jsonl"
    assert label(server, logs, out, "--yes", "--concurrency", "1") == 0
    assert [r["allowed_tiers"] for r in rows(out)] == [TIER_OF[n] for n in NEEDS]
    assert len(script.calls) == len(NEEDS) * CALLS_PER_REQUEST + 3  # one reminder call per bad reply
    script.unreadable_verdicts = 10**6
    script.calls.clear()
    assert label(server, logs, tmp_path / "none.jsonl", "--yes", "--tiers", "fast", "frontier") == 1
    assert f"unreadable_verdict {len(NEEDS)}" in capsys.readouterr().err
    assert rows(tmp_path / "none.jsonl") == []


def test_429s_5xx_and_timeouts_are_retried(server, script, logs, tmp_path, capsys, monkeypatch):
    script.statuses = [429, 500, 503, 502]
    timeouts = ScriptedTimeouts(2)
    clients = []

    def client_with_timeouts(*args, **kwargs):
        clients.append(ChatClient(*args, **kwargs, transport=timeouts))
        return clients[-1]

    monkeypatch.setattr("tierwise.ops.label.ChatClient", client_with_timeouts)
    out = tmp_path / "labeled.jsonl"
    assert label(server, logs, out, "--yes", "--timeout", "30", "--stats", str(tmp_path / "s.json")) == 0
    assert [r["allowed_tiers"] for r in rows(out)] == [TIER_OF[n] for n in NEEDS]
    assert json.loads((tmp_path / "s.json").read_text())["retries"] == 6 and timeouts.count == 0
    assert clients[0].stats.by_status == {"429": 1, "500": 1, "503": 1, "502": 1, "ReadTimeout": 2}
    assert clients[0]._http.timeout.read == 30.0  # --timeout reaches the client


def test_a_call_that_ends_after_its_test_is_not_counted_in_the_next_tests_script(server, script):
    # `make test` once saw 41 calls where the rubric test makes 40: a call the timeout test's client had
    # given up on (the server stalled it 2 s) ended during the next tests and was counted there.
    script.hold = threading.Event()
    answered = []
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "needs=0"}]}
    late = threading.Thread(
        target=lambda: answered.append(
            httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=30)
        )
    )
    late.start()
    deadline = time.monotonic() + 30  # a hang detector only: the call arrives at once
    while script.held == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert script.held == 1
    earlier_calls, hold = script.calls, script.hold
    next_script = fresh_script(server)  # what the fixture does for the next test
    hold.set()
    late.join(timeout=30)
    assert answered[0].status_code == 200
    assert earlier_calls == [("gpt-4o-mini", "answer")] and next_script.calls == []


def test_a_call_the_server_handles_after_its_test_is_not_counted_nor_takes_the_next_tests_statuses(
    server, script
):
    # `make test` under load saw 44 calls where the rubric test makes 40: the wrong-model test's label
    # run had sent calls the server got to only after the next test's script was in place. Calls
    # carry their script's generation in the URL, so a late one lands on no script.
    earlier_url = server.base_url
    next_script = fresh_script(server)
    next_script.statuses = [429]
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "needs=1"}]}
    late = httpx.post(f"{earlier_url}/chat/completions", json=body, timeout=30)
    assert late.status_code == 200  # answered, as a real server would
    assert next_script.calls == [] and next_script.statuses == [429]
    current = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=30)
    assert current.status_code == 429 and next_script.statuses == []


def test_retries_run_out_and_the_request_is_dropped(server, script, logs, tmp_path, capsys):
    script.statuses = [429] * 3
    out = tmp_path / "labeled.jsonl"
    assert label(server, logs, out, "--yes", "--retries", "2", "--concurrency", "1") == 0
    err = capsys.readouterr().err
    assert "call_failed 1" in err and "gave up after 3 attempts (last: 429)" in err
    assert len(rows(out)) == len(NEEDS) - 1


def test_a_wrong_model_name_stops_the_run_with_one_line(server, script, logs, tmp_path, capsys):
    assert label(server, logs, tmp_path / "o.jsonl", "--yes", "--tier-model", "fast=no-such-model") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no-such-model: HTTP 404") and "check --base-url" in err[-1]


def test_rubric_mode_and_named_tiers(server, script, logs, tmp_path, capsys):
    out = tmp_path / "labeled.jsonl"
    assert label(server, logs, out, "--yes", "--mode", "rubric", "--tiers", "fast", "frontier") == 0
    expected = {0: ["fast"], 1: ["balanced", "frontier"], 2: ["balanced", "frontier"]}
    assert [r["allowed_tiers"] for r in rows(out)] == [expected[n] for n in NEEDS]
    assert rows(out)[0]["evidence"]["tiers"]["fast"]["grade"] == 5
    assert len(script.calls) == len(NEEDS) * 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tiers", "fast"], "at least two tiers"),
        (["--tiers", "fast", "huge"], "not tiers of the policy"),
        (["--tier-model", "fast"], "must be TIER=MODEL"),
    ],
)
def test_user_errors_are_one_line(server, script, logs, tmp_path, capsys, extra, message):
    assert label(server, logs, tmp_path / "o.jsonl", "--yes", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_missing_base_url_is_a_user_error(logs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TIERWISE_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    out = tmp_path / "o.jsonl"
    assert tierwise(["label", "--input", str(logs), "--output", str(out), "--yes", "--no-progress"]) == 2
    assert "pass --base-url" in capsys.readouterr().err.splitlines()[-1]
