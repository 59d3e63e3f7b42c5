#!/usr/bin/env python3
"""The case files of the finished (seed, model) parts of a deploy/reference-by-seed.sh run, to commit.

A session's machine is gone with it, and a new checkout holds only what was committed; so the parts a
session finished are committed, and the next session resumes the rest (--qat-resume skips them). A part
stopped half-way is not committed: its cases share one pre-trained model and float control, and the rest
of that seed on another machine would pre-train another one. A part is finished when its pytest log ends
with pytest's summary line ("64 passed, 137 deselected in 264.49s") and has no "!!!! KeyboardInterrupt" banner
(a run stopped by SIGTERM prints its summary too).

    python3 deploy/reference-finished.py RUN            # paths to `git add`, one per line
    python3 deploy/reference-finished.py RUN --report   # finished and unfinished parts, to stderr too
"""

import json
import re
import sys
from pathlib import Path

SUMMARY = re.compile(r"^\d+ (passed|failed|error)\b.* in [\d.]+s\b")
# pytest ends a stopped run with its summary too, after a "!!!!! KeyboardInterrupt: SIGTERM !!!!!" (or
# "Interrupted: ..." / an Exit) banner: a part whose log has one was stopped, whatever its last line says
STOPPED = re.compile(r"^!{3,} ", re.M)


def finished_parts(run_dir: Path) -> set:
    """{(model, seed)} whose log ends with pytest's summary line and was not stopped part-way."""
    done = set()
    for log in (run_dir / "logs").glob("*-s*.log"):
        text = log.read_text(errors="replace")
        lines = text.strip().splitlines()
        model, _, seed = log.stem.rpartition("-s")
        if lines and SUMMARY.match(lines[-1]) and not STOPPED.search(text) and seed.isdigit():
            done.add((model, int(seed)))
    return done


def main(argv) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[-2].strip(), file=sys.stderr)
        return 2
    run_dir = Path("results") / argv[0]
    done = finished_parts(run_dir)
    paths, unfinished = [], {}
    for case in sorted((run_dir / "cases").glob("*.json")):
        try:
            record = json.loads(case.read_text())
            part = (record["model"], int(record["seed"]))
        except (OSError, ValueError, KeyError, TypeError):
            unfinished.setdefault(("unreadable", -1), []).append(case.name)
            continue
        if part in done:
            paths += [case, *([run_dir / "cases" / record["predictions_file"]] if record.get("predictions_file") else [])]
        else:
            unfinished.setdefault(part, []).append(case.name)
    paths += [run_dir / "logs" / f"{model}-s{seed}.log" for model, seed in sorted(done)]
    print("\n".join(str(p) for p in paths if p.exists()))
    if "--report" in argv:
        print(f"finished: {', '.join(f'{m} s{s}' for m, s in sorted(done)) or 'none'}", file=sys.stderr)
        for (model, seed), cases in sorted(unfinished.items()):
            print(f"unfinished: {model} s{seed}: {len(cases)} case files (not to commit)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
