"""Lake versioning with DVC: stable versions, push to the remote, restoring an older version, no telemetry."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from features.lake_versioning import REMOTE_NAME, DataVersion, open_lake

BATCH = "lake/raw/batch-1"
FILES = {"manifest.jsonl": b'{"sample_id": "s1"}\n', "images/s1.png": b"\x89PNG one", "audio/s1.wav": b"RIFF one"}


@pytest.fixture(autouse=True)
def _site_cache(tmp_path, monkeypatch):
    """DVC's per-machine state (hash cache, remote index) for this test only, not /var/tmp/dvc."""
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _repo_config(home: Path) -> dict:
    """The repo's `.dvc/config` as written (DVC's own format, read with the parser DVC uses)."""
    from configobj import ConfigObj

    return ConfigObj(str(home / ".dvc" / "config")).dict()


def _cache_objects(home: Path) -> int:
    return sum(1 for p in (home / ".dvc" / "cache").rglob("*") if p.is_file())


def test_open_lake_is_idempotent_and_writes_telemetry_off_config(tmp_path):
    home = tmp_path / "home"
    open_lake(home)
    first = (home / ".dvc" / "config").read_text()
    open_lake(home)  # a second run finds the repo and leaves it as it was

    assert (home / ".dvc" / "config").read_text() == first
    config = _repo_config(home)
    assert config["core"]["analytics"].lower() == "false"
    assert config["core"]["check_update"].lower() == "false"
    assert config["core"]["no_scm"].lower() == "true"
    assert config["core"]["remote"] == REMOTE_NAME
    # Stored relative to .dvc/, so a moved home still finds its remote.
    assert config[f'remote "{REMOTE_NAME}"']["url"] == "../dvc-remote"


def test_an_s3_remote_is_configured_without_credentials_and_can_be_switched_back(tmp_path):
    home = tmp_path / "home"
    open_lake(home, "s3://flywheel/lake", endpoint_url="http://minio:9000")

    remote = _repo_config(home)[f'remote "{REMOTE_NAME}"']
    assert dict(remote) == {"url": "s3://flywheel/lake", "endpointurl": "http://minio:9000"}

    open_lake(home)  # the entry point's configuration wins on every run
    assert dict(_repo_config(home)[f'remote "{REMOTE_NAME}"']) == {"url": "../dvc-remote"}

    with pytest.raises(ValueError, match="s3://"):
        open_lake(home, str(tmp_path / "remote"), endpoint_url="http://minio:9000")


def test_same_bytes_give_the_same_version_and_a_changed_file_a_new_one(tmp_path):
    home = tmp_path / "home"
    lake = open_lake(home)
    _write(home / BATCH, FILES)

    first = lake.track(BATCH)
    objects = _cache_objects(home)
    assert first == DataVersion(BATCH, first.md5, files=3, size=sum(len(b) for b in FILES.values()))
    assert first.md5.endswith(".dir")
    assert lake.track(BATCH) == first
    assert _cache_objects(home) == objects  # re-tracking stores nothing new
    assert lake.version_of(BATCH) == first

    _write(home / "lake/raw/batch-copy", FILES)  # same bytes elsewhere, written later
    assert lake.track("lake/raw/batch-copy").md5 == first.md5

    (home / BATCH / "images/s1.png").write_bytes(b"\x89PNG two")
    assert lake.track(BATCH).md5 != first.md5


def _age(folder: Path, seconds: float = 60) -> None:
    """Every file's mtime `seconds` in the past: written long before the add that tracks it."""
    past = time.time() - seconds
    for p in folder.rglob("*"):
        if p.is_file():
            os.utime(p, (past, past))


def test_an_output_unchanged_since_its_add_is_not_handed_to_dvc_again_and_any_change_is(tmp_path, monkeypatch):
    from features.lake_versioning import Lake

    home = tmp_path / "home"
    lake = open_lake(home)
    folder = _write(home / BATCH, FILES)
    fresh = lake.track(BATCH)  # files written just now: their stats are not trusted yet
    _age(folder)
    first = lake.track(BATCH)
    assert first == fresh

    opened = []
    real_repo = Lake._repo
    monkeypatch.setattr(Lake, "_repo", lambda self: opened.append(1) or real_repo(self))
    assert lake.track(BATCH) == first and opened == []  # a stat walk, no DVC

    (folder / "images/s1.png").write_bytes(b"\x89PNG two")  # same size, in place
    assert lake.track(BATCH).md5 != first.md5 and opened

    (folder / "images/s1.png").write_bytes(b"\x89PNG one")
    _age(folder)
    assert lake.track(BATCH) == first
    opened.clear()
    # an atomic replace with the same size and an mtime set back: only the inode tells
    replacement = folder / "audio" / ".s1.wav.new"
    replacement.write_bytes(b"RIFF two")
    os.replace(replacement, folder / "audio/s1.wav")
    _age(folder)
    assert lake.track(BATCH).md5 != first.md5 and opened

    dvcfile = home / f"{BATCH}.dvc"
    tracked = lake.version_of(BATCH)
    dvcfile.write_text(dvcfile.read_text().replace(tracked.md5, "0" * 32 + ".dir"))
    opened.clear()
    assert lake.track(BATCH) == tracked and opened  # the .dvc file names another version than the stats' add


def test_a_single_file_is_versioned_and_paths_outside_the_home_are_refused(tmp_path):
    home = tmp_path / "home"
    lake = open_lake(home)
    (home / "lake/inputs").mkdir(parents=True)
    (home / "lake/inputs/batch-1.npz").write_bytes(b"arrays")

    version = lake.track("lake/inputs/batch-1.npz")
    assert (version.files, version.size) == (1, 6)
    assert not version.md5.endswith(".dir")
    assert lake.version_of("lake/inputs/batch-2.npz") is None
    with pytest.raises(ValueError, match="inside"):
        lake.track("../elsewhere")
    with pytest.raises(FileNotFoundError, match="lake/clean/none"):
        lake.track("lake/clean/none")


def test_push_copies_the_objects_to_the_local_remote_once(tmp_path):
    home = tmp_path / "home"
    lake = open_lake(home)
    _write(home / BATCH, FILES)
    lake.track(BATCH)
    _write(home / "lake/raw/batch-2", {"manifest.jsonl": b"other\n"})
    lake.track("lake/raw/batch-2")

    assert lake.push(BATCH) == len(FILES) + 1  # the files and the folder's listing
    assert lake.push(BATCH) == 0
    assert lake.push() == 2  # the other output: its file and its listing
    remote_files = [p for p in (home / "dvc-remote").rglob("*") if p.is_file()]
    assert len(remote_files) == len(FILES) + 1 + 2


def test_checkout_restores_an_older_version_from_the_cache_or_the_remote(tmp_path):
    home = tmp_path / "home"
    lake = open_lake(home)
    folder = _write(home / BATCH, FILES)
    old = lake.track(BATCH)
    lake.push()

    (folder / "images/s1.png").write_bytes(b"\x89PNG changed")
    (folder / "audio/s1.wav").unlink()
    (folder / "notes.txt").write_bytes(b"new file")
    new = lake.track(BATCH)

    assert lake.checkout(BATCH, old.md5) == old
    assert _contents(folder) == FILES
    assert lake.version_of(BATCH) == old

    assert lake.checkout(BATCH, new.md5) == new  # the newer version stayed in the cache
    shutil.rmtree(home / ".dvc" / "cache")  # another machine: only the remote has the old one
    assert lake.checkout(BATCH, old.md5) == old
    assert _contents(folder) == FILES


def test_checkout_of_an_unknown_version_leaves_the_output_untouched(tmp_path):
    home = tmp_path / "home"
    lake = open_lake(home)
    folder = _write(home / BATCH, FILES)
    lake.track(BATCH)
    dvcfile = (home / f"{BATCH}.dvc").read_text()

    with pytest.raises(LookupError, match="neither in the cache nor on remote"):
        lake.checkout(BATCH, "0" * 32 + ".dir")
    assert _contents(folder) == FILES
    assert (home / f"{BATCH}.dvc").read_text() == dvcfile


def test_no_daemon_no_network_and_analytics_off_even_without_the_environment(tmp_path, monkeypatch):
    """The DVC CLI forks an analytics daemon unless told not to; nothing here may spawn or connect."""
    import dvc.analytics
    import dvc.daemon

    monkeypatch.delenv("DVC_NO_ANALYTICS", raising=False)
    attempts: list[str] = []

    def refuse(name):
        def call(*args, **kwargs):
            attempts.append(name)
            raise AssertionError(f"{name} called with {args!r}")
        return call

    monkeypatch.setattr(dvc.daemon, "daemon", refuse("dvc daemon"))
    monkeypatch.setattr(subprocess, "Popen", refuse("subprocess"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket connect"))

    home = tmp_path / "home"
    lake = open_lake(home)
    _write(home / BATCH, FILES)
    version = lake.track(BATCH)
    lake.push()
    lake.checkout(BATCH, version.md5)
    assert attempts == []

    import os

    assert os.environ["DVC_NO_ANALYTICS"] == "1"  # set by the entry point for any later `dvc` command
    monkeypatch.delenv("DVC_NO_ANALYTICS")
    monkeypatch.chdir(home)
    assert dvc.analytics.is_enabled() is False  # the repo config alone keeps a `dvc` command run here quiet


def test_dvc_imported_under_a_closed_stream_still_logs(tmp_path):
    """`import dvc` inside a CLI runner (or a captured test) binds DVC's log handlers to streams that
    are closed afterwards; the next DVC warning used to raise LoggingException out of a checkout."""
    import subprocess
    import sys
    import textwrap

    from tests.conftest import PROJECT

    script = textwrap.dedent(f"""
        import io, sys
        from pathlib import Path
        saved = sys.stderr, sys.stdout
        sys.stderr, sys.stdout = io.StringIO(), io.StringIO()
        import dvc  # its handlers now hold these two streams
        sys.stderr.close(); sys.stdout.close()
        sys.stderr, sys.stdout = saved
        from features.lake_versioning import open_lake
        home = Path({str(tmp_path)!r})
        lake = open_lake(home)
        (home / "x").mkdir(); (home / "x" / "a.txt").write_text("a")
        lake.track("x")
        try:
            lake.checkout("x", "0" * 32 + ".dir")
        except LookupError:
            print("refused cleanly")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "refused cleanly" in done.stdout, done.stderr[-2000:]


# ---- what a run killed inside DVC leaves: DVC writes its files in place ---------------------------


def test_a_dvc_file_a_killed_add_cut_off_is_tracked_again_with_the_same_version(tmp_path):
    home = tmp_path / "home"
    lake = open_lake(home)
    _write(home / BATCH, FILES)
    version = lake.track(BATCH)
    dvcfile = home / f"{BATCH}.dvc"
    complete = dvcfile.read_text()
    for cut in (0, 10, len(complete) // 2, len(complete) - 3, len(complete) - 1):  # each once wedged add and reads
        dvcfile.write_text(complete[:cut])
        assert lake.version_of(BATCH) == version, cut
        assert dvcfile.read_text() == complete
        dvcfile.write_text(complete[:cut])
        assert lake.track(BATCH) == version, cut


def test_a_rwlock_a_killed_dvc_process_cut_off_does_not_stop_the_next_add(tmp_path):
    home = tmp_path / "home"
    lake = open_lake(home)
    _write(home / BATCH, FILES)
    (home / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    (home / ".dvc" / "tmp" / "rwlock").write_text('{"write": {"' + str(home / BATCH) + '": {"pid": 12')
    assert lake.track(BATCH).md5.endswith(".dir")
    lake.push(BATCH)


def test_a_kill_between_track_and_push_is_completed_by_the_next_track_and_push(tmp_path):
    home = tmp_path / "home"
    lake = open_lake(home)
    _write(home / BATCH, FILES)
    version = lake.track(BATCH)  # ... and killed before its push
    assert lake.pushed_version(BATCH) is None
    assert not (home / "dvc-remote").exists()
    assert lake.track_and_push(BATCH) == version
    assert lake.pushed_version(BATCH) == version
    assert len([p for p in (home / "dvc-remote").rglob("*") if p.is_file()]) == len(FILES) + 1
    assert open_lake(home, str(tmp_path / "elsewhere")).pushed_version(BATCH) is None  # another remote lacks it


def test_a_config_a_killed_writer_cut_off_is_written_afresh(tmp_path):
    home = tmp_path / "home"
    open_lake(home)
    config = home / ".dvc" / "config"
    complete, settings = config.read_text(), _repo_config(home)
    config.write_text(complete[:complete.index("False") + 3])  # "analytics = Fal": DVC refuses the whole repo
    open_lake(home)
    assert _repo_config(home) == settings
    assert [p.name for p in config.parent.glob("config.unreadable-*")]  # the unreadable one is kept for a human


def test_the_work_folders_of_a_killed_open_lake_are_swept_by_the_next(tmp_path):
    home = tmp_path / "home"
    open_lake(home)
    dead = subprocess.Popen(["true"])
    dead.wait()
    from features.atomic import _HOST

    orphan = home / f".dvc-config.pid{dead.pid}-{_HOST}.abc"  # a scratch config of an open_lake killed mid-way
    orphan.mkdir()
    open_lake(home)
    assert not orphan.exists()
