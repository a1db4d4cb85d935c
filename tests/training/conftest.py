import json
from pathlib import Path

import pytest

# Project-made rows: four sources, each with requests of every tier (short lookups are fast,
# multi-step tasks balanced, open research or proofs frontier).
TEMPLATES = {
    "fast": ["What is the capital of {x}?", "Translate '{x}' into French.", "Is {x} a noun or a verb?"],
    "balanced": [
        "Write a Python function that parses {x} log lines and counts errors per hour.",
        "Summarize the trade-offs of using {x} for a small web service in five bullet points.",
    ],
    "frontier": [
        "Prove that there are infinitely many primes of the form 4k+3, then generalize to {x}.",
        "Design a fault-tolerant distributed {x} system and argue its consistency guarantees formally.",
    ],
}
WORDS = ["norway", "kenya", "peru", "laos", "chile", "oman", "fiji", "mali"]
SOURCES = ["support", "coding", "science", "trivia"]


def fixture_rows() -> list[dict]:
    rows = []
    for s_idx, source in enumerate(SOURCES):
        for tier, templates in TEMPLATES.items():
            for template in templates:
                for w in WORDS[s_idx * 2 : s_idx * 2 + 2]:
                    rows.append({"text": template.format(x=f"{w} {source}"), "tier": tier, "source": source})
    rows.append(
        {
            "messages": [{"role": "user", "content": "hi there, what's the time zone of oslo?"}],
            "allowed_tiers": ["fast", "balanced"],
            "source": "support",
        }
    )
    return rows


@pytest.fixture(scope="session")
def fixture_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user") / "labeled.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in fixture_rows()) + "\n", encoding="utf-8")
    return path
