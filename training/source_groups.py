"""Which kind of request each source holds: math, code, knowledge (multiple choice and short
answers), chat. Tier mixes are checked per group, and each model's ability may differ a little
between groups in the item-response fit (difficulty.py)."""

from __future__ import annotations

GROUPS: tuple[str, ...] = ("math", "code", "knowledge", "chat", "other")

_SOURCE_GROUP = {
    **dict.fromkeys(
        (
            "zeroeval_gsm8k",
            "zeroeval_math_l5",
            "gsm8k",
            "math",
            "agentverse-mgsm",
            "agentverse-logicgrid",  # logic grid puzzles: exact answers reached by reasoning
            "svamp",
            "mawps",
            "asdiv",
            "aqua",
            "sat_math",
            "college_math",
            "minerva_math",
            "olympiadbench",
            "aime24",
            "amc23",
        ),
        "math",
    ),
    **dict.fromkeys(("cruxeval", "mbpp", "human_eval"), "code"),
    **dict.fromkeys(
        (
            "mmlu",
            "arc_challenge",
            "winogrande",
            "commonsense_qa",
            "openbook_qa",
            "gpqa",
            "natural_qa",
            "trivia_qa",
        ),
        "knowledge",
    ),
    **dict.fromkeys(("oasst", "shaberi_elyza", "shaberi_rakuda", "commongen"), "chat"),
}


def source_group(source: str) -> str:
    """math / code / knowledge / chat; MMLU-Pro categories are knowledge; unknown sources `other`."""
    if source.startswith("mmlu_pro_"):
        return "knowledge"
    return _SOURCE_GROUP.get(source, "other")
