"""The files of systemd/: checked by systemd's own tools, and against the code they run."""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from worker.cli.main import build_parser
from worker.settings import ENV_PREFIX, Settings, load_settings, masked

UNITS = Path(__file__).resolve().parent.parent / "systemd"
MAIN = UNITS / "taskmaster-worker.service"
TEMPLATE = UNITS / "taskmaster-worker@.service"
ROLES = ("intake", "worker", "scheduler")
INSTALLED_BINARY = "/usr/local/bin/taskmaster-worker"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed here, so the unit files cannot be checked with it")
    return path


def entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order; repeated keys kept."""
    section, out = "", []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def install_for_verify(unit: Path, directory: Path, name: str) -> Path:
    """Copy a unit with every Exec binary that is missing here replaced by one that exists.

    `systemd-analyze verify` refuses a unit whose commands are not executable; the installed
    path of taskmaster-worker becomes this test environment's console script.
    """
    here = Path(sys.executable).parent / "taskmaster-worker"
    fallback = str(here) if os.access(here, os.X_OK) else shutil.which("true") or "/bin/true"
    lines = []
    for line in unit.read_text().splitlines():
        key, sep, command = line.partition("=")
        if sep and key.startswith("Exec") and not line.startswith("#"):
            binary = command.split()[0].lstrip("-@:+!")
            if binary == INSTALLED_BINARY or not os.access(binary, os.X_OK):
                line = f"{key}={command.replace(binary, fallback, 1)}"
        lines.append(line)
    target = directory / name
    target.write_text("\n".join(lines) + "\n")
    return target


@pytest.mark.parametrize(
    "name", ["taskmaster-worker.service", *(f"taskmaster-worker@{r}.service" for r in ROLES)]
)
def test_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    """systemd-analyze verify reports nothing about the units: no unknown or invalid directive."""
    analyze = tool("systemd-analyze")
    source = TEMPLATE if "@" in name else MAIN
    unit = install_for_verify(source, tmp_path, name)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    problems = [line for line in output.splitlines() if "taskmaster-worker" in line]
    assert result.returncode == 0 and not problems, output


@pytest.mark.parametrize("name", ["taskmaster-worker.service", "taskmaster-worker@worker.service"])
def test_hardening_exposure_stays_low(tmp_path: Path, name: str) -> None:
    """systemd-analyze security rates the hardening block 2.0 ("OK") or better."""
    analyze = tool("systemd-analyze")
    unit = install_for_verify(TEMPLATE if "@" in name else MAIN, tmp_path, name)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_matches_the_main_unit() -> None:
    """The role template differs from the all-in-one unit only where a role must."""

    def comparable(path: Path) -> list[tuple[str, str, str]]:
        out = []
        for section, key, value in entries(path):
            if key == "Description" or value == "-/etc/taskmaster-worker/%i.env":
                continue
            value = value.replace(" --role %i", "").replace("taskmaster-worker-%i", "taskmaster-worker")
            out.append((section, key, value))
        return sorted(out)

    assert comparable(TEMPLATE) == comparable(MAIN)


def test_hardening_block_is_sorted() -> None:
    """The hardening block of each unit is in alphabetical order, so a line is easy to find."""
    for unit in (MAIN, TEMPLATE):
        text = unit.read_text()
        block = text.split("# Hardening, sorted", 1)[1].split("\n\n", 1)[0]
        keys = [line.split("=", 1)[0] for line in block.splitlines()[1:] if line and not line.startswith("#")]
        assert keys == sorted(keys), unit.name


def test_restart_policy_follows_the_exit_codes() -> None:
    """Exit 2 (configuration) is never restarted, exit 1 and 3 are, as the CLI documents them."""
    from worker.cli import common

    for unit in (MAIN, TEMPLATE):
        service = {key: value for section, key, value in entries(unit) if section == "Service"}
        assert service["RestartPreventExitStatus"] == str(common.EXIT_CONFIG)
        assert set(service["RestartForceExitStatus"].split()) == {
            str(common.EXIT_FAILURE),
            str(common.EXIT_UNAVAILABLE),
        }
        # on-failure would restart a failed ExecStartPre= config check, whatever its status.
        assert service["Restart"] == "on-abnormal"


def test_commands_parse_with_the_cli() -> None:
    """Every taskmaster-worker command line of the units is one the CLI accepts."""
    parser = build_parser()
    commands = []
    for unit in (MAIN, TEMPLATE):
        for _, key, value in entries(unit):
            if key.startswith("Exec") and value.startswith(INSTALLED_BINARY):
                commands.append(shlex.split(value)[1:])
    assert ["run", "--role", "%i"] in commands
    assert ["config", "--check"] in commands
    for args in commands:
        roles = ROLES if "%i" in args else ("",)
        for role in roles:
            parser.parse_args([role if arg == "%i" else arg for arg in args])


@pytest.mark.parametrize("unit", [MAIN, TEMPLATE], ids=lambda path: path.name)
def test_exec_start_pre_passes_in_the_units_environment(tmp_path: Path, unit: Path) -> None:
    """`config --check` succeeds with the unit's Environment= and directories, as systemd runs it."""
    here = Path(sys.executable).parent / "taskmaster-worker"
    if not os.access(here, os.X_OK):
        pytest.skip("the taskmaster-worker console script is not installed in this environment")
    service = [
        (key, value.replace("%i", "worker")) for section, key, value in entries(unit) if section == "Service"
    ]
    repo = UNITS.parent

    def relocate(path: str) -> str:
        """The unit's absolute paths, moved under tmp_path (schedules.yaml: the repository's)."""
        if path == "/etc/taskmaster-worker/schedules.yaml":
            return str(repo / "schedules.yaml")
        for root, into in (("/run/", "run/"), ("/var/lib/", "lib/")):
            if path.startswith(root):
                return str(tmp_path / into / path.removeprefix(root))
        raise AssertionError(f"{unit.name}: a path this test does not know how to relocate: {path}")

    # What systemd creates before ExecStartPre=.
    for key, value in service:
        if key in ("RuntimeDirectory", "StateDirectory"):
            root = "/run/" if key == "RuntimeDirectory" else "/var/lib/"
            Path(relocate(root + value)).mkdir(parents=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    for key, value in service:
        if key == "Environment":
            name, _, path = value.partition("=")
            env[name] = relocate(path)
    command = next(shlex.split(value) for key, value in service if key == "ExecStartPre")
    assert command[0] == INSTALLED_BINARY
    workdir = relocate(next(value for key, value in service if key == "WorkingDirectory"))
    result = subprocess.run(
        [str(here), *command[1:]],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stop_timeout_covers_the_shutdown_timeout() -> None:
    """TimeoutStopSec= leaves the daemon its whole drain time before systemd kills it."""
    shutdown_s = Settings.model_fields["shutdown_timeout"].default
    for unit in (MAIN, TEMPLATE):
        service = {key: value for section, key, value in entries(unit) if section == "Service"}
        assert int(service["TimeoutStopSec"].removesuffix("s")) >= shutdown_s + 10


def test_env_example_lists_every_setting_with_its_default() -> None:
    """taskmaster-worker.env.example has a commented line per setting, with the value it gets."""
    example = {}
    for line in (UNITS / "taskmaster-worker.env.example").read_text().splitlines():
        match = re.fullmatch(r"#(TASKMASTER_[A-Z0-9_]+)=(.*)", line)
        if match:
            example[match.group(1)] = match.group(2)
    set_by_unit = {}
    for _, key, value in entries(MAIN):
        if key == "Environment":
            name, _, setting = value.partition("=")
            set_by_unit[name] = setting
    expected = {
        name: set_by_unit.get(name, "" if default == "(unset)" else default)
        for name, default in masked(load_settings({})).items()
    }
    assert sorted(example) == sorted(expected)
    assert example == expected
    assert all(name.startswith(ENV_PREFIX) for name in example)


def test_credentials_reach_the_settings(tmp_path: Path) -> None:
    """Files of the credentials directory, named as systemd names them, become the settings."""
    service = entries(MAIN)
    loaded = [value for _, key, value in service if key == "LoadCredential"]
    fallback = [value for _, key, value in service if key == "SetCredential"]
    assert len(loaded) == 1 and len(fallback) == 1
    prefix, _, directory = loaded[0].partition(":")
    fallback_id, _, fallback_value = fallback[0].partition(":")
    # The literal under the same ID is what makes a missing directory not fatal.
    assert fallback_id == prefix
    assert directory == "/etc/taskmaster-worker/credentials"
    # What systemd makes of credentials/redis_url (and of the fallback): $CREDENTIALS_DIRECTORY.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / f"{prefix}_redis_url").write_text("redis://:pw@127.0.0.1:1/0\n")
    (credentials / fallback_id).write_text(fallback_value)
    settings = load_settings({"CREDENTIALS_DIRECTORY": str(credentials)})
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:pw@127.0.0.1:1/0"


def test_tmpfiles_creates_a_root_only_credentials_directory(tmp_path: Path) -> None:
    """systemd-tmpfiles accepts the file and makes the credentials directory 0700."""
    tmpfiles = tool("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles sets root ownership, which needs root")
    conf = UNITS / "taskmaster-worker.tmpfiles.conf"
    subprocess.run([tmpfiles, f"--root={tmp_path}", "--create", str(conf)], check=True, timeout=60)
    credentials = tmp_path / "etc/taskmaster-worker/credentials"
    assert credentials.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "etc/taskmaster-worker").stat().st_mode & 0o777 == 0o755


def test_sysusers_creates_the_service_user(tmp_path: Path) -> None:
    """systemd-sysusers accepts the file and creates the user the units name."""
    sysusers = tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    conf = UNITS / "taskmaster-worker.sysusers.conf"
    subprocess.run([sysusers, f"--root={tmp_path}", str(conf)], check=True, capture_output=True, timeout=60)
    passwd = (tmp_path / "etc/passwd").read_text()
    user = next(value for section, key, value in entries(MAIN) if key == "User")
    assert re.search(rf"^{user}:x:\d+:\d+:.*:/var/lib/taskmaster-worker:", passwd, re.MULTILINE), passwd


MDWE_CHECK = textwrap.dedent(
    """
    import ctypes, importlib, mmap, os, subprocess, sys, time

    # What MemoryDenyWriteExecute=yes enforces, set by the process itself (Linux >= 6.3).
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(77)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("a writable and executable mapping was allowed: the check proves nothing")
    except OSError:
        pass

    import redis
    from worker.cli.main import build_parser
    from worker.embedded_redis import server_binary
    from worker.settings import load_settings

    build_parser()
    for module in ["worker.daemon", "worker.process", "worker.http", "worker.sdnotify",
                   *load_settings({}).job_modules]:
        importlib.import_module(module)
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert callback(1) == 2

    sock = os.path.join(sys.argv[1], "redis.sock")
    server = subprocess.Popen(
        [server_binary(), "--port", "0", "--unixsocket", sock, "--dir", sys.argv[1], "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(unix_socket_path=sock, socket_timeout=5)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except (redis.ConnectionError, FileNotFoundError):
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.05)
    assert client.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "k", "v") == b"OK"
    server.terminate()
    server.wait(timeout=20)
    """
)


def test_memory_deny_write_execute_suits_the_daemon(tmp_path: Path) -> None:
    """The daemon's code and the embedded redis-server run with W^X memory enforced by the kernel."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(66, 0, 0, 0, 0) < 0:  # PR_GET_MDWE
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3): cannot reproduce MemoryDenyWriteExecute=")
    result = subprocess.run(
        [sys.executable, "-c", MDWE_CHECK, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode == 77:
        pytest.skip("prctl(PR_SET_MDWE) refused here")
    assert result.returncode == 0, result.stdout + result.stderr
