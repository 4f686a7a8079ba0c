import pytest

from tunelab.io.atomic import atomic_dir, write_json


def test_a_failed_write_leaves_the_previous_output_untouched_and_no_temporary(tmp_path):
    final = tmp_path / "models" / "base"
    with atomic_dir(final) as folder:
        (folder / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as folder:
            (folder / "weights").write_text("half")
            raise RuntimeError("killed")
    assert (final / "weights").read_text() == "v1"
    assert sorted(p.name for p in final.parent.iterdir()) == ["base"]


def test_leftovers_of_a_killed_run_are_cleared_by_the_next_write(tmp_path):
    final = tmp_path / "out.json"
    (tmp_path / "out.json.tmp-12345").write_text("{half")
    write_json(final, {"ok": True})
    assert final.read_text() == '{\n  "ok": true\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_nothing_appears_at_the_final_path_until_the_block_ends(tmp_path):
    final = tmp_path / "data"
    with atomic_dir(final) as folder:
        (folder / "train.jsonl").write_text("{}\n")
        assert not final.exists()
    assert (final / "train.jsonl").exists()
