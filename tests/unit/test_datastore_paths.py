"""A user-given path never leaves its datastore: the pure rule (vcenter.domain.datastore_paths)."""

import pytest

from vcenter.domain.datastore_paths import PathRefused, safe_file_name, validate_datastore_path


@pytest.mark.parametrize(
    "path,normal",
    [
        ("images/disk.vmdk", "images/disk.vmdk"),
        ("./images//disk.vmdk", "images/disk.vmdk"),
        ("a/./b/c.qcow2", "a/b/c.qcow2"),
        ("disk..vmdk", "disk..vmdk"),  # dots inside a name are fine
        ("..hidden", "..hidden"),
    ],
)
def test_accepted_paths_are_normalised(path, normal):
    assert validate_datastore_path(path) == normal


@pytest.mark.parametrize(
    "path,code",
    [
        ("../../etc/passwd", "PATH_ESCAPES"),
        ("images/../../etc/passwd", "PATH_ESCAPES"),
        ("images/..", "PATH_ESCAPES"),
        ("/etc/passwd", "PATH_ABSOLUTE"),
        ("//etc/passwd", "PATH_ABSOLUTE"),
        ("~root/.ssh/id_rsa", "PATH_ABSOLUTE"),
        ("images\\..\\..\\etc\\passwd", "PATH_INVALID"),
        ("disk\x00.vmdk", "PATH_INVALID"),
        ("disk\n.vmdk", "PATH_INVALID"),
        ("", "PATH_EMPTY"),
        (".", "PATH_EMPTY"),
        ("a" * 256, "PATH_TOO_LONG"),
        ("a/" * 600, "PATH_TOO_LONG"),
    ],
)
def test_refused_paths_name_their_reason(path, code):
    with pytest.raises(PathRefused) as exc:
        validate_datastore_path(path)
    assert exc.value.code == code


def test_the_root_only_when_allowed():
    assert validate_datastore_path("", allow_root=True) == ""
    assert validate_datastore_path("./", allow_root=True) == ""


def test_safe_file_names():
    assert safe_file_name("web 1/../x") == "web-1-..-x"
    assert safe_file_name("../etc") == "etc"
    assert safe_file_name("") == "unnamed"
    assert "/" not in safe_file_name("a/b/c")
