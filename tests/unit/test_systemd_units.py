"""The systemd unit, tmpfiles rule, example config and install script, checked by systemd's own
tools (`systemd-analyze verify`, `systemd-tmpfiles --root`) in throwaway roots.

The tools come from Debian's `systemd` package (scripts/install-deps.sh). Without them these
tests skip locally but fail in CI (env CI or DSMOUNT_REQUIRE_FUSE set), so CI cannot go green
by silently not checking.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from dsmount.control.protocol import DEFAULT_SOCKET
from dsmount.node.config import Config, DaemonSection, parse_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd/dsmount.service"
TMPFILES = REPO / "systemd/dsmount-jupyter.conf"
EXAMPLE_CONFIG = REPO / "systemd/dsmount.toml"
INSTALL = REPO / "scripts/install-service.sh"

# Settings that make systemd run the service in its own mount namespace, where the FUSE mount
# would be invisible to the host (see the header of dsmount.service).
MOUNT_NAMESPACE_SETTINGS = {
    "PrivateMounts", "PrivateTmp", "PrivateDevices", "PrivateNetwork", "PrivateIPC",
    "PrivatePIDs", "PrivateUsers", "ProtectSystem", "ProtectHome", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc",
    "ProcSubset", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths",
    "NoExecPaths", "BindPaths", "BindReadOnlyPaths", "TemporaryFileSystem", "RootDirectory",
    "RootImage", "MountImages", "ExtensionImages", "ExtensionDirectories", "DynamicUser",
    "MountAPIVFS", "LogNamespace", "NetworkNamespacePath", "IPCNamespacePath",
}  # fmt: skip


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found (apt-get install systemd; scripts/install-deps.sh does)"
    if os.environ.get("CI") or os.environ.get("DSMOUNT_REQUIRE_FUSE"):
        pytest.fail(message)
    pytest.skip(message)


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]} keeping repeated keys (Environment= etc.)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path}: {raw!r} outside a section"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def system_unit_dir() -> Path:
    for candidate in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if (Path(candidate) / "sysinit.target").exists():
            return Path(candidate)
    pytest.fail("systemd is installed but its unit directory (sysinit.target) was not found")


def make_root(root: Path) -> Path:
    """A filesystem root holding the distribution's units, so that dependencies such as
    network-online.target and sysinit.target resolve when verifying with --root."""
    require_tool("systemd-analyze")
    shutil.copytree(system_unit_dir(), root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
    return root


def fake_executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


def verify(root: Path, unit_name: str = "dsmount.service") -> tuple[int, list[str]]:
    """systemd-analyze verify under `root`; (exit status, output lines about our unit)."""
    result = subprocess.run(
        [require_tool("systemd-analyze"), "verify", f"--root={root}", unit_name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 even for unknown keys or unparsable values (it only warns), so every line
    # that mentions our unit counts as a failure.
    ours = [
        line for line in (result.stdout + result.stderr).splitlines() if "dsmount" in line.lower()
    ]
    return result.returncode, ours


def exec_start(unit: dict[str, list[tuple[str, str]]]) -> list[str]:
    (line,) = values(unit, "Service", "ExecStart")
    return line.split()


# --- systemd-analyze verify ----------------------------------------------------------------------


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    shutil.copy(UNIT, root / "etc/systemd/system/dsmount.service")
    fake_executable(root / exec_start(parse_unit(UNIT))[0].lstrip("/"))
    status, ours = verify(root)
    assert (status, ours) == (0, [])


def test_verify_reports_a_broken_directive(tmp_path: Path) -> None:
    # The harness itself must catch mistakes: a copy of the unit with bad values is flagged.
    root = make_root(tmp_path / "root")
    broken = UNIT.read_text().replace("KillMode=mixed", "KillMode=gently")
    broken = broken.replace("DeviceAllow=/dev/fuse rw", "DeviceAllow=/dev/fuse rwz")
    (root / "etc/systemd/system/dsmount.service").write_text(broken)
    fake_executable(root / exec_start(parse_unit(UNIT))[0].lstrip("/"))
    _, ours = verify(root)
    assert any("gently" in line for line in ours), ours
    assert any("rwz" in line for line in ours), ours


def test_verify_reports_a_missing_executable(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    shutil.copy(UNIT, root / "etc/systemd/system/dsmount.service")
    status, ours = verify(root)  # no /usr/local/bin/dsmount in this root
    assert status != 0
    assert any("/usr/local/bin/dsmount" in line for line in ours), ours


# --- what the unit promises the daemon and the host ----------------------------------------------


def test_unit_keeps_the_host_mount_namespace() -> None:
    unit = parse_unit(UNIT)
    keys = {k for k, _ in unit["Service"]}
    assert not keys & MOUNT_NAMESPACE_SETTINGS, keys & MOUNT_NAMESPACE_SETTINGS
    assert set(values(unit, "Service", "MountFlags")) <= {"shared"}


def test_unit_matches_the_daemon_contract() -> None:
    unit = parse_unit(UNIT)
    svc = dict(unit["Service"])  # single-valued keys
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert int(svc["WatchdogSec"]) > 0
    assert svc["KillMode"] == "mixed"
    assert svc["Restart"] == "on-failure"
    assert svc["RuntimeDirectory"] == svc["StateDirectory"] == svc["CacheDirectory"] == "dsmount"
    argv = exec_start(unit)
    assert argv[1:3] == ["daemon", "--foreground"]
    assert argv[argv.index("--config") + 1] == "/etc/dsmount/dsmount.toml"
    env = dict(v.split("=", 1) for v in values(unit, "Service", "Environment"))
    assert env["DSMOUNT_SOCKET"] == DEFAULT_SOCKET
    # The socket lives in the RuntimeDirectory systemd creates and removes for us.
    assert Path(DEFAULT_SOCKET).parent == Path("/run") / svc["RuntimeDirectory"]
    # The state dir default is the StateDirectory.
    assert Path(DaemonSection().state_dir) == Path("/var/lib") / svc["StateDirectory"]
    assert "/dev/fuse rw" in values(unit, "Service", "DeviceAllow")
    assert "CAP_SYS_ADMIN" in svc["CapabilityBoundingSet"].split()
    # The crash clean-up unmounts the default mountpoint.
    (stop_post,) = values(unit, "Service", "ExecStopPost")
    assert stop_post.split()[-1] == DaemonSection().mountpoint
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]


def test_exec_start_is_where_the_installer_links_dsmount() -> None:
    match = re.search(r"^BIN_LINK=(\S+)", INSTALL.read_text(), re.MULTILINE)
    assert match, "BIN_LINK= not found in install-service.sh"
    assert exec_start(parse_unit(UNIT))[0] == match.group(1)


# --- tmpfiles.d ----------------------------------------------------------------------------------


def run_tmpfiles(root: Path, conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_tool("systemd-tmpfiles"), "--create", f"--root={root}", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_tmpfiles_creates_the_home_link(tmp_path: Path) -> None:
    (tmp_path / "home/jovyan").mkdir(parents=True)
    result = run_tmpfiles(tmp_path, TMPFILES)
    assert result.returncode == 0, result.stderr
    link = tmp_path / "home/jovyan/datastores"
    assert link.is_symlink()
    assert os.readlink(link) == "/datastores"
    # Idempotent: a second run changes nothing and succeeds.
    assert run_tmpfiles(tmp_path, TMPFILES).returncode == 0
    assert os.readlink(link) == "/datastores"


def test_tmpfiles_never_replaces_a_users_directory(tmp_path: Path) -> None:
    d = tmp_path / "home/jovyan/datastores"
    d.mkdir(parents=True)
    (d / "mine.csv").write_text("1,2,3")
    run_tmpfiles(tmp_path, TMPFILES)
    assert d.is_dir() and not d.is_symlink()
    assert (d / "mine.csv").read_text() == "1,2,3"


# --- example config ------------------------------------------------------------------------------


def uncommented_defaults(text: str) -> str:
    """The example with every '# key = value' line before the [[datastore]] examples enabled."""
    out = []
    for line in text.splitlines():
        if "[[datastore]]" in line:
            break
        out.append(re.sub(r"^# (?=[a-z_]+ = )", "", line))
    return "\n".join(out)


def test_example_config_parses_to_the_defaults() -> None:
    assert parse_config(tomllib.loads(EXAMPLE_CONFIG.read_text())) == Config()


def test_example_config_documents_every_key_with_its_real_default() -> None:
    text = uncommented_defaults(EXAMPLE_CONFIG.read_text())
    data = tomllib.loads(text)
    documented = {(s, k) for s, keys in data.items() for k in keys}
    cfg = Config()
    expected = {
        (section, key)
        for section in ("daemon", "fs", "cache", "metadata", "retry", "metrics")
        for key in vars(getattr(cfg, section))
    }
    assert documented == expected
    # Each documented value, parsed the way the daemon parses it, equals the code's default.
    assert parse_config(data) == cfg


def test_example_datastore_entries_parse() -> None:
    text = EXAMPLE_CONFIG.read_text()
    start = text.index("# [[datastore]]")
    block = "\n".join(
        re.sub(r"^# ?", "", line) for line in text[start:].splitlines() if line.startswith("#")
    )
    block = block.split("\nOther auth kinds")[0]
    cfg = parse_config(tomllib.loads(block))
    assert [d["kind"] for d in cfg.datastores] == ["local", "blob", "blob", "fileshare"]


# --- install-service.sh --------------------------------------------------------------------------


def run_install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), "--no-venv", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def staged_root(tmp_path: Path, with_jovyan: bool) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    passwd = "root:x:0:0:root:/root:/bin/bash\n"
    if with_jovyan:
        passwd += "jovyan:x:1000:100::/home/jovyan:/bin/bash\n"
        (root / "home/jovyan").mkdir(parents=True)
    (root / "etc/passwd").write_text(passwd)
    fake_executable(root / "opt/fake/bin/dsmount")
    return root


def test_install_stages_everything_and_is_safe_to_rerun(tmp_path: Path) -> None:
    root = staged_root(tmp_path, with_jovyan=True)
    first = run_install(root, "--bin", "/opt/fake/bin/dsmount")
    assert first.returncode == 0, first.stderr

    assert os.readlink(root / "usr/local/bin/dsmount") == "/opt/fake/bin/dsmount"
    unit = root / "etc/systemd/system/dsmount.service"
    assert unit.read_text() == UNIT.read_text()
    assert unit.stat().st_mode & 0o777 == 0o644
    config = root / "etc/dsmount/dsmount.toml"
    assert config.read_text() == EXAMPLE_CONFIG.read_text()
    assert config.stat().st_mode & 0o777 == 0o640
    assert (root / "etc/tmpfiles.d/dsmount-jupyter.conf").read_text() == TMPFILES.read_text()
    assert (root / "datastores").is_dir()
    assert "systemctl not called" in first.stdout

    # The admin edits the config; a second run must keep it and change nothing else.
    config.write_text('[daemon]\nlog_level = "debug"\n')
    second = run_install(root, "--bin", "/opt/fake/bin/dsmount")
    assert second.returncode == 0, second.stderr
    assert config.read_text() == '[daemon]\nlog_level = "debug"\n'
    assert "kept existing: /etc/dsmount/dsmount.toml" in second.stdout
    assert "unchanged: /etc/systemd/system/dsmount.service" in second.stdout
    assert "installed:" not in second.stdout

    # What was installed works together: the unit verifies inside the root (its ExecStart
    # resolves through the installed symlink) and the tmpfiles rule creates the home link.
    make_root(root)
    assert verify(root) == (0, [])
    result = run_tmpfiles(root, root / "etc/tmpfiles.d/dsmount-jupyter.conf")
    assert result.returncode == 0, result.stderr
    assert os.readlink(root / "home/jovyan/datastores") == "/datastores"


def test_install_skips_the_jupyter_rule_without_a_jovyan_home(tmp_path: Path) -> None:
    root = staged_root(tmp_path, with_jovyan=False)
    result = run_install(root, "--bin", "/opt/fake/bin/dsmount")
    assert result.returncode == 0, result.stderr
    assert not (root / "etc/tmpfiles.d/dsmount-jupyter.conf").exists()
    assert "skipped: /etc/tmpfiles.d/dsmount-jupyter.conf" in result.stdout
    forced = run_install(root, "--bin", "/opt/fake/bin/dsmount", "--jupyter-link", "yes")
    assert forced.returncode == 0, forced.stderr
    assert (root / "etc/tmpfiles.d/dsmount-jupyter.conf").exists()


def test_install_refuses_bad_usage(tmp_path: Path) -> None:
    root = staged_root(tmp_path, with_jovyan=False)
    missing = run_install(root, "--bin", "/opt/nothing/dsmount")
    assert missing.returncode != 0
    assert "not an executable" in missing.stderr
    no_bin = run_install(root)
    assert no_bin.returncode != 0
    assert "--bin" in no_bin.stderr
    venv_in_root = subprocess.run(
        ["bash", str(INSTALL), "--root", str(root)], capture_output=True, text=True, timeout=60
    )
    assert venv_in_root.returncode != 0
    assert "--no-venv" in venv_in_root.stderr
    assert not (root / "etc/systemd/system/dsmount.service").exists()
