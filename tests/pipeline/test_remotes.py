"""Reviewers pulling exact bytes through real remote servers: OpenSSH (dvc-ssh) and S3 (dvc-s3).

Both servers run on 127.0.0.1 for this module's lifetime, nothing else is contacted:

* ``sshd`` from Debian's ``openssh-server`` (.ci/run installs it) on a free port with its own
  host key (written to a temporary ``~/.ssh/known_hosts``: host keys are checked) and a temporary
  user key; the DVC remote ``ssh://<user>@127.0.0.1:<port>/<folder>`` gets the key file through
  ``.dvc/config.local`` (``dvc remote modify --local``), as docs/sharing.md tells reviewers.
* moto's standalone S3 server (no MinIO server binary comes from the package registries) with
  authentication on (``INITIAL_NO_AUTH_ACTION_COUNT``): an IAM user with an access key and an
  ``s3:*`` policy; the maintainer pushes with ``.dvc/config.local`` credentials, the reviewer
  pulls with ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the environment.

For each: ``dvc push``, a fresh ``git clone`` in another folder, ``make pull VARIANT=tiny`` (the
real Makefile, ``PULL_DVC`` = this DVC), md5 of every pulled file equal to the pushed ones; a wrong
key / secret makes ``make pull`` fail with one clear ``ERROR`` line naming the cause ("failed to
connect to ssh ... Permission denied for user", "failed to connect to s3 ... Forbidden"; DVC adds
only its summary line "failed to pull data from the cloud"); a ``dvc push`` killed (SIGKILL) after its first
upload and run again leaves the remote identical, object for object, to an uninterrupted push
(besides, on SSH, at most the temporary file of the one upload the kill cut, which DVC never reads).
SSH only: dvc-ssh does not check the host key, so a tampered object is refused only with the
remote's ``verify = true`` (shown with and without it).
A server that cannot start here skips its tests with the reason; under CI (``CI=true``; .ci/run
installs both) that fails them instead.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="git and make required"),
]

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def _cannot_start(reason: str) -> None:
    """Skip where a server cannot start here; under CI (``CI=true``, .ci/run installs both) fail instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the remote round trips: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, seconds: float = 20.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Server:
    """One started server and how a repository talks to it."""

    name: str
    version: str
    configure: Callable[[Path, str, bool], None]  # (repo, location, good credentials): remote + config.local
    url: Callable[[str], str]  # location -> remote URL
    objects: Callable[[str], dict[str, bytes]]  # location -> remote objects (path -> bytes)
    count: Callable[[str], int]  # location -> number of remote objects (cheap: polled during a push)
    env: dict = field(default_factory=dict)  # extra environment of every DVC call (HOME, endpoint, ...)
    reviewer_env: Callable[[bool], dict] = lambda good: {}  # credentials a reviewer puts in the environment
    n: list = field(default_factory=lambda: [0])

    def location(self) -> str:
        self.n[0] += 1
        return f"store{self.n[0]}"


def _ssh_server(tmp: Path, kit) -> tuple[Server, subprocess.Popen]:
    if not (Path(SSHD).exists() and Path(SSH_KEYGEN).exists()):
        _cannot_start(f"OpenSSH server not installed ({SSHD}; Debian openssh-server, which .ci/run installs)")
    for key in ("host", "user", "wrong"):
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(tmp / key)], check=True)
    (tmp / "authorized_keys").write_text((tmp / "user.pub").read_text())
    try:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
    except OSError as exc:
        _cannot_start(f"sshd needs /run/sshd: {exc}")
    user, port = pwd.getpwuid(os.getuid()).pw_name, _free_port()  # not $USER: it may name another
    (tmp / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host'}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n"
        f"StrictModes no\nAllowUsers {user}\nSubsystem sftp internal-sftp\n"
    )
    log = (tmp / "sshd.log").open("w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")], stdout=log, stderr=log)
    if not _wait_port(port, proc):
        _stop(proc)
        _cannot_start(f"sshd did not start: {(tmp / 'sshd.log').read_text()[-500:]}")
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    host_pub = " ".join((tmp / "host.pub").read_text().split()[:2])
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    storage = tmp / "storage"
    storage.mkdir()
    version = subprocess.run([SSHD, "-V"], capture_output=True, text=True).stderr.strip().splitlines()[0]

    def url(loc: str) -> str:
        return f"ssh://{user}@127.0.0.1:{port}{storage / loc}"

    def configure(repo: Path, loc: str, good: bool) -> None:
        kit.run([kit.DVC, "remote", "add", "-f", "-d", "store", url(loc)], repo, kit.env(**srv.env))
        keyfile = tmp / ("user" if good else "wrong")
        kit.run([kit.DVC, "remote", "modify", "--local", "store", "keyfile", str(keyfile)], repo, kit.env(**srv.env))

    def objects(loc: str) -> dict[str, bytes]:
        return kit.files(storage / loc) if (storage / loc).is_dir() else {}

    def count(loc: str) -> int:
        return sum(1 for p in (storage / loc).rglob("*") if p.is_file()) if (storage / loc).is_dir() else 0

    srv = Server("ssh", version, configure, url, objects, count, env={"HOME": str(home)})
    srv.storage = storage  # type: ignore[attr-defined]
    srv.known_hosts = home / ".ssh" / "known_hosts"  # type: ignore[attr-defined]
    srv.other_host_key = " ".join((tmp / "wrong.pub").read_text().split()[:2])  # type: ignore[attr-defined]
    return srv, proc


MOTO_USER_POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'


def _s3_server(tmp: Path, kit) -> tuple[Server, subprocess.Popen]:
    try:
        import boto3
        import moto
    except ImportError as exc:
        _cannot_start(f"moto[server] not installed: {exc}")
    port = _free_port()
    log = (tmp / "moto.log").open("w")
    # the first 3 requests (IAM set-up below) go unauthenticated, every later one is checked
    proc = subprocess.Popen(
        [str(kit.BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=log, env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3"),
    )
    if not _wait_port(port, proc):
        _stop(proc)
        _cannot_start(f"moto S3 server did not start: {(tmp / 'moto.log').read_text()[-500:]}")
    endpoint = f"http://127.0.0.1:{port}"
    common = dict(endpoint_url=endpoint, region_name="us-east-1")
    iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **common)
    iam.create_user(UserName="dfpipe")
    key = iam.create_access_key(UserName="dfpipe")["AccessKey"]
    iam.put_user_policy(UserName="dfpipe", PolicyName="s3", PolicyDocument=MOTO_USER_POLICY)
    good = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    bad = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    s3 = boto3.client("s3", aws_access_key_id=good["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=good["AWS_SECRET_ACCESS_KEY"], **common)
    s3.create_bucket(Bucket="dfpipe")
    home = tmp / "home"
    home.mkdir()

    def url(loc: str) -> str:
        return f"s3://dfpipe/{loc}"

    def configure(repo: Path, loc: str, ok: bool) -> None:
        creds = good if ok else bad
        e = kit.env(**srv.env)
        kit.run([kit.DVC, "remote", "add", "-f", "-d", "store", url(loc)], repo, e)
        kit.run([kit.DVC, "remote", "modify", "store", "endpointurl", endpoint], repo, e)
        kit.run([kit.DVC, "remote", "modify", "--local", "store", "access_key_id", creds["AWS_ACCESS_KEY_ID"]], repo, e)
        kit.run([kit.DVC, "remote", "modify", "--local", "store", "secret_access_key", creds["AWS_SECRET_ACCESS_KEY"]],
                repo, e)

    def objects(loc: str) -> dict[str, bytes]:
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="dfpipe", Prefix=f"{loc}/"):
            for obj in page.get("Contents", []):
                out[obj["Key"][len(loc) + 1:]] = s3.get_object(Bucket="dfpipe", Key=obj["Key"])["Body"].read()
        return out

    def count(loc: str) -> int:
        return s3.list_objects_v2(Bucket="dfpipe", Prefix=f"{loc}/").get("KeyCount", 0)

    # no AWS profile / config of the machine may stand in for the credentials under test
    env = {"HOME": str(home), "AWS_CONFIG_FILE": str(home / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    srv = Server("s3", f"moto {moto.__version__} (S3 server)", configure, url, objects, count, env=env,
                 reviewer_env=lambda ok: good if ok else bad)
    return srv, proc


@pytest.fixture(scope="module")
def base_repo(tmp_path_factory, kit) -> tuple[Path, dict[str, str]]:
    """The tiny repository, one item per shard (about 90 files to push), and its variant's md5s."""
    repo = kit.build(tmp_path_factory.mktemp("remotes"), shard_size=1)
    return repo, kit.md5s(repo / "data/variants/tiny")


@pytest.fixture(scope="module", params=["ssh", "s3"])
def server(request, tmp_path_factory, kit):
    tmp = tmp_path_factory.mktemp(request.param)
    srv, proc = (_ssh_server if request.param == "ssh" else _s3_server)(tmp, kit)
    print(f"{srv.name} server: {srv.version}")
    yield srv
    _stop(proc)


def _maintainer(base_repo, server: Server, tmp_path: Path, kit, loc: str) -> Path:
    """A copy of the tiny repository (with its DVC cache) whose default remote is ``loc`` on ``server``."""
    repo = tmp_path / "maintainer"
    shutil.copytree(base_repo[0], repo, symlinks=True)
    server.configure(repo, loc, True)
    kit.run(["git", "commit", "-q", "-am", f"remote {server.name}"], repo)
    return repo


def test_push_clone_make_pull_md5_identical(base_repo, server, tmp_path, kit):
    loc = server.location()
    repo = _maintainer(base_repo, server, tmp_path, kit, loc)
    kit.run([kit.DVC, "push", "-q"], repo, kit.env(**server.env))
    assert len(server.objects(loc)) > 40

    clone = tmp_path / "reviewer"
    kit.run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / ".dvc" / "config.local").exists()  # credentials never travel with git
    server.configure(clone, loc, True)  # the reviewer's own credentials (ssh: key file in config.local)
    if server.reviewer_env(True):  # s3: from the environment instead
        (clone / ".dvc" / "config.local").unlink()
    env = kit.env(**{**server.env, **server.reviewer_env(True)})
    proc = subprocess.run(["make", "pull", "VARIANT=tiny", f"PULL_DVC={kit.DVC}"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"make pull failed:\n{proc.stdout}\n{proc.stderr}"
    assert kit.md5s(clone / "data/variants/tiny") == base_repo[1]
    assert not (clone / "data/faces").exists()


def test_wrong_credentials_one_clear_error_line(base_repo, server, tmp_path, kit):
    loc = server.location()
    repo = _maintainer(base_repo, server, tmp_path, kit, loc)
    kit.run([kit.DVC, "push", "-q", "variant@tiny"], repo, kit.env(**server.env))
    clone = tmp_path / "reviewer"
    kit.run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    results = {}
    for ok in (False, True):  # True: the control, same clone, right credentials
        server.configure(clone, loc, ok)
        if server.reviewer_env(ok):
            (clone / ".dvc" / "config.local").unlink()
        env = kit.env(**{**server.env, **server.reviewer_env(ok)})
        results[ok] = subprocess.run(["make", "pull", "VARIANT=tiny", f"PULL_DVC={kit.DVC}"], cwd=clone, env=env,
                                     capture_output=True, text=True, timeout=300)
    bad, good = results[False], results[True]
    assert good.returncode == 0, good.stderr
    assert kit.md5s(clone / "data/variants/tiny") == base_repo[1]
    assert bad.returncode != 0
    # DVC 3.67 prints the cause, then a summary ("failed to pull data from the cloud - N files failed")
    errors = [line for line in (bad.stdout + bad.stderr).splitlines() if line.startswith("ERROR")]
    causes = [line for line in errors if not line.startswith("ERROR: failed to pull data from the cloud")]
    assert len(causes) == 1 and len(errors) <= 2, bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    words = {"ssh": "permission denied for user", "s3": "forbidden"}[server.name]
    assert causes[0].startswith(f"ERROR: failed to connect to {server.name} ") and words in causes[0].lower(), causes[0]
    print(f"{server.name} wrong credentials: {causes[0]}")


def test_push_killed_halfway_then_rerun_is_identical(base_repo, server, tmp_path, kit):
    reference = server.location()
    repo = _maintainer(base_repo, server, tmp_path, kit, reference)
    env = kit.env(**server.env)
    kit.run([kit.DVC, "push", "-q", "variant@tiny"], repo, env)
    want = server.objects(reference)
    assert len(want) > 40

    loc = server.location()
    server.configure(repo, loc, True)
    proc = subprocess.Popen([kit.DVC, "push", "-q", "-j", "1", "variant@tiny"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    seen = 0
    end = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < end:
        seen = server.count(loc)
        if seen >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(30)
    partial = server.objects(loc)
    assert 0 < len(partial) < len(want), f"push not caught half-way: {len(partial)} of {len(want)} objects"
    kit.run([kit.DVC, "push", "-q", "variant@tiny"], repo, env)
    got = server.objects(loc)
    # an upload cut by SIGKILL may leave its temporary file (SSH: "<dir>/.<token>.tmp", never an
    # object name, never read by DVC); every object itself must be there, complete, and nothing else
    stray = sorted(k for k in got if re.fullmatch(r"files/md5/[0-9a-f]{2}/\.[\w-]+\.tmp", k))
    assert {k: v for k, v in got.items() if k not in stray} == want
    assert len(stray) <= 1  # one upload in flight (-j 1)
    print(f"{server.name}: killed at {len(partial)} of {len(want)} objects; rerun identical; stray temp files {stray}")



def test_ssh_host_key_unchecked_so_verify_the_objects(base_repo, server, tmp_path, kit):
    """dvc-ssh 4.3 / sshfs do not check the server's host key (sshfs passes ``known_hosts=None``), so
    a server impersonating the remote is not refused: the pulled bytes must be checked instead.
    ``verify = true`` on the remote makes DVC re-hash every object it downloads; the control without it
    shows a tampered object reaching the workspace silently. docs/sharing.md tells maintainers to set it."""
    if server.name != "ssh":
        pytest.skip("SSH only")
    loc = server.location()
    repo = _maintainer(base_repo, server, tmp_path, kit, loc)
    kit.run([kit.DVC, "push", "-q", "variant@tiny"], repo, kit.env(**server.env))
    trusted = server.known_hosts.read_text()
    server.known_hosts.write_text(f"{trusted.split()[0]} {server.other_host_key}\n")  # another host's key
    try:
        pulled = {}
        for verify in ("false", "true"):
            clone = tmp_path / f"reviewer-{verify}"
            kit.run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
            server.configure(clone, loc, True)
            kit.run([kit.DVC, "remote", "modify", "--local", "store", "verify", verify], clone, kit.env(**server.env))
            pulled[verify] = (clone, subprocess.run([kit.DVC, "pull", "variant@tiny"], cwd=clone,
                                                    env=kit.env(**server.env), capture_output=True, text=True,
                                                    timeout=300))
            if verify == "false":  # the wrong host key did not stop it; now tamper with one object
                assert pulled[verify][1].returncode == 0, pulled[verify][1].stderr[-2000:]
                assert kit.md5s(clone / "data/variants/tiny") == base_repo[1]
                store = server.storage / loc
                victim = next(p for p in sorted((store / "files/md5").rglob("*")) if p.is_file()
                              and not p.name.endswith(".dir") and p.stat().st_size > 100)
                original = victim.read_bytes()
                victim.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
                shutil.rmtree(clone / ".dvc" / "cache")
                shutil.rmtree(clone / "data" / "variants")
                again = subprocess.run([kit.DVC, "pull", "variant@tiny"], cwd=clone, env=kit.env(**server.env),
                                       capture_output=True, text=True, timeout=300)
                assert again.returncode == 0  # no verification: the tampered object is accepted ...
                assert kit.md5s(clone / "data/variants/tiny") != base_repo[1]  # ... and lands in the workspace
        proc = pulled["true"][1]
        assert proc.returncode != 0, proc.stdout + proc.stderr
        out = proc.stdout + proc.stderr
        assert "ERROR: failed to pull data from the cloud - Checkout failed for following targets:" in out, out
        assert "data/variants/tiny" in out
        victim.write_bytes(original)
        ok = subprocess.run([kit.DVC, "pull", "variant@tiny"], cwd=pulled["true"][0], env=kit.env(**server.env),
                            capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert kit.md5s(pulled["true"][0] / "data/variants/tiny") == base_repo[1]
    finally:
        server.known_hosts.write_text(trusted)
