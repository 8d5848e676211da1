"""The resume book of an extend run: what a point or search file must hold to be reused."""

import json
import re

import pytest

pytest.importorskip("torch")

from ropelab.extend import store  # noqa: E402
from ropelab.extend.store import BadFile  # noqa: E402

ROPE = {"head_dim": 16, "rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}}
RECORD = {"scheme": "linear", "length": 32, "factor": 2.0, "bits_per_token": 4.4, "tokens": 256,
          "passkey_depths": [0.0, 1.0], "passkey_accuracy": [0.5, 1.0], "passkey_mean": 0.75, "note": "",
          "rope": ROPE}


def _check(record):
    return store.check_record("p.json", record, scheme="linear", length=32, depths=[0.0, 1.0], rope=ROPE)


def test_a_record_as_written_is_read_back():
    assert _check(dict(RECORD)) == RECORD
    assert _check({**RECORD, "passkey_accuracy": None, "passkey_mean": None, "note": "too short"})


@pytest.mark.parametrize(("change", "message"), [
    ({"bits_per_token": None}, "bits_per_token is None"),
    ({"bits_per_token": -1.0}, "bits_per_token is -1.0"),
    ({"bits_per_token": "4.4"}, "bits_per_token is '4.4'"),
    ({"bits_per_token": True}, "bits_per_token is True"),
    ({"tokens": 0}, "tokens is 0"),
    ({"factor": 0.5}, "factor is 0.5"),
    ({"passkey_accuracy": [0.5]}, "passkey_accuracy is [0.5]"),
    ({"passkey_accuracy": [0.5, 2.0]}, "passkey_accuracy is [0.5, 2.0]"),
    ({"passkey_mean": None}, "passkey_mean is None"),
    ({"passkey_depths": [0.5]}, "passkey_depths is [0.5]"),
    ({"note": None}, "note is None"),
    ({"rope": {}}, "rope is {}"),
    ({"length": 64}, "expected linear at 32"),
    ({"extra": 1}, "with extra"),
])
def test_a_record_that_is_not_as_written_is_refused(change, message):
    with pytest.raises(BadFile, match="p.json") as err:
        _check({**RECORD, **change})
    assert message in str(err.value)


def test_a_record_without_a_field_or_not_an_object_is_refused():
    for record, message in (({k: v for k, v in RECORD.items() if k != "bits_per_token"}, "without bits_per_token"),
                            (None, "holds the record None"), ([], "holds the record []")):
        with pytest.raises(BadFile, match=re.escape(message)):
            _check(record)


def test_scored_candidates():
    assert store.check_scored("s.json", [[[1, 2.0], 5.0]], 2) == [([1.0, 2.0], 5.0)]
    for scored, message in (([[None, 1.0]], "scored entry 0 is [None, 1.0]"), ([[[1.0, 2.0], -1.0]], "entry 0"),
                            ([[[1.0], 5.0]], "entry 0"), ([[[0.5, 2.0], 5.0]], "entry 0"),
                            ([[[1.0, True], 5.0]], "entry 0"), ({}, "holds scored {}")):
        with pytest.raises(BadFile, match=re.escape(message)):
            store.check_scored("s.json", scored, 2)


def test_sealed_files_round_trip_and_refuse_edits(tmp_path):
    path = str(tmp_path / "f.json")
    store.write_json(path, store.sealed("k1", "scored", [[[1.0, 2.0], 5.25]]))

    def check(p, scored):
        return store.check_scored(p, scored, 2)

    assert store.unseal(path, store.read_json(path), "k1", "scored", check) == [([1.0, 2.0], 5.25)]
    assert store.unseal(path, store.read_json(path), "other", "scored", check) is None  # other settings
    assert store.unseal(path, store.read_json(str(tmp_path / "none.json")), "k1", "scored", check) is None
    saved = json.loads(open(path).read())
    saved["scored"][0][1] = 1.0  # a score edited by hand
    with pytest.raises(BadFile, match="does not match its checksum"):
        store.unseal(path, saved, "k1", "scored", check)
    for bad in ([], {"key": "k1", "scored": []}, {"key": "k1", "record": [], "check": "x"}):
        with pytest.raises(BadFile, match="is not a resume file"):
            store.unseal(path, bad, "k1", "scored", check)
    open(path, "w").write('{"key": ')
    with pytest.raises(BadFile, match="is not valid JSON"):
        store.read_json(path)
