"""The examples, the notebook, the docs build and the README, exercised for real.

Each example runs at ``--small`` size in its own process (this session may already own a
SparkContext); they run two at a time. One also goes through ``spark-submit``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = [
    "mnist_mlp_spark.py",
    "mllib_labeled_points.py",
    "ml_pipeline_classification.py",
    "ml_pipeline_regression.py",
    "otto_pipeline.py",
    "hyperparam_search.py",
    "distkeras_higgs.py",
    "save_load_hadoop.py",
    "streaming_inference.py",
]
EXPECTED_OUTPUT = {
    "mllib_labeled_points.py": "test accuracy",
    "ml_pipeline_classification.py": "test accuracy",
    "ml_pipeline_regression.py": "test RMSE",
    "otto_pipeline.py": "test accuracy",
    "hyperparam_search.py": "soft-voting ensemble",
    "distkeras_higgs.py": "ADAG: training time",
    "save_load_hadoop.py": "predictions identical",
    "mnist_mlp_spark.py": "test accuracy",
    "streaming_inference.py": "streaming predictions identical to batch: True",
}
TIMEOUT = 600  # per subprocess; the whole set gets ALL_EXAMPLES_TIMEOUT
ALL_EXAMPLES_TIMEOUT = 3600


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        KERAS_BACKEND=env.get("KERAS_BACKEND", "tensorflow"),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.pop("PYSPARK_GATEWAY_PORT", None)
    env.pop("PYSPARK_GATEWAY_SECRET", None)
    return env


def _run(cmd: list[str], cwd: Path = ROOT, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # report as a failed run, with what it printed
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return subprocess.CompletedProcess(cmd, -1, out, err + f"\n[timed out after {timeout}s]")


def _spark_submit() -> str:
    from pyspark.find_spark_home import _find_spark_home

    return str(Path(_find_spark_home()) / "bin" / "spark-submit")


@pytest.fixture(scope="module")
def example_runs() -> dict[str, subprocess.CompletedProcess]:
    """Every example at --small through python, one through spark-submit, and the notebook through
    nbclient, each in its own process, two at a time."""
    jobs = {
        "notebook": [
            sys.executable,
            "-c",
            NOTEBOOK_RUNNER,
            str(EXAMPLES / "Spark_ML_Pipeline.ipynb"),
            str(EXAMPLES),
            str(TIMEOUT),
        ]
    }  # the longest first
    jobs.update({name: [sys.executable, str(EXAMPLES / name), "--small"] for name in SCRIPTS})
    jobs["spark-submit save_load_hadoop.py"] = [
        _spark_submit(),
        "--master",
        "local[2]",
        "--conf",
        "spark.ui.enabled=false",
        str(EXAMPLES / "save_load_hadoop.py"),
        "--small",
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run, cmd) for name, cmd in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


# What each example's result must beat: uniform chance by a margin for the classifiers (4, 3, 9
# and 10 classes), the script's own predict-the-mean baseline for the regression.
ACCURACY_AT_LEAST = {
    "mnist_mlp_spark.py": 0.5,
    "ml_pipeline_classification.py": 0.35,
    "mllib_labeled_points.py": 0.43,
    "otto_pipeline.py": 0.21,
}
TF_STARTUP_LINES = (
    "oneDNN custom operations",
    "absl::InitializeLog",
    "cpu_feature_guard",
    "This TensorFlow binary is optimized",
)


def _accuracy(text: str) -> float:
    found = re.findall(r"test accuracy(?: on \d+ rows)?:? ([0-9.]+)", text)
    assert found, text[-3000:]
    return float(found[-1])


def _check(run: subprocess.CompletedProcess, expected: str, name: str | None = None) -> None:
    tail = run.stdout[-3000:] + "\n--- stderr ---\n" + run.stderr[-6000:]
    assert run.returncode == 0, tail
    assert expected in run.stdout + run.stderr, tail
    if name in ACCURACY_AT_LEAST:
        assert _accuracy(run.stdout + run.stderr) > ACCURACY_AT_LEAST[name], tail
    if name == "ml_pipeline_regression.py":
        rmse, baseline = map(
            float, re.search(r"test RMSE ([0-9.]+) \(predict-the-mean baseline ([0-9.]+)\)", run.stdout).groups()
        )
        assert rmse < 0.9 * baseline, tail


@pytest.mark.slow
@pytest.mark.timeout(ALL_EXAMPLES_TIMEOUT)  # the first one waits for the shared example_runs fixture
@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_with_python(example_runs, name):
    _check(example_runs[name], EXPECTED_OUTPUT[name], name)


@pytest.mark.timeout(TIMEOUT + 60)
def test_first_example_learns_offline_and_runs_quietly():
    """The README's first command as a new user meets it: no network (MNIST cannot be downloaded),
    a plain environment. It must show learning (random data cannot reach the threshold) and its
    standard error holds no traceback and no TensorFlow C++ start-up lines."""
    env = _env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env["ELEPHAS_EXAMPLES_OFFLINE"] = "1"  # the download fails as it does offline
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "mnist_mlp_spark.py"), "--small"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    tail = run.stdout[-3000:] + "\n--- stderr ---\n" + run.stderr[-6000:]
    assert run.returncode == 0, tail
    assert "synthetic" in run.stderr, tail  # it says which data it used
    assert _accuracy(run.stdout + run.stderr) > ACCURACY_AT_LEAST["mnist_mlp_spark.py"], tail
    assert "Traceback" not in run.stderr, tail
    assert not [line for line in TF_STARTUP_LINES if line in run.stderr], tail
    training = re.search(r"Epoch 1/3(.*)epoch 3/3 done", run.stderr, flags=re.S)
    assert training and "[Stage " not in training.group(1), tail  # Spark's bar stays off during fit


@pytest.mark.slow
@pytest.mark.timeout(ALL_EXAMPLES_TIMEOUT)
def test_example_runs_with_spark_submit(example_runs):
    _check(example_runs["spark-submit save_load_hadoop.py"], "predictions identical")


def test_otto_generator_writes_the_otto_layout(tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import otto_pipeline
    finally:
        sys.path.remove(str(EXAMPLES))
    path = otto_pipeline.generate_otto_csv(str(tmp_path / "train.csv"), rows=50, seed=3)
    lines = Path(path).read_text().splitlines()
    header = lines[0].split(",")
    assert header == ["id"] + [f"feat_{i}" for i in range(1, 94)] + ["target"]
    assert len(lines) == 51
    for line in lines[1:]:
        cells = line.split(",")
        assert len(cells) == 95
        assert all(c.isdigit() for c in cells[:94])
        assert re.fullmatch(r"Class_[1-9]", cells[-1])
    assert otto_pipeline.generate_otto_csv(str(tmp_path / "again.csv"), rows=50, seed=3)
    assert (tmp_path / "again.csv").read_text() == Path(path).read_text()


NOTEBOOK_RUNNER = """
import sys
import nbclient, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
# ipykernel ships a 'python3' kernelspec whose argv[0] is 'python', which jupyter_client replaces
# with sys.executable: the kernel is this interpreter, also in a fresh venv with only ipykernel.
nbclient.NotebookClient(nb, kernel_name="python3", timeout=int(sys.argv[3]),
                        resources={"metadata": {"path": sys.argv[2]}}).execute()
for cell in nb.cells:
    for output in cell.get("outputs", []):
        print(output.get("text", ""), end="")
"""


@pytest.mark.slow
@pytest.mark.timeout(ALL_EXAMPLES_TIMEOUT)
def test_notebook_executes_top_to_bottom(example_runs):
    run = example_runs["notebook"]
    _check(run, "test accuracy")
    assert "reloaded pipeline gives the same predictions: True" in run.stdout, run.stdout[-3000:]


def test_mkdocs_build_strict(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _readme_blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.slow
@pytest.mark.timeout(2 * TIMEOUT)
def test_readme_python_blocks_run(tmp_path):
    blocks = _readme_blocks("python")
    assert blocks, "README.md has no python code block"
    for i, block in enumerate(blocks):
        script = tmp_path / f"readme_block_{i}.py"
        script.write_text(textwrap.dedent(block))
        run = _run([sys.executable, str(script)], cwd=tmp_path)
        assert run.returncode == 0, (
            f"README python block {i} failed:\n{block}\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
        )


def test_readme_bash_blocks_are_what_ci_and_the_suite_run():
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    install = "python3 -m venv .venv && . .venv/bin/activate && pip install . && "
    allowed = {
        ci_command,  # the test command: exactly what .ci/run runs
        # the main example: the same venv recipe, then the example this suite runs at --small
        install + "python examples/mnist_mlp_spark.py --small",
    }
    blocks = [b.strip() for b in _readme_blocks("bash")]
    assert blocks, "README.md has no bash code block"
    for block in blocks:
        assert block in allowed, f"README bash block is not a command CI or this suite runs:\n{block}"
    assert ci_command in blocks, "README must show the exact CI test command (last line of .ci/run)"
    assert "mnist_mlp_spark.py" in SCRIPTS
