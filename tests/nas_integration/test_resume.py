"""Ctrl-C ends a search with the summary of what finished, and --resume continues it from its trace."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nas_integration.cli import main
from nas_integration.resume import ctrl_c_after
from tensorcache.config import CacheConfig
from tensorcache.trace import read_trace

SEARCH = ["--evaluator", "tabular", "--evals", "400", "--population", "30", "--sample", "5", "--seed", "3"]


def interrupt(out, *args, after=60):
    """Run run_search in a subprocess and send it SIGINT once its trace holds ``after`` records."""
    proc = subprocess.Popen([sys.executable, "-m", "nas_integration.cli", "--out", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trace, deadline = out / "trace.jsonl", time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if trace.exists() and trace.read_text().count("\n") >= after:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def finished(out):
    return [(r["model_id"], r["arch"], r["score"]) for r in read_trace(out / "trace.jsonl")]


def test_ctrl_c_prints_the_summary_and_resume_repeats_the_uninterrupted_search(tmp_path):
    out = tmp_path / "cut"
    rc, stdout, stderr = interrupt(out, *SEARCH)
    assert rc == 130, stderr
    assert "Traceback" not in stderr and "interrupted after" in stderr and "--resume" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and 60 <= summary["evaluations"] < 400
    assert summary["evaluations"] == len(read_trace(out / "trace.jsonl"))
    assert "INTERRUPTED" in stdout and "plots: tensorcache analyze" in stdout

    assert main(["--out", str(out), *SEARCH, "--resume", "--quiet"]) == 0
    resumed = json.loads((out / "summary.json").read_text())
    assert not resumed["interrupted"] and resumed["resumed"] == summary["evaluations"]
    whole = tmp_path / "whole"
    assert main(["--out", str(whole), *SEARCH, "--run-id", summary["run_id"], "--quiet"]) == 0
    assert finished(out) == finished(whole) and len(finished(out)) == 400
    assert resumed["best"] == json.loads((whole / "summary.json").read_text())["best"]


def test_resume_refuses_other_settings_and_a_missing_search(tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["--out", str(out), *SEARCH[:-1], "4", "--evals", "40", "--quiet"]) == 0
    assert main(["--out", str(out), *SEARCH, "--evals", "40", "--resume", "--quiet"]) == 2
    assert f"differs: seed: 4 in {out}, 3 now)" in capsys.readouterr().err
    assert main(["--out", str(out), *SEARCH[:-1], "4", "--evals", "40", "--memory", "7MB", "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err  # named alone, not as two whole cache configs
    assert f"differs: cache_config.memory: {CacheConfig().memory!r} in {out}, '7MB' now)" in err
    assert main(["--out", str(tmp_path / "none"), *SEARCH, "--resume", "--quiet"]) == 2
    assert "no search to continue" in capsys.readouterr().err
    assert main(["--out", str(out), *SEARCH, "--resume", "--overwrite", "--quiet"]) == 2
    assert main(["--out", str(out), *SEARCH, "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err  # the refusal to overwrite names the way to continue


def test_resume_refuses_fewer_evals_than_the_trace_holds(tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["--out", str(out), *SEARCH, "--evals", "12", "--quiet"]) == 0
    summary = (out / "summary.json").read_text()
    assert main(["--out", str(out), *SEARCH, "--evals", "5", "--resume", "--quiet"]) == 2
    assert "already finished 12 evaluations, more than --evals 5" in capsys.readouterr().err
    assert len(read_trace(out / "trace.jsonl")) == 12 and (out / "summary.json").read_text() == summary


def test_resume_continues_past_a_torn_last_line(tmp_path):
    out = tmp_path / "torn"
    assert main(["--out", str(out), *SEARCH, "--evals", "50", "--quiet"]) == 0
    with open(out / "trace.jsonl", "a") as f:
        f.write('{"model_id": "half')  # the line a killed search was writing
    assert main(["--out", str(out), *SEARCH, "--evals", "80", "--resume", "--quiet"]) == 0
    assert len(read_trace(out / "trace.jsonl")) == 80


@pytest.mark.slow
def test_ctrl_c_stops_process_workers_without_their_tracebacks(tmp_path):
    rc, _, stderr = interrupt(tmp_path / "p", *SEARCH, "--executor", "process", "--workers", "2",
                              "--time-scale", "0.00002", "--quiet", after=20)
    assert rc == 130 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["interrupted"]


def test_resume_answers_finished_scratch_jobs_from_controls_jsonl(tmp_path):
    args = [*SEARCH[:2], "--population", "10", "--sample", "3", "--seed", "1", "--reeval-leaders", "5", "--quiet",
            "--run-id", "r"]
    assert main(["--out", str(tmp_path / "whole"), *args, "--evals", "120"]) == 0
    assert main(["--out", str(tmp_path / "cut"), *args, "--evals", "60"]) == 0
    assert main(["--out", str(tmp_path / "cut"), *args, "--evals", "120", "--resume"]) == 0
    whole, cut = (read_trace(tmp_path / d / "controls.jsonl") for d in ("whole", "cut"))
    assert whole and [(c["model_id"], c["score"], c["used"]) for c in cut] == \
        [(c["model_id"], c["score"], c["used"]) for c in whole]
    assert finished(tmp_path / "cut") == finished(tmp_path / "whole")


def test_ctrl_c_waits_until_a_finished_child_is_written_and_counted():
    # a Ctrl-C between writing a child's record and counting it made the summary one short of the trace
    steps = []
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own (other tests may set theirs)
    try:
        with pytest.raises(KeyboardInterrupt):
            with ctrl_c_after():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal arrives here and is held off
                steps += ["written", "counted"]
        assert steps == ["written", "counted"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with ctrl_c_after():
            steps.append("no signal: nothing raised")
        assert len(steps) == 3
    finally:
        signal.signal(signal.SIGINT, earlier)
