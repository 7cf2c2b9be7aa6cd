"""`DatastoreSpec` is the one place a datastore description is validated: the registry's
entries, the control protocol's attach requests and the backends all end in its rules, so
they cannot disagree."""

from __future__ import annotations

import pytest

from dsmount.control.protocol import AttachRequest
from dsmount.errors import ConfigError, InvalidRequest
from dsmount.shared.credentials import Credential
from dsmount.storage.azure.fileshare import FileShareBackend
from dsmount.storage.spec import DatastoreSpec, share_name_problem
from dsmount.workspace.entries import CredentialRef, DatastoreInfo

KEY = CredentialRef("account_key", "stored")


@pytest.mark.parametrize("share", ["ab", "Upper", "a--b", "-ab", "ab-", "a_b", "x" * 64])
def test_a_bad_share_name_is_refused_by_every_producer(share: str) -> None:
    assert share_name_problem(share) is not None
    with pytest.raises(InvalidRequest, match="invalid file share name"):
        DatastoreSpec(kind="fileshare", share=share, account="acct")
    with pytest.raises(InvalidRequest, match="invalid file share name"):
        DatastoreSpec.from_dict({"kind": "fileshare", "share": share, "account": "acct"})
    with pytest.raises(InvalidRequest, match="invalid file share name"):
        DatastoreInfo("ds", "fileshare", account="acct", share=share, auth=KEY).validate()
    with pytest.raises(ConfigError, match="invalid file share name"):
        FileShareBackend(share=share, credential=Credential("azure_ad"), account="acct")


@pytest.mark.parametrize("share", ["abc", "data-2026", "a1b", "x" * 63])
def test_a_good_share_name_passes_everywhere(share: str) -> None:
    assert share_name_problem(share) is None
    spec = DatastoreSpec(kind="fileshare", share=share, account="acct")
    assert DatastoreSpec.from_dict(spec.to_dict(secrets=False)) == spec
    DatastoreInfo("ds", "fileshare", account="acct", share=share, auth=KEY).validate()


def test_the_location_field_each_kind_needs_is_checked_once() -> None:
    for info, message in [
        (DatastoreInfo("ds", "blob", account="acct", auth=KEY), r"needs a container \(--container"),
        (DatastoreInfo("ds", "fileshare", account="acct", auth=KEY), r"needs a share \(--share"),
        (DatastoreInfo("ds", "local"), r"needs a path"),
        (DatastoreInfo("ds", "local", path="relative/dir"), "must be absolute"),
        (DatastoreInfo("ds", "nfs", path="/x"), "unknown datastore kind"),
        (DatastoreInfo("ds", "blob", account="acct", container="c", share="s", auth=KEY),
         "takes no 'share'"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            info.validate()


def test_local_is_read_only_in_one_rule() -> None:
    spec = DatastoreSpec(kind="local", path="/srv/data")
    with pytest.raises(InvalidRequest, match="attached read-only"):
        spec.check_writable()
    with pytest.raises(InvalidRequest, match="attached read-only"):
        DatastoreInfo("l", "local", path="/srv/data", read_write=True).validate()
    with pytest.raises(InvalidRequest, match="attached read-only"):
        AttachRequest(name="l", storage=spec, read_write=True)
    DatastoreSpec(kind="blob", container="c", account="acct").check_writable()
