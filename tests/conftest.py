"""Shared fixtures: tiny models built once per session, isolated LANSKAP_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own LANSKAP_HOME and no stray config or env overrides."""
    home = tmp_path / "home"
    monkeypatch.setenv("LANSKAP_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    for var in (
        "LANSKAP_MODEL",
        "LANSKAP_CONFIG",
        "LANSKAP_DEVICE",
        "LANSKAP_DTYPE",
        "LANSKAP_FALLBACK",
        "LANSKAP_OUTPUT_DIR",
        "LANSKAP_LORA_DIRS",
        "LANSKAP_ALLOW_PICKLE",
        "LANSKAP_MODEL_CONFIG",
        "LANSKAP_GALLERY_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """A real PostgreSQL server for the session (tests/pgserver.py); skips with the reason where it can't run."""
    import pgserver

    why = pgserver.unavailable()
    if why:
        if os.environ.get("LANSKAP_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (CI) but {why}")
        pytest.skip(why)
    with pgserver.running() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server) -> str:  # type: ignore[no-untyped-def]
    """A fresh, empty database on the session's server."""
    return postgres_server.database()


@pytest.fixture(params=["sqlite", "postgresql"])
def gallery_url(request: pytest.FixtureRequest) -> str | None:
    """Each gallery test runs on both backends: None is the home's SQLite file."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_sd(models_dir: Path) -> Path:
    from lanskap.models.tiny import make_tiny

    return make_tiny(models_dir / "tiny-sd", "sd")


@pytest.fixture(scope="session")
def tiny_sdxl(models_dir: Path) -> Path:
    """A tiny SDXL base of the real classes: two text encoders, text_time addition embeddings."""
    from lanskap.models.tiny import make_tiny

    return make_tiny(models_dir / "tiny-sdxl", "sdxl")


@pytest.fixture(scope="session")
def tiny_sdxl_refiner(models_dir: Path) -> Path:
    from lanskap.models.tiny import make_tiny

    return make_tiny(models_dir / "tiny-sdxl-refiner", "sdxl-refiner")


@pytest.fixture(scope="session")
def tiny_inpaint(models_dir: Path) -> Path:
    """A 9-channel inpainting UNet, like stabilityai's SD 2 inpainting checkpoint."""
    from lanskap.models.tiny import make_tiny

    return make_tiny(models_dir / "tiny-sd-inpaint", "sd-inpaint")


@pytest.fixture(scope="session")
def tiny_lora(tiny_sd: Path, models_dir: Path) -> Path:
    from lanskap.models.tiny import make_tiny_lora

    return make_tiny_lora(tiny_sd, models_dir / "loras" / "mist-style.safetensors", seed=1)


@pytest.fixture(scope="session")
def tiny_lora2(tiny_sd: Path, models_dir: Path) -> Path:
    from lanskap.models.tiny import make_tiny_lora

    return make_tiny_lora(tiny_sd, models_dir / "loras" / "sunset-style.safetensors", seed=2)


@pytest.fixture(scope="session")
def foreign_lora(models_dir: Path) -> Path:
    """A LoRA for a base with a different text width (as SD 1.5's 768 is to SD 2.1's 1024)."""
    from lanskap.models.tiny import make_tiny, make_tiny_lora

    other = make_tiny(models_dir / "tiny-other-base", "sd", cross_attention_dim=24, seed=5)
    return make_tiny_lora(other, models_dir / "foreign" / "sd15-style.safetensors", seed=3)


@pytest.fixture(scope="session")
def engine(tiny_sd: Path):
    """One engine shared by many tests, as the API and UI share one."""
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine

    return Engine(settings=Settings(home=tiny_sd.parent / "engine-home", model=str(tiny_sd)))


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real ``lanskap`` command in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lanskap.cli.main", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def main_cli(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI entry point in this process, for tests of what a command says: no interpreter
    and torch start-up per call. Keep a ``run_cli`` where the process itself is the point."""
    from lanskap.cli.main import main

    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), rc, out.out, out.err)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A user error: nonzero exit, no traceback, one ``error:`` line that says what is wrong."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def stop_gently(proc: subprocess.Popen, timeout: float = 60) -> None:  # type: ignore[type-arg]
    """Ctrl-C a server (it takes down what it started, Ray included), then kill it if it hangs."""
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
