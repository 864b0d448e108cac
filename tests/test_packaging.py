"""``pip install .`` ships the models, their YAML defaults and the converters, usable from any directory."""

import os
import shutil
import subprocess
import sys

from conftest import REPO, planted_config, write_planted_dataset

TOP_LEVEL_SKIP = {".venv", ".git", "dataset", "saved", "log", "log_tensorboard", "build", "results"}


def IGNORE(directory, names):
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if os.path.samefile(directory, REPO):
        skip |= TOP_LEVEL_SKIP & set(names)
    return skip


def test_installed_package_runs_from_any_directory(tmp_path):
    src, target, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    shutil.copytree(REPO, src, ignore=IGNORE)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(src)]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (target / "recbole_metammf" / "properties" / "model" / "MetaMMF_GCN.yaml").is_file()
    assert (target / "recbole_metammf" / "properties" / "dataset" / "mm-ml-100k.yaml").is_file()

    elsewhere.mkdir()
    write_planted_dataset(elsewhere / "data")
    env = {**os.environ, "PYTHONPATH": str(target)}
    check = subprocess.run(
        [sys.executable, "-c", "import recbole_metammf, dataset_converters; from recbole_metammf.paths import PROPERTIES_DIR; print(PROPERTIES_DIR)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.strip().startswith(str(target))

    cfg = planted_config(elsewhere / "data")
    run = subprocess.run(
        [sys.executable, "-m", "recbole_metammf", "--model=MetaMMF_MF", "--dataset=planted", f"--data_path={cfg['data_path']}",
         "--epochs=1", "--state=ERROR", "--load_col={'inter': ['user_id', 'item_id'], 'item': ['item_id', 'visual', 'audio', 'tags']}"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Test results of MetaMMF_MF on planted" in run.stdout
