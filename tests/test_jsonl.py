import json

import pytest

from lekutils.core.errors import DataError
from lekutils.core.jsonl import JsonlStore, atomic_write_json, read_jsonl


def test_read_jsonl_reports_all_bad_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{bad\n\n[1]\n{"b": 2}\n')
    with pytest.raises(DataError) as ei:
        read_jsonl(p)
    msg = str(ei.value)
    assert "x.jsonl" in msg and "line 2" in msg and "line 4" in msg


def test_store_repairs_torn_tail_and_skips_known_keys(tmp_path):
    p = tmp_path / "s.jsonl"
    s = JsonlStore(p, key=lambda r: r["id"])
    assert s.extend([{"id": 1}, {"id": 2}]) == 2
    with p.open("ab") as fh:
        fh.write(b'{"id": 3, "te')  # a write torn by kill -9
    s2 = JsonlStore(p, key=lambda r: r["id"])
    assert s2.keys == {1, 2} and s2.repaired_bytes > 0
    assert not s2.append({"id": 2})
    assert s2.append({"id": 3})
    assert [json.loads(x)["id"] for x in p.read_text().splitlines()] == [1, 2, 3]


def test_store_keeps_complete_record_without_newline(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"id": 1}\n{"id": 2}')
    s = JsonlStore(p, key=lambda r: r["id"])
    assert s.keys == {1, 2}
    s.append({"id": 3})
    assert len(read_jsonl(p)) == 3


def test_atomic_write_leaves_no_temp(tmp_path):
    atomic_write_json(tmp_path / "a" / "m.json", {"x": 1})
    assert [f.name for f in (tmp_path / "a").iterdir()] == ["m.json"]


def test_store_reopens_records_with_unicode_line_separators(tmp_path):
    p = tmp_path / "s.jsonl"
    text = "a\u2028b\u2029c\u0085d"
    JsonlStore(p, key=lambda r: r["id"]).append({"id": 1, "text": text})
    again = JsonlStore(p, key=lambda r: r["id"])
    assert again.records() == [{"id": 1, "text": text}]


def test_torn_tail_inside_a_multibyte_character_is_cut_at_every_offset(tmp_path) -> None:
    """A crash can cut the last line anywhere, also inside a UTF-8 sequence (the model writes U+2013)."""
    first = json.dumps({"k": "a", "text": "ok"}) + "\n"
    last = (json.dumps({"k": "b", "text": "dash \u2013 and \u4e2d\u6587 \U0001f600"}, ensure_ascii=False) + "\n").encode()
    for cut in range(1, len(last)):
        p = tmp_path / f"t{cut}.jsonl"
        p.write_bytes(first.encode() + last[:cut])
        store = JsonlStore(p, key=lambda r: r["k"])
        complete = cut >= len(last) - 1  # the whole record without (or with) its newline
        assert store.keys == ({"a", "b"} if complete else {"a"}), cut
        assert store.extend([{"k": "b", "text": "again"}]) == (0 if complete else 1)
        assert [r["k"] for r in read_jsonl(p)] == ["a", "b"]


def test_readers_name_file_and_line_for_bad_utf8_and_refuse_directories(tmp_path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"k": "a"}\n{"k": "\xff\xfe"}\n')
    with pytest.raises(DataError) as e:
        read_jsonl(p)
    assert str(p) in str(e.value) and "line 2" in str(e.value) and "UTF-8" in str(e.value)
    with pytest.raises(DataError, match="line 2"):
        JsonlStore(p, key=lambda r: r["k"])
    with pytest.raises(DataError, match="directory"):
        read_jsonl(tmp_path)
