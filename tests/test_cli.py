"""The `dasktrain` command: info, images, demo, through main() and `python -m dasktrain`."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dasktrain import cli


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for c, n in (("NORMAL", 3), ("PNEUMONIA", 2)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (10, 12), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    deep = rng.integers(0, 65536, (20, 20), dtype=np.uint16)
    Image.fromarray(deep).save(root / "NORMAL" / "d.png")
    (root / "PNEUMONIA" / "broken.jpg").write_text("not a jpeg")
    (root / "PNEUMONIA" / "readme.txt").write_text("ignored")
    return root


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("dasktrain", "dask ", "distributed", "xgboost", "torch", "cpus", "gpus"):
        assert word in out
    from dasktrain._compat import gpu_count

    assert f"gpus         {gpu_count()}" in out


def test_info_with_scheduler(capsys, cluster):
    assert cli.main(["info", "--scheduler", cluster.scheduler_address]) == 0
    out = capsys.readouterr().out
    assert cluster.scheduler_address in out and "workers      2 (2 threads" in out
    assert len(cluster.workers) == 2  # the remote cluster keeps running


def test_images(capsys, folder):
    assert cli.main(["images", str(folder)]) == 1  # 1: unreadable files were found
    out = capsys.readouterr().out
    assert "NORMAL" in out and "PNEUMONIA" in out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:3]}
    assert lines == {"NORMAL": "4", "PNEUMONIA": "2"}
    assert "broken.jpg" in out and "UnidentifiedImageError" in out
    assert "L x5" in out and "I;16 x1" in out and "12x10 x5" in out and "20x20 x1" in out
    assert "readme" not in out


def test_images_decode_finds_truncated_files(capsys, folder):
    (folder / "PNEUMONIA" / "broken.jpg").unlink()
    good = (folder / "NORMAL" / "0.png").read_bytes()
    (folder / "NORMAL" / "trunc.png").write_bytes(good[:60])
    assert cli.main(["images", str(folder)]) == 0
    assert "unreadable: none" in capsys.readouterr().out
    assert cli.main(["images", str(folder), "--decode"]) == 1
    assert "trunc.png" in capsys.readouterr().out


def test_images_decode_respects_classes(capsys, folder):
    # Regression: --decode re-listed the whole folder and reported excluded classes' files.
    (folder / "PNEUMONIA" / "broken.jpg").unlink()
    good = (folder / "NORMAL" / "0.png").read_bytes()
    (folder / "PNEUMONIA" / "trunc.png").write_bytes(good[:60])
    (folder / "OTHER").mkdir()
    (folder / "OTHER" / "0.png").write_bytes(good)
    assert cli.main(["images", str(folder), "--classes", "NORMAL,OTHER", "--decode"]) == 0
    out = capsys.readouterr().out
    assert "trunc.png" not in out and "unreadable: none" in out


def test_images_layout_error_is_exit_2(capsys, tmp_path):
    assert cli.main(["images", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no image files" in err and str(tmp_path) in err


def test_usage_errors():
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])


def test_one_module_per_subcommand(capsys):
    # Each subcommand is a module of dasktrain.cli with add_parser and run, in help order.
    from dasktrain.cli import compare, demo, images, info

    assert cli.SUBCOMMANDS == (info, images, demo, compare)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^    (\S+)", out, re.M)  # the subcommand lines, not wrapped help
    assert listed == ["info", "images", "demo", "compare"]
    for name, module in (("info", info), ("images", images), ("demo", demo), ("compare", compare)):
        args = cli.build_parser().parse_args(
            [name, "x"] if name in ("images", "compare") else [name]
        )
        assert args.func is module.run


def test_the_parser_takes_the_harness_vocabulary_and_stays_light():
    # The workload names and engines are the harness's (issue 28): one place says them. The
    # parser names the harness when it is built, so `dasktrain --help` must still import no
    # pandas, bokeh, scikit-learn or torch.
    import dasktrain.harness as h

    args = cli.build_parser().parse_args(["demo"])
    assert args.workloads == list(h.DEFAULT_WORKLOADS) and set(args.workloads) < set(h.BUILTIN)
    assert args.engines == list(h.DEFAULT_ENGINES)
    assert cli.build_parser().parse_args(["demo", "--engines", *h.ENGINES]).engines == list(
        h.ENGINES
    )
    code = (
        "import sys, dasktrain.cli as c; c.build_parser(); "
        "heavy = [m for m in ('pandas', 'bokeh', 'sklearn', 'torch', 'distributed') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_dash_m(folder):
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "dasktrain", *a], capture_output=True, text=True, timeout=120
    )
    info = run("info")
    assert info.returncode == 0, info.stderr
    assert "distributed" in info.stdout and "cpus" in info.stdout
    images = run("images", str(folder))
    assert images.returncode == 1 and "broken.jpg" in images.stdout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("dasktrain ")


def test_compare_bad_out_fails_before_anything_runs(capsys, folder, tmp_path):
    # Regression: an --out naming a file failed with a raw traceback after the whole run.
    import time

    afile = tmp_path / "report"
    afile.write_text("my notes")
    t0 = time.perf_counter()
    code = cli.main(
        [
            "compare",
            str(folder),
            "--out",
            str(afile),
            "--small",
            "--engines",
            "local",
            "--workloads",
            "read",
        ]
    )
    assert code == 2 and time.perf_counter() - t0 < 10
    captured = capsys.readouterr()
    assert "--out=" in captured.err and "is an existing file" in captured.err
    assert "warm-up" not in captured.out and "run 1" not in captured.out  # nothing ran
    assert afile.read_text() == "my notes"
    assert (
        cli.main(
            [
                "compare",
                str(folder),
                "--out",
                str(tmp_path / "r"),
                "--small",
                "--engines",
                "local",
                "--workloads",
                "read",
                "--timeout",
                "-1",
            ]
        )
        == 2
    )
    assert "timeout=-1.0" in capsys.readouterr().err


def test_compare_writes_runs_as_they_finish(capsys, folder, tmp_path):
    (folder / "PNEUMONIA" / "broken.jpg").unlink()
    out = tmp_path / "r"
    code = cli.main(
        [
            "compare",
            str(folder),
            "--out",
            str(out),
            "--small",
            "--engines",
            "local",
            "--workloads",
            "read",
            "--timeout",
            "120",
        ]
    )
    assert code == 0, capsys.readouterr()
    import json

    rows = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["workload"] for r in rows] == ["read"] and rows[0]["status"] == "ok"
    assert "runs.jsonl" in capsys.readouterr().out


def test_images_and_compare_say_which_folders_they_read(capsys, folder, tmp_path):
    # Issue 26, item 9: `images ROOT` counted train/ and test/ together while `compare ROOT`
    # read ROOT/train, and neither said so.
    import shutil

    root = tmp_path / "xray"
    shutil.copytree(folder, root / "train")
    shutil.copytree(folder, root / "test")
    for split in ("train", "test"):
        (root / split / "PNEUMONIA" / "broken.jpg").unlink()
    assert cli.main(["images", str(root)]) == 0
    out = capsys.readouterr().out
    assert "train/, test/ together" in out and f"reads {root / 'train'} only" in out
    assert cli.main(["images", str(root / "train")]) == 0
    assert "together" not in capsys.readouterr().out  # nothing to say for a plain folder
    args = ["compare", str(root), "--out", str(tmp_path / "r"), "--small"]
    code = cli.main([*args, "--engines", "local", "--workloads", "read"])
    assert code == 0
    assert f"images: {root / 'train'} (the other folders" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["compare", "--help"])
    assert "PATH/train only" in " ".join(capsys.readouterr().out.split())  # wrapped
