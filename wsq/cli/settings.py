"""What ``wsq compress`` was asked to do, typed: the method objects it runs and the pipeline's own
settings. main.py builds it from the flags and the SPEC's defaults (validated there, errors naming
the flag); the pipeline and each method's run read fields, never an untyped options dict."""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsq.cli.specs import CliError
from wsq.methods import Grid, Uniform

__all__ = ["Settings", "build_settings"]


@dataclass(frozen=True)
class Settings:
    """uniform: the paper's search space (k_min, k_max, clip) and the Random UB's k (k_max);
    grid: the shared grid's tune settings (iters); methods: which run, in order ("uniform",
    "grid", "lloyd"); the rest as the flags of the same names."""

    uniform: Uniform
    grid: Grid
    methods: tuple[str, ...]
    pop: int
    gens: int
    seed: int
    tolerance: float
    margin: float
    coder: str
    prefer: str
    metric: str
    merge_top: int
    merge_evals: int | None
    method: str  # the --method flag as given ("auto" runs uniform and grid)

    @property
    def bar(self) -> float:
        """The drop every decision must stay within: tolerance - margin."""
        return self.tolerance - self.margin

    def summary(self) -> dict:
        """The settings as summary.json records them (the flags' names and values)."""
        return {
            "k_min": self.uniform.k_min, "k_max": self.uniform.k_max, "pop": self.pop,
            "gens": self.gens, "seed": self.seed, "tolerance": self.tolerance,
            "margin": self.margin, "metric": self.metric, "coder": self.coder,
            "variables": list(self.uniform.variables), "merge_top": self.merge_top,
            "merge_evals": self.merge_evals, "method": self.method, "prefer": self.prefer,
            "grid_iters": self.grid.iters,
        }  # fmt: skip


def build_settings(opts: dict) -> Settings:
    """Settings from the flags merged over the defaults (`opts`, keyed by the flags' names),
    each checked with an error naming its flag."""
    limits = (("k_min", 2), ("k_max", 2), ("pop", 2), ("gens", 1), ("merge_top", 1),
              ("merge_evals", 1), ("grid_iters", 1))  # fmt: skip
    for name, lo in limits:
        if opts[name] is not None and opts[name] < lo:
            raise CliError(f"--{name.replace('_', '-')} must be >= {lo}, got {opts[name]}")
    if opts["k_max"] > 65536 or opts["k_min"] > opts["k_max"]:
        raise CliError(
            f"need 2 <= --k-min <= --k-max <= 65536, got {opts['k_min']}, {opts['k_max']}"
        )
    if opts["seed"] < 0:
        raise CliError(f"--seed must be >= 0, got {opts['seed']}")
    if not (math.isfinite(opts["tolerance"]) and opts["tolerance"] >= 0):
        raise CliError(f"--tolerance must be finite and >= 0, got {opts['tolerance']}")
    if not (math.isfinite(opts["margin"]) and 0 <= opts["margin"] <= opts["tolerance"]):
        raise CliError(
            f"--margin must be finite, >= 0 and <= --tolerance ({opts['tolerance']:g}), got "
            f"{opts['margin']}"
        )
    variables = tuple(v.strip() for v in opts["variables"].split(",") if v.strip())
    if "k" not in variables or not set(variables) <= {"k", "clip"}:
        raise CliError(f"--variables must be 'k' or 'k,clip', got {opts['variables']!r}")
    return Settings(
        uniform=Uniform(k_min=opts["k_min"], k_max=opts["k_max"], clip="clip" in variables),
        grid=Grid(iters=opts["grid_iters"]),
        methods=("uniform", "grid") if opts["method"] == "auto" else (opts["method"],),
        pop=opts["pop"], gens=opts["gens"], seed=opts["seed"], tolerance=opts["tolerance"],
        margin=opts["margin"], coder=opts["coder"], prefer=opts["prefer"],
        metric=opts["metric"], merge_top=opts["merge_top"], merge_evals=opts["merge_evals"],
        method=opts["method"],
    )  # fmt: skip
