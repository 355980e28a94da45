"""Run every learnat benchmark (``make bench``). Each prints its results as ratios against a baseline measured
in the same process. Data paths come from ``--shared`` (default ``../shared``); nothing here is a test.

    python benchmarks/run_all.py --shared ../shared [--quick] [--only similarity,eval]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def plan(shared: Path) -> list[tuple[str, list[str]]]:
    spider = str(shared / "spider")
    # the ask benchmark answers 4 x 100 questions: ~25 min through llama.cpp, ~2 h through transformers on 2 cores  # noqa: E501
    backend = "llamacpp" if importlib.util.find_spec("llama_cpp") else "transformers"
    return [
        ("similarity", ["--spider", spider]),
        ("eval", ["--spider", spider]),
        ("spider_official", ["--spider", spider]),
        ("decompose", ["--spider", spider]),
        ("train", []),
        ("ask", ["--spider", spider, "--backend", backend]),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared", help="folder with spider/ and bird/ (see its README.md)")
    ap.add_argument("--quick", action="store_true", help="small runs of every benchmark")
    ap.add_argument("--only", default="", help="comma-separated names to run (similarity,eval,decompose,train,ask)")  # noqa: E501
    args = ap.parse_args(argv)
    shared = Path(args.shared)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    failed = []
    for name, extra in plan(shared):
        if only and name not in only:
            continue
        script = HERE / f"bench_{name}.py"
        if not script.exists():
            print(f"== {name}: (no benchmark script yet)")
            continue
        cmd = [sys.executable, str(script), *extra] + (["--quick"] if args.quick else [])
        print(f"\n== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"== {name}: exit {rc} after {time.perf_counter() - t0:.1f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
