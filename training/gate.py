"""The promotion gate (issue 21, the owner's decision): lines a model must pass to become the default.

    python -m tierwise.training.gate --model models/candidate [--against models/default]

Every line is worked from the model's own report sections (report/within_source.json and the
manifest's wrapper-invariance section) and an idle in-process service (serve_check.py):

1. held-out ranking: macro within-source AUC of P(tier > fast) on the held-out sources (Winogrande
   and CommonsenseQA reported, not gated) beats prompt length and TF-IDF, bare and wrapped;
2. wrappers: tier flip <= 10%, `fast` share behind a long system prompt within 5 points of bare,
   under-routing after escalation <= 5% on `test` wrapped;
3. held-out under-routing after escalation <= 10% (bare), printed beside the tier mix;
4. hard requests: of the test and held-out rows the cheap class almost surely fails
   (P(fast fails) >= 0.8), at most 10% routed to `fast` in every source group, bare and wrapped,
   and `frontier` reached by requests that are not math;
5. a student (a model with a teacher) keeps >= 98% of its teacher's held-out macro AUC;
6. serve: an idle service decides a 1,500-word system prompt + short question with the encoder.

`--against` adds the owner's fallback: when not every line passes, a model may still be promoted if
it passes the wrapper, serve and hard-request lines, its held-out macro AUC is not below the lower
end of the reference's bootstrap 95% interval, and it sends no more hard rows to `fast` than the
reference does. Writes report/gate.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tierwise.core.model_folder import MANIFEST_FILE
from tierwise.core.scoring import percent
from tierwise.training import paths

HARD_FAST_MAX = 0.10
HELDOUT_UNDER_ROUTING_MAX = 0.10
STUDENT_KEEPS = 0.98
BASELINES = ("length", "tfidf")
SHAPES = ("bare", "wrapped")
# The lines the fallback promotion needs (the owner's rule); the others are reported.
FALLBACK_LINES = ("wrappers", "serve", "hard requests")


@dataclass(frozen=True)
class GateLine:
    line: str  # one of: held-out ranking, wrappers, held-out under-routing, hard requests, student, serve
    check: str  # what was compared
    value: str  # the measured figure(s)
    passed: bool | None  # None: not measured (the line does not apply or its input is missing)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def ranking_lines(within: dict[str, Any]) -> list[GateLine]:
    heldout = within["splits"].get("heldout")
    if heldout is None:
        return [GateLine("held-out ranking", "held-out split judged", "missing", False)]
    lines = []
    for shape in SHAPES:
        macro = heldout[shape]["gate_macro"]
        ours = macro["model"]["value"]
        for name in BASELINES:
            theirs = macro[name]["value"]
            passed = ours is not None and theirs is not None and ours > theirs
            lines.append(
                GateLine(
                    "held-out ranking",
                    f"{shape}: macro AUC model > {name} ({macro['model']['sources']} sources)",
                    f"{_fmt(ours)} vs {_fmt(theirs)}",
                    passed,
                )
            )
    return lines


def wrapper_lines(invariance: dict[str, Any]) -> list[GateLine]:
    targets = invariance.get("targets") or []
    if not targets:
        return [GateLine("wrappers", "wrapper targets on test", "missing", False)]
    return [GateLine("wrappers", t["target"], percent(t["value"]), bool(t["met"])) for t in targets]


def heldout_under_routing_line(invariance: dict[str, Any]) -> GateLine:
    heldout = invariance["splits"].get("heldout")
    if heldout is None:
        return GateLine("held-out under-routing", "under-routing after escalation <= 10%", "missing", False)
    bare, wrapped = heldout["plain"], heldout["wrapped"]
    mix = bare["tier_mix"]
    value = (
        f"{percent(bare['under_routing_after'])} bare, {percent(wrapped['under_routing_after'])} wrapped; "
        f"mix {percent(mix['fast'])} / {percent(mix['balanced'])} / {percent(mix['frontier'])}"
    )
    passed = bare["under_routing_after"] <= HELDOUT_UNDER_ROUTING_MAX
    return GateLine("held-out under-routing", "bare, after escalation <= 10%", value, passed)


def hard_counts(within: dict[str, Any], shape: str) -> dict[str, dict[str, int]]:
    """group -> {hard, hard_fast, n, frontier} summed over the judged splits (test and held-out)."""
    out: dict[str, dict[str, int]] = {}
    for split in within["splits"].values():
        for group, g in split[shape]["hard_rows"]["groups"].items():
            c = out.setdefault(group, {"hard": 0, "hard_fast": 0, "n": 0, "frontier": 0})
            c["hard"] += g["hard"]
            c["hard_fast"] += g["hard_fast"]
            c["n"] += g["n"]
            c["frontier"] += g["tier_counts"]["frontier"]
    return out


def hard_lines(within: dict[str, Any]) -> list[GateLine]:
    lines = []
    for shape in SHAPES:
        counts = hard_counts(within, shape)
        for group, c in sorted(counts.items()):
            if group == "all":
                continue
            share = c["hard_fast"] / c["hard"] if c["hard"] else None
            lines.append(
                GateLine(
                    "hard requests",
                    f"{shape}, {group}: hard rows routed fast <= 10%",
                    f"{c['hard_fast']} of {c['hard']}" + ("" if share is None else f" ({percent(share)})"),
                    None if share is None else share <= HARD_FAST_MAX,
                )
            )
        outside_math = sum(c["frontier"] for g, c in counts.items() if g not in ("math", "all"))
        lines.append(
            GateLine(
                "hard requests",
                f"{shape}: frontier reached outside math",
                f"{outside_math} rows",
                outside_math > 0,
            )
        )
    return lines


def heldout_macro(within: dict[str, Any], shape: str = "bare") -> dict[str, Any]:
    return within["splits"]["heldout"][shape]["gate_macro"]["model"]


def student_line(within: dict[str, Any], teacher_within: dict[str, Any] | None) -> GateLine:
    if teacher_within is None:
        return GateLine("student", "keeps >= 98% of its teacher's held-out macro AUC", "no teacher", None)
    ours, theirs = heldout_macro(within)["value"], heldout_macro(teacher_within)["value"]
    passed = ours is not None and theirs is not None and ours >= STUDENT_KEEPS * theirs
    return GateLine(
        "student",
        "keeps >= 98% of its teacher's held-out macro AUC",
        f"{_fmt(ours)} vs {_fmt(theirs)}",
        passed,
    )


def serve_line(serve: dict[str, Any] | None) -> GateLine:
    if serve is None:
        return GateLine("serve", "1,500-word system prompt decided by the encoder", "not measured", False)
    value = (
        f"{serve['encoder']} of {serve['requests']} by the encoder, "
        f"p50 {serve['p50_ms']:.0f} ms (deadline {serve['deadline_ms']:g} ms)"
    )
    return GateLine(
        "serve",
        "1,500-word system prompt decided by the encoder",
        value,
        serve["encoder"] == serve["requests"],
    )


def fallback_lines(within: dict[str, Any], reference_within: dict[str, Any]) -> list[GateLine]:
    ours, ref = heldout_macro(within), heldout_macro(reference_within)
    passed = ours["value"] is not None and ref["low"] is not None and ours["value"] >= ref["low"]
    hard_ours = hard_counts(within, "bare").get("all", {}).get("hard_fast", 0)
    hard_ref = hard_counts(reference_within, "bare").get("all", {}).get("hard_fast", 0)
    return [
        GateLine(
            "fallback",
            "held-out macro AUC not below the reference's 95% interval",
            f"{_fmt(ours['value'])} vs reference {_fmt(ref['value'])} [{_fmt(ref['low'])}, {_fmt(ref['high'])}]",
            passed,
        ),
        GateLine(
            "fallback",
            "hard rows routed fast no more than the reference",
            f"{hard_ours} vs {hard_ref}",
            hard_ours <= hard_ref,
        ),
    ]


def evaluate_gate(
    invariance: dict[str, Any],
    within: dict[str, Any],
    serve: dict[str, Any] | None,
    teacher_within: dict[str, Any] | None = None,
    reference_within: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every line, whether all passed, and whether the owner's fallback rule allows promotion."""
    lines = [
        *ranking_lines(within),
        *wrapper_lines(invariance),
        heldout_under_routing_line(invariance),
        *hard_lines(within),
        student_line(within, teacher_within),
        serve_line(serve),
    ]
    failures = [f"{g.line}: {g.check}: {g.value}" for g in lines if g.passed is False]
    result: dict[str, Any] = {
        "passed": not failures,
        "failures": failures,
        "lines": [asdict(g) for g in lines],
    }
    if reference_within is not None:
        extra = fallback_lines(within, reference_within)
        needed = [g for g in lines if g.line in FALLBACK_LINES] + extra
        result["fallback"] = {
            "lines": [asdict(g) for g in extra],
            "passed": all(g.passed is not False for g in needed),
            "failures": [f"{g.line}: {g.check}: {g.value}" for g in needed if g.passed is False],
        }
    return result


def render_markdown(gate: dict[str, Any]) -> str:
    def rows(lines: list[dict[str, Any]]) -> list[str]:
        mark = {True: "pass", False: "**FAIL**", None: "n/a"}
        return [f"| {g['line']} | {g['check']} | {g['value']} | {mark[g['passed']]} |" for g in lines]

    out = [
        "## Promotion gate",
        "",
        f"All lines: {'passed' if gate['passed'] else 'FAILED'}.",
        "",
        "| line | check | measured | result |",
        "|---|---|---|---|",
        *rows(gate["lines"]),
    ]
    if "fallback" in gate:
        fb = gate["fallback"]
        out += [
            "",
            f"Fallback (wrapper, serve and hard-request lines, and no worse than the reference): "
            f"{'passed' if fb['passed'] else 'FAILED'}.",
            "",
            "| line | check | measured | result |",
            "|---|---|---|---|",
            *rows(fb["lines"]),
        ]
    return "\n".join(out) + "\n"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `make train` and `make within-source` for that model"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    from tierwise.training.serve_check import long_system_prompt_check

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="the candidate model folder")
    parser.add_argument("--against", type=Path, default=None, help="the reference (the committed default)")
    parser.add_argument("--teacher", type=Path, default=None, help="the teacher of a distilled student")
    args = parser.parse_args(argv)
    try:
        manifest = _read_json(args.model / MANIFEST_FILE)
        within = _read_json(args.model / "report" / "within_source.json")
        invariance = _read_json(args.model / "report" / "metrics.json").get("invariance")
        if invariance is None:
            raise FileNotFoundError(f"{args.model}/report/metrics.json has no wrapper-invariance section")
        teacher = _read_json(args.teacher / "report" / "within_source.json") if args.teacher else None
        reference = _read_json(args.against / "report" / "within_source.json") if args.against else None
        serve = long_system_prompt_check(args.model, paths.policy_file())
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    gate = evaluate_gate(invariance, within, serve, teacher, reference)
    gate["serve_check"] = serve
    manifest["gate"] = gate
    (args.model / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(gate)
    (args.model / "report" / "gate.json").write_text(json.dumps(gate, indent=1) + "\n", encoding="utf-8")
    (args.model / "report" / "gate.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0 if gate["passed"] or gate.get("fallback", {}).get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
