"""What every case returns, and the markdown table of a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class CaseResult:
    case: str
    tried: int
    failures: int
    figures: str
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failures == 0

    def __str__(self) -> str:
        details = "; ".join(self.problems[:5])
        return f"{self.case}: {self.tried} tried, {self.failures} failed; {self.figures}" + (
            f" [{details}]" if details else ""
        )


def markdown_table(results: Sequence[CaseResult], header: str) -> str:
    lines = [header, "", "| case | tried | failures | figures |", "|---|---:|---:|---|"]
    for result in results:
        figures = result.figures.replace("|", "/")
        if result.problems:
            figures += " — " + "; ".join(result.problems[:3]).replace("|", "/")
        lines.append(f"| {result.case} | {result.tried} | {result.failures} | {figures} |")
    verdict = "all cases passed" if all(r.passed for r in results) else "FAILURES: see the rows above"
    return "\n".join([*lines, "", verdict, ""])
