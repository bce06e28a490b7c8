"""The papers' claims checked on this run's numbers: Welch's t-test over seeds, one-sided in the claimed direction.

    for v in claims.verdicts_of("cocoop_base2new", profile):
        print(v.sentence())

Each side of a claim is a per-seed sample computed from the table's rows (they carry their seed) by
workbook.derived, like the tables' numbers: e.g. "CoOp new" = per seed, the mean new-class accuracy over the
datasets run; "CoOp H" = per seed, H of that seed's averaged base and new (the table's H is H of the seed-averaged
ones: the two differ by a fraction of a point). For "left > right" (or "<"),
d = mean(left) - mean(right), SE = sqrt(s_l^2 / n_l + s_r^2 / n_r) (s the sample std over seeds), t = d / SE
(-d / SE for "<") with the Welch-Satterthwaite degrees of freedom df = SE^4 / sum((s^2 / n)^2 / (n - 1)):
  holds           p = P(T_df >= t) < ALPHA (0.05): the claimed direction, beyond what 2-3 seeds' spread explains,
  reversed        P(T_df <= t) < ALPHA: clearly the other way,
  not resolved    neither,
  one seed: no spread   a trained side has fewer than 2 seeds (there is no spread to test with).
With 2-3 seeds df is small and t must be large (t > 2.92 at df 2, 6.31 at df 1): "2 SE" is not enough.
Zero-shot CLIP trains nothing and is tested on fixed test sets: its number has no seed spread, so its side is a
constant and the test is a one-sample t-test of the other side against it (df = n - 1). "At least" (>=) is judged
as ">": it holds only when clearly above; "not resolved" then means no clear difference either way, which does not
contradict it. A right side "best other H" is the strongest other method of this run (`best_other`); the verdict
names it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd
from scipy.stats import t as student_t

from . import derived, tables
from .tables import TABLES, Claim, claims_of, is_zero_shot

BEST_OTHER = "best other "  # a side "best other H" (see best_other)


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
    test: "Test"

    diff = property(lambda self: self.test.diff)
    se = property(lambda self: self.test.se)
    word = property(lambda self: self.test.word)

    def statistics(self) -> str:
        """"t 4.20, df 3.1, p 0.012" (empty when there is no test)."""
        t = self.test
        if math.isnan(t.p):
            return ""
        df = "" if math.isnan(t.df) else f", df {t.df:.1f}"
        return f"t {t.t:.2f}{df}, p {t.p:.3g}"

    def _side(self, name: str, mean: float, std: float, n: int) -> str:
        if is_zero_shot(name.split()[0]):
            return f"{mean:.2f} (zero-shot)"
        spread = f" ± {std:.2f}" if n > 1 else ""
        return f"{mean:.2f}{spread} ({n} seed{'s' if n != 1 else ''})"

    def sentence(self) -> str:
        """One Markdown line: the verdict, the claim, both means ± std, the difference and its SE."""
        c = self.claim
        head = f"**{self.word}** · {c.left} {c.op} {c.right}: {c.text}"
        if self.word == "not measured":
            return head + " (a side was not run in this profile)."
        se = f", SE {self.se:.2f}" if not math.isnan(self.se) else ""
        stats = f" (Welch: {self.statistics()})" if self.statistics() else ""
        return (f"{head}. Ours: {self._side(c.left, self.left_mean, self.left_std, self.left_n)} vs "
                f"{self._side(c.right, self.right_mean, self.right_std, self.right_n)}; "
                f"difference {self.diff:+.2f}{se}{stats}.")


# ----------------------------------------------------------------------------- per-seed samples
def samples(table: str, rows: pd.DataFrame) -> dict[str, pd.Series]:
    """Every side the claims of `table` use: label -> per-seed values (indexed by seed), computed by
    workbook.derived (claim_sides: the same per-seed means and averages as the tables)."""
    spec = TABLES[table]
    return derived.claim_sides(spec.layout, rows, spec.average_of, spec.metrics[0][1] if spec.metrics else "")


# ----------------------------------------------------------------------------- verdicts
ALPHA = 0.05


@dataclass(frozen=True)
class Test:
    diff: float    # left - right
    se: float      # NaN when it cannot be computed (one seed, or a side not measured)
    t: float       # toward the claim: d / SE for ">", -d / SE for "<"
    df: float      # Welch-Satterthwaite
    p: float       # one-sided, in the claimed direction
    word: str      # holds | not resolved | reversed | one seed: no spread | not measured


def judge(left: pd.Series, right: pd.Series, op: str, left_exact: bool = False,
          right_exact: bool = False) -> Test:
    """Welch's one-sided t-test of the claim `left op right` (module docstring); an exact side is a constant."""
    nan = math.nan
    if len(left) == 0 or len(right) == 0:
        return Test(nan, nan, nan, nan, nan, "not measured")
    diff = float(left.mean() - right.mean())
    trained = [s for s, exact in ((left, left_exact), (right, right_exact)) if not exact]
    if not trained or any(len(s) < 2 for s in trained):
        return Test(diff, nan, nan, nan, nan, "one seed: no spread")
    terms = [float(s.var()) / len(s) for s in trained]
    se = math.sqrt(sum(terms))
    toward = -diff if op == "<" else diff
    if se == 0.0:  # no spread on either side: the sign decides
        t, df, p = math.copysign(math.inf, toward) if toward else 0.0, nan, 0.0 if toward > 0 else 1.0
    else:
        t = toward / se
        df = se ** 4 / sum(v * v / (len(s) - 1) for v, s in zip(terms, trained))
        p = float(student_t.sf(t, df))
    other = 1.0 - p if se > 0 else (0.0 if toward < 0 else 1.0)
    word = "holds" if p < ALPHA else "reversed" if other < ALPHA else "not resolved"
    return Test(diff, se, t, df, p, word)


def best_other(side: str, left: str, sides: dict[str, pd.Series]) -> str:
    """A side "best other H" is, of the other methods' "<method> H" sides, the one with the highest mean (a paper
    that claims the best H of its table compares with whichever method is strongest here); other sides as given."""
    if not side.startswith(BEST_OTHER):
        return side
    suffix, method = side[len(BEST_OTHER):], left.rsplit(" ", 1)[0]
    others = {k: v.mean() for k, v in sides.items()
              if len(v) and k.endswith(" " + suffix) and k[:-len(suffix) - 1] != method}
    return max(others, key=others.get) if others else side


def verdicts(table: str, rows: pd.DataFrame) -> list[Verdict]:
    """The verdict on every claim of `table` from its rows (empty: a table without claims)."""
    found = claims_of(table) if table in TABLES else ()
    sides = samples(table, rows) if found and len(rows) else {}
    out = []
    for claim in found:
        claim = replace(claim, right=best_other(claim.right, claim.left, sides))
        left, right = (sides.get(s, pd.Series(dtype=float)) for s in (claim.left, claim.right))
        test = judge(left, right, claim.op, is_zero_shot(claim.left.split()[0]), is_zero_shot(claim.right.split()[0]))
        out.append(Verdict(table, claim, float(left.mean()) if len(left) else math.nan,
                           float(left.std()) if len(left) > 1 else math.nan, len(left),
                           float(right.mean()) if len(right) else math.nan,
                           float(right.std()) if len(right) > 1 else math.nan, len(right), test))
    return out


def verdicts_of(table: str, profile: str) -> list[Verdict]:
    """The verdicts on the saved table results/<profile>/tables/<table>.csv."""
    return verdicts(table, tables.load_table(table, profile))


RULE = ("A claim **holds** when Welch's t-test over seeds, one-sided in the claimed direction, gives p < 0.05 "
        "(t = difference / SE, SE = sqrt(s1²/n1 + s2²/n2), Welch–Satterthwaite degrees of freedom; a zero-shot side "
        "has no seed spread and is tested as a constant), is **reversed** when the test in the other direction does, "
        "and is **not resolved** otherwise; with one seed there is no spread to test with. With 2 or 3 seeds a "
        "difference must be several SE to hold (t > 2.92 at 2 degrees of freedom).")


def markdown(table: str, profile: str) -> str:
    """The closing cell of a notebook: each claim of `table` judged on this profile's saved numbers."""
    found = verdicts_of(table, profile)
    if not found:
        return f"No claim of the paper is checked on table `{table}`."
    lines = [f"**The paper's claims on this run (profile `{profile}`)**", "", RULE, ""]
    lines += [f"- {v.sentence()}" for v in found]
    return "\n".join(lines)
