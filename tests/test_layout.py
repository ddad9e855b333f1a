import pytest

from archive.blobstore.layout import instance_key, series_metadata_key, uid_hash
from archive.dicom.uids import is_valid_uid, uid_problem
from archive.identity.tenants import BadTenant


def test_layout_follows_architecture():
    key = instance_key("radiology", "20180918", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    tenant, day, study, series, leaf = key.split("/")
    assert (tenant, day) == ("radiology", "20180918")
    assert study == uid_hash("1.2.3") and series == uid_hash("1.2.3.4") and leaf == uid_hash("1.2.3.4.5") + ".dcm"
    assert series_metadata_key("radiology", "20180918", "1.2.3", "1.2.3.4").startswith(key.rsplit("/", 1)[0])


@pytest.mark.parametrize("date", [None, "", "2018-09-18", "../../etc", "1"])
def test_odd_dates_go_to_nodate(date):
    assert instance_key("t", date, "1.2", "1.3", "1.4").split("/")[1] == "nodate"


def test_a_uid_cannot_steer_the_path():
    key = instance_key("t", "20200101", "../../../../etc/passwd", "1.2", "1.3")
    assert ".." not in key and key.count("/") == 4


@pytest.mark.parametrize("tenant", ["", "../x", "a/b", "x" * 65, "space here"])
def test_bad_tenants_refused(tenant):
    with pytest.raises(BadTenant):
        instance_key(tenant, None, "1.2", "1.3", "1.4")


@pytest.mark.parametrize(
    "uid, ok",
    [
        ("1.2.840.10008.1.2", True),
        ("1.2.3.0", True),
        ("1.02.3", False),
        ("1..2", False),
        ("1.2.", False),
        ("abc", False),
        ("1." + "1" * 70, False),
        ("", False),
        ("1.2.3 ", False),
    ],
)
def test_uid_rules(uid, ok):
    assert is_valid_uid(uid) is ok
    assert (uid_problem("X", uid) is None) is ok
