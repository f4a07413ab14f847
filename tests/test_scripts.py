"""The shell launcher's housekeeping (scripts/launch.sh)."""
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stale_deepspeed_build_lock_is_removed_and_a_fresh_one_kept(tmp_path):
    """A stage killed mid-build leaves torch_extensions/<op>/lock and the next run would wait on
    it forever; a lock older than 15 min is removed, one of a build in progress is not."""
    stale, fresh = tmp_path / "shm_comm" / "lock", tmp_path / "cpu_adam" / "lock"
    for lock in (stale, fresh):
        lock.parent.mkdir()
        lock.write_text("")
    old = time.time() - 20 * 60
    os.utime(stale, (old, old))
    res = subprocess.run(["bash", "-c", "source scripts/launch.sh; pfo_clear_stale_build_locks"], cwd=ROOT,
                         env=dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path)), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert not stale.exists() and fresh.exists()
    assert f"[pfo] removed stale build lock: {stale}" in res.stdout
