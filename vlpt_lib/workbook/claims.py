"""The papers' claims checked on this run's numbers: a difference of two means over seeds against twice its
standard error ("clearly" in issue #12).

    for v in claims.verdicts_of("cocoop_base2new", profile):
        print(v.sentence())

Each side of a claim is a per-seed sample computed from the table's rows (they carry their seed): e.g.
"CoOp new" = per seed, the mean new-class accuracy over the datasets run. For "left > right" (or "<"),
d = mean(left) - mean(right) and SE = sqrt(s_l^2 / n_l + s_r^2 / n_r), s the sample std over seeds:
  holds           d beyond 2 SE in the claimed direction,
  reversed        d beyond 2 SE the other way,
  not resolved    |d| <= 2 SE,
  one seed: no spread   a trained side has fewer than 2 seeds (there is no SE to compare with).
Zero-shot CLIP trains nothing and is tested on fixed test sets: its number has no seed spread, so its side
adds nothing to SE, whatever its seed count. "At least" (>=) is judged as ">": it holds only when clearly
above; "not resolved" then means no clear difference either way, which does not contradict it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from . import tables
from .tables import TABLES, harmonic_mean, per_seed_mean

ZERO_SHOT = ("CLIP",)  # methods whose numbers do not depend on the seed


@dataclass(frozen=True)
class Claim:
    text: str   # the paper's finding, in words
    left: str   # a side (see samples)
    op: str     # ">", "<" or ">=" (judged as ">")
    right: str


CLAIMS: dict[str, tuple[Claim, ...]] = {
    "cocoop_base2new": (
        Claim("CoOp fits the base classes better than zero-shot CLIP", "CoOp base", ">", "CLIP base"),
        Claim("CoOp loses accuracy on the new classes against zero-shot CLIP", "CoOp new", "<", "CLIP new"),
        Claim("CoCoOp is better than CoOp on the new classes", "CoCoOp new", ">", "CoOp new"),
        Claim("CoCoOp has the highest H (against CoOp)", "CoCoOp H", ">", "CoOp H"),
        Claim("CoCoOp has the highest H (against zero-shot CLIP)", "CoCoOp H", ">", "CLIP H"),
    ),
    "cocoop_cross_dataset": (
        Claim("CoCoOp transfers better than CoOp to the other datasets (their average)", "CoCoOp targets", ">",
              "CoOp targets"),
    ),
    "cocoop_domain_generalization": (
        Claim("CoCoOp is at least as good as CoOp on the shifted variants (their average)", "CoCoOp variants", ">=",
              "CoOp variants"),
    ),
    "imagenet_finetune": (
        Claim("MVP fine-tunes better than the same pre-training with a pixel target", "MVP", ">", "Pixel target"),
        Claim("MVP fine-tunes better than training from scratch", "MVP", ">", "Scratch"),
    ),
    "ade20k_segmentation": (
        Claim("MVP segments better than the same pre-training with a pixel target", "MVP", ">", "Pixel target"),
        Claim("MVP segments better than training from scratch", "MVP", ">", "Scratch"),
    ),
}


@dataclass(frozen=True)
class Verdict:
    table: str
    claim: Claim
    left_mean: float
    left_std: float
    left_n: int
    right_mean: float
    right_std: float
    right_n: int
    diff: float    # left - right
    se: float      # NaN when it cannot be computed (one seed, or a side not measured)
    word: str      # holds | not resolved | reversed | one seed: no spread | not measured

    def _side(self, name: str, mean: float, std: float, n: int) -> str:
        if name.split()[0] in ZERO_SHOT:
            return f"{mean:.2f} (zero-shot)"
        spread = f" ± {std:.2f}" if n > 1 else ""
        return f"{mean:.2f}{spread} ({n} seed{'s' if n != 1 else ''})"

    def sentence(self) -> str:
        """One Markdown line: the verdict, the claim, both means ± std, the difference and its SE."""
        c = self.claim
        head = f"**{self.word}** · {c.left} {c.op} {c.right}: {c.text}"
        if self.word == "not measured":
            return head + " (a side was not run in this profile)."
        se = f", SE {self.se:.2f} (2 SE = {2 * self.se:.2f})" if not math.isnan(self.se) else ""
        return (f"{head}. Ours: {self._side(c.left, self.left_mean, self.left_std, self.left_n)} vs "
                f"{self._side(c.right, self.right_mean, self.right_std, self.right_n)}; "
                f"difference {self.diff:+.2f}{se}.")


# ----------------------------------------------------------------------------- per-seed samples
def samples(table: str, rows: pd.DataFrame) -> dict[str, pd.Series]:
    """Every side the claims of `table` use: label -> per-seed values (indexed by seed)."""
    df = rows[rows["seed"].notna()]  # derived rows (per-dataset H) carry no seed
    layout = TABLES[table].layout
    out: dict[str, pd.Series] = {}
    if layout == "base2new":
        acc = df[(df["metric"] == "acc") & (df["dataset"] != "Average")]
        datasets = list(dict.fromkeys(acc["dataset"]))  # every method is averaged over the same datasets
        for method, g in acc.groupby("method", sort=False):
            base = per_seed_mean(g[g["split"] == "base"], datasets)
            new = per_seed_mean(g[g["split"] == "new"], datasets)
            both = base.index.intersection(new.index)
            out[f"{method} base"], out[f"{method} new"] = base, new
            out[f"{method} H"] = pd.Series([harmonic_mean(base[s], new[s]) for s in both], index=both, dtype=float)
    elif layout == "transfer":
        acc = df[(df["metric"] == "acc") & (df["dataset"] != "Average")]
        others = list(dict.fromkeys(acc["dataset"]))[1:]  # the first dataset is the source
        for method, g in acc.groupby("method", sort=False):
            out[f"{method} {TABLES[table].average_of}"] = per_seed_mean(g, others)
    else:
        metric = TABLES[table].metrics[0][1]
        for method, g in df[df["metric"] == metric].groupby("method", sort=False):
            out[method] = g.groupby("seed")["value"].mean()
    return out


# ----------------------------------------------------------------------------- verdicts
def judge(left: pd.Series, right: pd.Series, op: str, left_exact: bool = False,
          right_exact: bool = False) -> tuple[float, float, str]:
    """(difference left - right, its standard error, the word) for the claim `left op right`."""
    if len(left) == 0 or len(right) == 0:
        return math.nan, math.nan, "not measured"
    diff = float(left.mean() - right.mean())
    trained = [s for s, exact in ((left, left_exact), (right, right_exact)) if not exact]
    if any(len(s) < 2 for s in trained):
        return diff, math.nan, "one seed: no spread"
    se = math.sqrt(sum(float(s.var()) / len(s) for s in trained))
    toward = -diff if op == "<" else diff
    word = "holds" if toward > 2 * se else "reversed" if toward < -2 * se else "not resolved"
    return diff, se, word


def verdicts(table: str, rows: pd.DataFrame) -> list[Verdict]:
    """The verdict on every claim of `table` from its rows (empty: a table without claims)."""
    sides = samples(table, rows) if table in CLAIMS and len(rows) else {}
    out = []
    for claim in CLAIMS.get(table, ()):
        left, right = (sides.get(s, pd.Series(dtype=float)) for s in (claim.left, claim.right))
        diff, se, word = judge(left, right, claim.op, claim.left.split()[0] in ZERO_SHOT,
                               claim.right.split()[0] in ZERO_SHOT)
        out.append(Verdict(table, claim, float(left.mean()) if len(left) else math.nan,
                           float(left.std()) if len(left) > 1 else math.nan, len(left),
                           float(right.mean()) if len(right) else math.nan,
                           float(right.std()) if len(right) > 1 else math.nan, len(right), diff, se, word))
    return out


def verdicts_of(table: str, profile: str) -> list[Verdict]:
    """The verdicts on the saved table results/<profile>/tables/<table>.csv."""
    return verdicts(table, tables.load_table(table, profile))


RULE = ("A claim **holds** when the difference of the two means exceeds twice its standard error over seeds "
        "(SE = sqrt(s1²/n1 + s2²/n2)), is **reversed** beyond twice the SE the other way, and is **not resolved** "
        "in between; with one seed there is no spread to judge by.")


def markdown(table: str, profile: str) -> str:
    """The closing cell of a notebook: each claim of `table` judged on this profile's saved numbers."""
    found = verdicts_of(table, profile)
    if not found:
        return f"No claim of the paper is checked on table `{table}`."
    lines = [f"**The paper's claims on this run (profile `{profile}`)**", ""]
    lines += [f"- {v.sentence()}" for v in found]
    return "\n".join(lines)
