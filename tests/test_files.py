"""lir_robust.core.files: a folder written through atomic_folder ends with the permissions of any file written under
the current umask, whatever the libraries writing into its private staging folder chose."""

from __future__ import annotations

import os
import stat

from lir_robust.core.files import atomic_folder, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_folders_and_files_get_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        final = tmp_path / "model"
        with atomic_folder(final) as staging:
            assert _mode(staging) == 0o700  # mkdtemp's private staging folder
            (staging / "weights.safetensors").write_bytes(b"x")
            os.chmod(staging / "weights.safetensors", 0o600)  # as safetensors writes its files
            (staging / "sub").mkdir(mode=0o700)
            (staging / "sub" / "config.json").write_text("{}")
            os.chmod(staging / "sub" / "config.json", 0o600)
        assert _mode(final) == 0o755 and _mode(final / "sub") == 0o755
        assert _mode(final / "weights.safetensors") == 0o644 and _mode(final / "sub" / "config.json") == 0o644
        write_text_atomic(tmp_path / "note.txt", "hello\n")
        assert _mode(tmp_path / "note.txt") == 0o644
        os.umask(0o077)
        with atomic_folder(tmp_path / "private") as staging:
            (staging / "a").write_text("a")
        assert _mode(tmp_path / "private") == 0o700 and _mode(tmp_path / "private" / "a") == 0o600
    finally:
        os.umask(previous)
