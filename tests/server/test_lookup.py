"""POST /transfers/lookup: answers and errors as the C++ plugin gives them."""

from __future__ import annotations

import hashlib
import re

from gui.protocol import wire
from tests.server.conftest import study
from tests.server.push_helpers import assert_orthanc_error, orthanc_instance_id


def _upload(server, files):
    return [server.upload(f) for f in files]


def test_lookup_of_a_study_lists_its_instances_sorted_with_string_sizes(plugin_server, http):
    files = study(101, tiny=3, ct=2)
    answers = _upload(plugin_server, files)
    study_id = answers[0]["ParentStudy"]
    answer = http.post_json(wire.URI_LOOKUP, [{"Level": "Study", "ID": study_id}])
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"Instances", "Originator", "CountInstances", "TotalSize", "TotalSizeMB"}
    ids = [i["ID"] for i in body["Instances"]]
    assert ids == sorted(orthanc_instance_id(f) for f in files)
    by_id = {orthanc_instance_id(f): f for f in files}
    for item in body["Instances"]:
        assert isinstance(item["Size"], str) and isinstance(item["MD5"], str)
        assert int(item["Size"]) == len(by_id[item["ID"]])
        assert item["MD5"] == hashlib.md5(by_id[item["ID"]]).hexdigest()
    assert body["CountInstances"] == len(files)
    assert body["TotalSize"] == str(sum(len(f) for f in files))
    assert isinstance(body["TotalSizeMB"], int)
    assert re.match(r"^[0-9a-f-]{36}$", body["Originator"])


def test_lookup_levels_are_case_insensitive_and_duplicates_merged(plugin_server, http):
    files = study(102, tiny=2)
    answers = _upload(plugin_server, files)
    first = answers[0]
    body = http.post_json(wire.URI_LOOKUP, [
        {"Level": "series", "ID": first["ParentSeries"]},
        {"Level": "INSTANCE", "ID": first["ID"]},
        {"Level": "patient", "ID": first["ParentPatient"]},
    ]).json()
    assert body["CountInstances"] == 2
    assert [i["ID"] for i in body["Instances"]] == sorted(a["ID"] for a in answers)


def test_empty_lookup_is_valid(http):
    body = http.post_json(wire.URI_LOOKUP, b"[]").json()
    assert body["Instances"] == [] and body["CountInstances"] == 0 and body["TotalSize"] == "0"


def test_lookup_errors(http):
    unknown = "0" * 8 + "-" + "-".join(["1" * 8] * 4)
    assert_orthanc_error(http.post_json(wire.URI_LOOKUP, [{"Level": "Study", "ID": unknown}]),
                         404, 17, unknown)
    # An unknown instance: the same error as an unknown study.
    assert_orthanc_error(http.post_json(wire.URI_LOOKUP, [{"Level": "Instance", "ID": unknown}]),
                         404, 17, unknown)
    assert_orthanc_error(http.post_json(wire.URI_LOOKUP, b"[{"), 400, 28)
    assert_orthanc_error(http.post_json(wire.URI_LOOKUP, [{"Level": "Study"}]), 400, details="ID")
    assert_orthanc_error(http.post_json(wire.URI_LOOKUP, [{"Level": "Galaxy", "ID": unknown}]), 400,
                         details="Galaxy")
    assert_orthanc_error(http.post_json(wire.URI_LOOKUP, [{"Level": "Study", "ID": "../../etc/passwd"}]), 400,
                         details="not an Orthanc ID")
    assert_orthanc_error(http.post_json(wire.URI_LOOKUP, {"Level": "Study"}), 400)
    assert_orthanc_error(http.post_json(wire.URI_LOOKUP, b"[" * 5000 + b"]" * 5000), 400, 28, "nested")
    assert http.post_json(wire.URI_LOOKUP, b"[]").status_code == 200  # and Orthanc is still up
    wrong = http.client.get(wire.URI_LOOKUP)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
