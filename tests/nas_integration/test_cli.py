"""run_search's command line: help, a small real training search and a tabular search on the shipped data,
and bad options answered with one error line and no output folder."""
import json
import re
import shlex
import subprocess
import sys

import pytest
import torch

from nas_integration.cli import build_parser, main, unread_options
from nas_integration.data import DATASETS, nb201_table
from tensorcache.cli import main as tc_main
from tensorcache.trace import FIELDS, read_trace

SUMMARY_KEYS = {"run_id", "settings", "evaluations", "workers", "wall_s", "best", "new_architectures",
                "new_hit_ratio", "new_byte_share", "hit_ratio", "bytes_served",
                "cache_s", "train_s", "cache", "failures", "dropped", "clock"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas_integration.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_help_explains_the_option_groups_and_names_the_datasets():
    done = run_cli("--help")
    assert done.returncode == 0
    for text in ("search:", "evaluator:", "cache:", "execution:", "--table", "--no-cache", "TENSORCACHE_DATA",
                 "--redis-required"):
        assert text in done.stdout
    help_text = " ".join(done.stdout.split())
    assert f"train: {', '.join(DATASETS)} (default: mnist-small, shipped)" in help_text
    assert "tabular: cifar10, cifar100, imagenet16-120 (default: cifar10)" in help_text


def test_small_training_search_on_the_shipped_data_writes_trace_and_summary(tmp_path, capsys):
    out = tmp_path / "train"
    rc = main(["--out", str(out), "--train-subset", "400", "--evals", "6", "--population", "3", "--sample", "2",
               "--seed", "1", "--mutation-bias", "1.5", "--device", "cpu", "--control", "1"])
    assert rc == 0
    trace = read_trace(out / "trace.jsonl")
    assert len(trace) == 6 and all(set(FIELDS) <= set(r) for r in trace)
    assert any(r["layers_served"] > 0 for r in trace[3:])  # children warm-started from the cache
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["settings"]["seed"] == 1 and summary["settings"]["mutation_bias"] == 1.5
    assert summary["settings"]["dataset"] == "mnist-small" and summary["evaluator"]["data_dir"] is None
    assert summary["best"]["score"] == max(r["score"] for r in trace)
    assert summary["cache"]["puts"] == 6 and (out / "cache.lmdb").exists()
    printed = capsys.readouterr().out
    # what new architectures received leads; revisits and all children come after it
    assert printed.index("new architectures") < printed.index("revisits") < printed.index("all children")
    assert "fidelity (control set)" in printed and "warm - scratch" in printed and "ceiling" in printed
    assert summary["scratch"]["control"]["n"] == sum(r["donor_id"] is not None for r in trace)


def test_tabular_search_reads_the_shipped_table_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "tab"
    args = ["--out", str(out), "--evaluator", "tabular", "--evals", "200", "--workers", "32", "--quiet"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluator"]["table"] == str(nb201_table())
    assert summary["evaluations"] == 200 and summary["workers"] == 32 and summary["clock"] == "simulated"
    assert summary["hit_ratio"] > 0 and summary["best"]["test"] > 0
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--table", str(nb201_table())]) == 0
    assert len(read_trace(out / "trace.jsonl")) == 200


@pytest.mark.parametrize("extra, message", [
    (["--data-dir", "/nonexistent/mnist"], "dataset mnist-small ships with the package and takes no data directory"),
    (["--workers", "4"], "--executor process"),
    (["--dataset", "svhn"], f"train evaluator: unknown dataset 'svhn'; expected one of {', '.join(DATASETS)}"),
    (["--evaluator", "tabular", "--dataset", "mnist"],
     "tabular evaluator: unknown dataset 'mnist'; expected one of cifar10, cifar100, imagenet16-120"),
    (["--redis-required"], "--redis-required needs --redis URL"),
    (["--evaluator", "tabular", "--policy", "belady"], "policy 'belady' is offline-only"),
    (["--redis", "redis://127.0.0.1:1/0", "--redis-required"], "redis at redis://127.0.0.1:1/0 is unreachable"),
    (["--evaluator", "tabular", "--disk", __file__ + "/cache.lmdb"], "cannot open LMDB tier"),
    (["--device", "gpu"], "device 'gpu' is not a torch device"),
    (["--population", "0"], "population must be >= 1, got 0"),
    (["--seed", "-1"], "seed must be >= 0, got -1"),
    (["--mutation-bias", "nan"], "mutation bias must be a finite number, got nan"),  # was random.choices' words
    (["--lr", "nan"], "learning rate must be a finite number, got nan"),  # every evaluation was dropped
    (["--lr", "inf"], "learning rate must be a finite number, got inf"),
    (["--evaluator", "tabular", "--time-scale", "nan"], "time scale must be a finite number, got nan"),
    (["--evaluator", "tabular", "--locality-wait", "nan"], "locality wait must be a finite number, got nan"),
    (["--executor", "process", "--job-timeout", "nan"], "job timeout must be a finite number, got nan"),
    (["--population", "-1", "--policy", "evolution-aware"], "population must be >= 1, got -1"),
    (["--evaluator", "tabular", "--memory", "-5MB"], "bad memory size: '-5MB'"),  # was "expected one argument"
])
def test_bad_settings_are_explained_and_leave_no_output_folder(tmp_path, capsys, extra, message):
    out = tmp_path / "x"
    assert main(["--out", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("run_search: error: ")
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_one_error_line(tmp_path):
    done = run_cli("--out", str(tmp_path / "x"), "--device", "cuda", "--quiet")
    assert done.returncode == 2
    assert re.fullmatch(r"run_search: error: device 'cuda': CUDA is not available on this machine .*\n", done.stderr)
    assert not (tmp_path / "x").exists()


def test_the_plots_command_a_tabular_run_prints_draws_the_report(tmp_path, capsys):
    out = tmp_path / "nb"
    assert main(["--out", str(out), "--space", "nb201", "--evaluator", "tabular", "--evals", "120",
                 "--population", "20", "--sample", "5"]) == 0
    printed = capsys.readouterr().out
    command = next(line for line in printed.splitlines() if line.startswith("plots: ")).removeprefix("plots: ")
    program, *args = shlex.split(command)
    assert program == "tensorcache" and args[0] == "analyze"  # the shipped table is the .csv.gz one
    assert tc_main(args) == 0, capsys.readouterr().err
    assert (out / "report" / "report.md").exists() and "percentile" in (out / "report" / "report.md").read_text()


def test_belady_runs_in_replay_on_a_searchs_trace(tmp_path, capsys):
    out = tmp_path / "tab"
    assert main(["--out", str(out), "--evaluator", "tabular", "--evals", "60", "--population", "10", "--sample", "3", "--quiet"]) == 0
    assert tc_main(["replay", str(out / "trace.jsonl"), "--policy", "belady", "--capacity", "5%", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "belady"


def test_help_and_a_mistyped_option_answer_without_importing_torch():
    code = ("import sys\nfrom nas_integration.cli import main\n"
            "for argv in (['--help'], ['--out', 'x', '--evalz', '3']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().endswith("False") and "unrecognized arguments: --evalz" in done.stderr


def test_an_unreachable_redis_leaves_the_models_on_the_local_tiers_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # the summary table on one line per row
    out = tmp_path / "r"
    assert main(["--out", str(out), "--evaluator", "tabular", "--evals", "30", "--population", "10", "--sample", "3",
                 "--redis", "redis://127.0.0.1:1/0"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "shared tier unreachable: 30 of 30 puts kept locally only (memory, lmdb)" in printed
    (tiers,) = json.loads((out / "summary.json").read_text())["cache"]["tiers"]
    assert tiers["lmdb"]["entries"] == tiers["memory"]["entries"] > 0 and tiers["redis"]["entries"] == 0


def test_an_option_the_evaluator_does_not_read_is_named_once(tmp_path, caplog):
    args = ["--evaluator", "tabular", "--evals", "4", "--population", "2", "--sample", "1", "--quiet"]
    assert main(["--out", str(tmp_path / "t"), *args, "--data-dir", str(tmp_path)]) == 0  # was taken in silence
    assert [r.getMessage() for r in caplog.records if "no effect" in r.getMessage()] == [
        "--data-dir has no effect with the tabular evaluator (it reads its scores from --table); ignored"]
    train = build_parser().parse_args(["--out", "x", "--table", "t.csv", "--data-dir", "d"])
    assert unread_options(train) == ["--table has no effect with the train evaluator (it trains on --dataset); ignored"]
