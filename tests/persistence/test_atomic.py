"""persistence/atomic.py: files and folders are replaced whole or not at all."""
import pytest

from spacy_lsllama.persistence.atomic import TEMPORARY_MARK, write_file_atomically, write_folder_atomically


def test_a_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model"
    target.write_bytes(b"old")

    def fail(temporary):
        temporary.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file_atomically(target, fail)
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["model"]
    write_file_atomically(target, lambda temporary: temporary.write_bytes(b"new"))
    assert target.read_bytes() == b"new"
    assert not list(tmp_path.glob(f"*{TEMPORARY_MARK}*"))


def test_a_failed_folder_write_leaves_the_old_folder_and_a_new_one_replaces_it_whole(tmp_path):
    target = tmp_path / "base"
    target.mkdir()
    (target / "old-shard.safetensors").write_text("old")

    def fail(staging):
        (staging / "new-shard.safetensors").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_folder_atomically(target, fail)
    assert sorted(path.name for path in target.iterdir()) == ["old-shard.safetensors"]
    write_folder_atomically(target, lambda staging: (staging / "new-shard.safetensors").write_text("new"))
    assert sorted(path.name for path in target.iterdir()) == ["new-shard.safetensors"]
    assert [path.name for path in tmp_path.iterdir()] == ["base"]
