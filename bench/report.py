"""The one table a run prints: each figure of the engine beside the baseline's."""

from dataclasses import dataclass

HEADERS = ("database", "figure", "engine", "baseline", "engine/baseline", "target")


@dataclass(frozen=True)
class Row:
    database: str
    figure: str  # says its unit, and whether higher or lower is better
    engine: float
    baseline: float
    target: str = ""  # the target for this figure, if it sets one
    met: bool = None

    @property
    def ratio(self):
        return self.engine / self.baseline if self.baseline else float("nan")


def _number(value):
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _ratio(row):
    # A count that must be 0 has no ratio.
    return f"{row.ratio:.2f}x" if row.baseline else ""


def _target(row):
    if not row.target:
        return ""
    return f"{row.target}: {'met' if row.met else 'MISSED'}"


def format_table(rows):
    cells = [HEADERS] + [
        (row.database, row.figure, _number(row.engine), _number(row.baseline), _ratio(row), _target(row))
        for row in rows
    ]
    widths = [max(len(line[column]) for line in cells) for column in range(len(HEADERS))]
    # Text left, numbers right: figures line up on their units.
    aligned = [str.ljust, str.ljust, str.rjust, str.rjust, str.rjust, str.ljust]
    lines = [
        "  ".join(align(cell, width) for align, cell, width in zip(aligned, line, widths)).rstrip() for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
