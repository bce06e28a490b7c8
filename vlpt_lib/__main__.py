"""Command line: `python -m vlpt_lib reproduce|report|bench ...`."""
from __future__ import annotations

import argparse
import errno
import sys

# Only light modules here: `--help` and argument errors must not wait for torch, open_clip, nbformat or papermill
# (tens of seconds). The commands import what they run after parse_args.
from .workbook.paths import PROFILES, results_root

REPRODUCE_HELP = """Run the workbook's notebooks with papermill, in dependency order, then render the report
(results/<profile>/report/index.html). Each notebook's executed copy and record land in
results/<profile>/notebooks/, its tables in results/<profile>/tables/, its job runs in results/<profile>/runs/.

What is cached. A notebook is skipped when its last run finished ok and none of these changed: its
parameters (params/<profile>/<name>.yaml), its cells, the library's code, its data root, an upstream
notebook's run (a new 10_mvp_pretrain re-runs 11 and 12), a table it wrote (deleted CSV), a job result it
used. A job run (training, evaluation) is keyed by its config, the absolute paths it reads and the code, and
recomputed from scratch when what it reads changed (sizes, modification times, folder listings). An
interrupted notebook or job resumes: the notebook re-runs, its jobs continue from their checkpoints.
--status shows what would run and why."""

REPRODUCE_ENV = """environment:
  VLPT_RESULTS_ROOT      where results/ is (default: the repository's results/)
  VLPT_DATA_ROOT         the paper profile's data root (imagenet/, caltech-101/, ADEChallengeData2016/, ...)
                         where params/paper/*.yaml leave data_root unset; changing it re-runs what reads it
  VLPT_NO_PROGRESS=1     no progress bars (logs only)
  VLPT_RECOMPUTE_BEFORE  epoch seconds: job results whose run started earlier are recomputed (--force sets it
                         to the time the run starts; you may set it yourself to recompute older results)

One writer at a time: a second reproduce of the same profile is refused, naming the process that runs."""

REPORT_HELP = """Render the report from the results already in results/<profile>/ (it runs no notebook; `reproduce`
renders it at its end): each paper table in its paper's shape (ours = mean ± std over seeds, paper, Δ) with its
figure, the papers' claims judged on these results, and the notebooks' status. Prints the path of index.html.

Without --out: results/<profile>/report/ (index.html, tables/, reference/, run_metadata.json) and
results/<profile>/summary.md (the same content as Markdown).

With --out DIR: that folder alone, nothing else written. It is self-contained (figures embedded, CSVs and run
metadata copied in): publish it as it is. DIR must be a new or empty folder outside the results root, or one an
earlier `report --out` made (then replaced whole). Refused: a file, a folder inside or around the results root, a
non-empty folder `report` did not make, a folder that cannot be written."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m vlpt_lib")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run the notebooks with papermill and render the report",
                         description=REPRODUCE_HELP, epilog=REPRODUCE_ENV,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    rep.add_argument("--profile", choices=PROFILES, default=None,
                     help="smoke (seconds, tests), mini (generated world, CPU, <= 30 min) or paper (your datasets, "
                          "GPU). Default: mini (paper with --dry-run)")
    rep.add_argument("--only", nargs="+", metavar="NAME", help="only these notebooks (e.g. 20_cocoop_base2new) or "
                     "tables (e.g. cocoop_base2new); their dependencies, the 00_setup data check (of what is "
                     "selected) and the report come along. Default: every notebook")
    rep.add_argument("--force", action="store_true",
                     help="recompute: re-run every selected notebook (dependencies included) and recompute every "
                          "job result they use (the mini CLIP, pre-training, fine-tuning, prompt runs) from scratch, "
                          "checkpoints discarded; a run shared by two notebooks is recomputed once. The generated "
                          "world is kept (delete results/<profile>/world to regenerate it). Interrupted, the next "
                          "run without --force resumes: what was recomputed stays, the rest is served from cache")
    rep.add_argument("--keep-runs", action="store_true",
                     help="keep job runs made by other code (the paper profile stops and lists them otherwise): "
                          "interrupted ones resume from their checkpoints, finished ones are served, and each run "
                          "records the code versions it ran under")
    rep.add_argument("--notebooks", type=int, default=None, metavar="N",
                     help="notebooks run side by side, each once its upstream has run (default: the profile's; "
                          "mini 2, smoke and paper 1)")
    rep.add_argument("--status", action="store_true",
                     help="list each selected notebook as 'cached' or 'would run: <reason>' (with how many of its "
                          "job runs are cached) and run nothing")
    rep.add_argument("--dry-run", action="store_true",
                     help="the paper profile end to end on a synthetic data root shaped like the real one (real class "
                          "counts and layouts, results/dry-run/world) with ViT-B/16 random weights, params/paper "
                          "with the caps of params/dry-run (printed first); results in results/dry-run/paper")
    report = sub.add_parser("report", help="render results/<profile>/report/index.html from what is there",
                            description=REPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("--profile", choices=PROFILES, default="mini",
                        help="whose results to render: smoke, mini or paper. Default: mini")
    report.add_argument("--out", metavar="DIR", help="write the report folder here instead, and nothing else "
                        "(self-contained: figures embedded, CSVs and run metadata copied in; publish it as it is). "
                        "A new or empty folder outside results/, or one an earlier report made (replaced whole)")
    sub.add_parser("bench", help="benchmarks: bench cocoop ... | bench mvp ...")
    args = parser.parse_args(argv)
    problem = environment_problem()
    if problem:
        print(f"vlpt: {problem}", file=sys.stderr)
        return 2
    try:
        return _run(parser, args)
    except OSError as err:  # the disk, not the code: one line naming the path and what to do
        print(f"\nFAILED: {os_error_line(err)}", file=sys.stderr)
        return 1


def environment_problem() -> str | None:
    """What is wrong with the environment variables the commands read (None: nothing)."""
    root = results_root()
    if root.exists() and not root.is_dir():
        return (f"VLPT_RESULTS_ROOT={root} is a file: point it at a folder (created if missing), or unset it for "
                "the repository's results/")
    from .jobs.launch import recompute_before  # imports torch: only once a command runs

    try:
        recompute_before()
    except ValueError as err:
        return str(err)
    return None


def os_error_line(err: OSError) -> str:
    fix = {errno.ENOSPC: "free space on that disk, or set VLPT_RESULTS_ROOT to a folder on another one",
           errno.EDQUOT: "free space within your quota, or set VLPT_RESULTS_ROOT to a folder elsewhere",
           errno.EACCES: "make it writable, or set VLPT_RESULTS_ROOT to a folder you can write",
           errno.EPERM: "make it writable, or set VLPT_RESULTS_ROOT to a folder you can write",
           errno.EROFS: "it is on a read-only file system: set VLPT_RESULTS_ROOT to a writable folder",
           errno.ENOTDIR: "a file stands where a folder is needed: move or delete it"}.get(err.errno)
    where = f" ({err.filename})" if err.filename else ""
    return f"{err.strerror or err}{where}" + (f": {fix}" if fix else "")


def reproduce(profile: str, **kwargs) -> None:
    """workbook.runner.reproduce, imported on call (a module-level name so tests can replace it)."""
    from .workbook.runner import reproduce as run

    run(profile, **kwargs)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "reproduce":
        from .utils.lock import Busy
        from .workbook.params import ParamsError
        from .workbook.runner import (DataNotReady, NotebookFailed, RunsMadeByOtherCode, code_change_lines, status,
                                      status_header, status_lines)

        try:
            args.profile = args.profile or ("paper" if args.dry_run else "mini")
            if args.status:
                if args.dry_run:
                    parser.error("--status does not combine with --dry-run (see results/dry-run/paper/notebooks)")
                states = status(args.profile, only=args.only, force=args.force)
                from .workbook.profiles import notebooks_at_once

                at_once = args.notebooks or notebooks_at_once(args.profile)
                print("\n".join(status_header(args.profile) + status_lines(states, at_once)
                                 + code_change_lines(args.profile, args.only)))
                return 0
            if args.notebooks is not None and args.notebooks < 1:
                parser.error(f"--notebooks must be 1 or more, got {args.notebooks}")
            reproduce(args.profile, only=args.only, force=args.force, dry_run=args.dry_run, notebooks=args.notebooks,
                      keep_runs=args.keep_runs)
        except DataNotReady as err:  # 00_setup's data check: its message says what to do, nothing to add
            print(f"\n{err}", file=sys.stderr)
            return 1
        except RunsMadeByOtherCode as err:
            print(f"\nSTOPPED: {err}", file=sys.stderr)
            return 2
        except (NotebookFailed, ParamsError, Busy) as err:
            print(f"\nFAILED: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nINTERRUPTED: the notebook that was running is marked 'interrupted' and runs again next time; "
                  "finished notebooks and job runs are kept, interrupted jobs resume from their checkpoints.",
                  file=sys.stderr)
            return 130
    elif args.command == "report":
        from .workbook.report import ReportError, render_report

        try:
            print(render_report(args.profile, out=args.out))
        except ReportError as err:
            print(f"report: {err}", file=sys.stderr)
            return 2
    return 0


def _bench(argv: list[str]) -> int:
    if not argv or argv[0] not in ("cocoop", "mvp"):
        print("usage: python -m vlpt_lib bench {cocoop,mvp} [options]  (--help after the name for options)")
        return 2
    if argv[0] == "cocoop":
        from .bench.cocoop import main as bench_main
    else:
        from .bench.mvp import main as bench_main
    return bench_main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
