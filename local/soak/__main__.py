"""The chaos soak: the local stack under a seeded storm of alerts and failures, then an honest look at what is left.

`make soak` runs it with its log, its details and its results files (the package's docstring says what it does)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from local.soak.plan import SoakConfig
from local.soak.report import README_PATH, RESULTS_PATH, quiet_app_logs, summary, write_results
from local.soak.run import Soak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m local.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--brackets", type=int, default=SoakConfig.brackets, help="distinct alerts (default 1000)")
    ap.add_argument("--seed", type=int, default=SoakConfig.seed)
    ap.add_argument("--alerts-per-s", type=float, default=SoakConfig.alerts_per_s)
    ap.add_argument("--out", type=Path, default=RESULTS_PATH, help="results file (README table too, if default)")
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--log", type=Path, default=tmp / "bracketflow-soak.log")
    ap.add_argument("--details", type=Path, default=tmp / "bracketflow-soak-details.json")
    a = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        filename=str(a.log),
        filemode="w",
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,
    )
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug", "moto"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_app_logs()
    print(f"the stack's log: {a.log}", flush=True)
    cfg = SoakConfig(brackets=a.brackets, seed=a.seed, alerts_per_s=a.alerts_per_s, details_path=a.details)
    result = Soak(cfg, say=lambda line: print(line, flush=True)).run()
    write_results(result, a.out, README_PATH if a.out == RESULTS_PATH else None)
    print(summary(result), flush=True)
    print(f"results: {a.out}; the broker's timeline and every bracket: {a.details}", flush=True)
    return 0 if not result.violations else 1


if __name__ == "__main__":
    sys.exit(main())
