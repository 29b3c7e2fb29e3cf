"""How much each hyperparameter matters to a metric, across the runs of a table.

Two methods, both named on the page: Spearman's rank correlation of each numeric hyperparameter
with the run's best value (monotone effects, one at a time), and the impurity-based importance of
a random forest (scikit-learn's ``RandomForestRegressor``, 200 trees, fixed seed) fitted to all
varying hyperparameters at once (non-monotone effects and interactions; values other than
numbers coded as categories).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnnprov.ui.tables import RunsTable, number

#: fewer runs than this say nothing about importance
MIN_RUNS = 5
METHODS = (
    "Spearman rank correlation with the best value (numeric hyperparameters)",
    "random-forest impurity importance (scikit-learn RandomForestRegressor, 200 trees, seed 0)",
)


@dataclass
class Importance:
    name: str
    spearman: float | None
    forest: float | None


@dataclass
class ImportanceReport:
    runs: int
    rows: list[Importance]
    note: str = ""


def importance(table: RunsTable) -> ImportanceReport:
    """Each varying hyperparameter's Spearman ρ and forest importance for ``table.metric``'s best value."""
    rows = [row for row in table.rows if number(row.best) is not None]
    if len(rows) < MIN_RUNS or not table.varying:
        note = f"needs at least {MIN_RUNS} runs with a {table.metric} and a hyperparameter that varies"
        return ImportanceReport(len(rows), [], note)
    from scipy.stats import spearmanr
    from sklearn.ensemble import RandomForestRegressor

    target = [float(row.best) for row in rows]  # type: ignore[arg-type]
    columns = []
    for name in table.varying:
        raw = [row.hyperparameters.get(name) for row in rows]
        numeric = [number(value) for value in raw]
        if all(value is not None for value in numeric):
            columns.append((name, numeric, True))
        else:
            codes = {text: index for index, text in enumerate(sorted({repr(value) for value in raw}))}
            columns.append((name, [float(codes[repr(value)]) for value in raw], False))
    forest = RandomForestRegressor(n_estimators=200, random_state=0)
    forest.fit([list(values) for values in zip(*[values for _, values, _ in columns], strict=True)], target)
    results = []
    for (name, values, is_number), weight in zip(columns, forest.feature_importances_, strict=True):
        rho = None
        if is_number and len(set(values)) > 1:
            rho = float(spearmanr(values, target).statistic)
            rho = rho if math.isfinite(rho) else None
        results.append(Importance(name, rho, float(weight)))
    results.sort(key=lambda item: -(item.forest or 0.0))
    return ImportanceReport(len(rows), results)
