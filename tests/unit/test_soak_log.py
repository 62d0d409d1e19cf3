"""The soak's log file holds the functions' own log lines: a 5xx or a failed repair found by the soak can be read
there with the bracket it names (Powertools keeps its records off the root logger's handlers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, filename=sys.argv[1], filemode="w", force=True)
from local.soak import quiet_app_logs
quiet_app_logs()
from bracketflow.observability import logger
logger.error("the exit could not be placed", extra={"bracket_id": "br_X"})
logging.getLogger("local.soak").info("the soak's own line")
"""


def test_the_functions_log_lines_reach_the_soak_log_file_with_their_keys(tmp_path: Path) -> None:
    log_file = tmp_path / "soak.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log_file)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "the exit could not be placed" not in done.stdout  # not on the terminal

    lines = log_file.read_text().splitlines()
    app_lines = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(r["message"], r["bracket_id"], r["level"]) for r in app_lines] == [
        ("the exit could not be placed", "br_X", "ERROR")
    ]
    assert any("the soak's own line" in line for line in lines)
