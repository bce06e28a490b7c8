"""Command line: `python -m vlpt_lib reproduce|report|bench ...`."""
from __future__ import annotations

import argparse
import sys

from .bench import cocoop as bench_cocoop
from .bench import mvp as bench_mvp
from .utils.lock import Busy
from .workbook.params import ParamsError
from .workbook.paths import PROFILES
from .workbook.report import render_report
from .workbook.runner import NotebookFailed, reproduce


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m vlpt_lib")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run the notebooks with papermill and render the report")
    rep.add_argument("--profile", choices=PROFILES, default="mini")
    rep.add_argument("--only", nargs="+", metavar="NAME", help="notebooks (e.g. 20_cocoop_base2new) or tables "
                     "(e.g. cocoop_base2new); their dependencies come along")
    rep.add_argument("--force", action="store_true", help="re-run notebooks even if a finished run matches")
    report = sub.add_parser("report", help="render results/<profile>/report/index.html from what is there")
    report.add_argument("--profile", choices=PROFILES, default="mini")
    sub.add_parser("bench", help="benchmarks: bench cocoop ... | bench mvp ...")
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        try:
            reproduce(args.profile, only=args.only, force=args.force)
        except (NotebookFailed, ParamsError, Busy) as err:
            print(f"\nFAILED: {err}", file=sys.stderr)
            return 1
    elif args.command == "report":
        print(render_report(args.profile))
    return 0


def _bench(argv: list[str]) -> int:
    if not argv or argv[0] not in ("cocoop", "mvp"):
        print("usage: python -m vlpt_lib bench {cocoop,mvp} [options]  (--help after the name for options)")
        return 2
    bench_main = bench_cocoop.main if argv[0] == "cocoop" else bench_mvp.main
    return bench_main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
