"""Keysmith's own SCIM checks, written with scim2-client against a live server.

Usage: client_checks.py BASE_URL SECRET
Prints "ok <check>" for each check that passed; the first failure raises
(non-zero exit) with what was seen. The Rust test expects every check.
"""

import sys
import uuid

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import Error, ListResponse, PatchOp

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def ok(name):
    print(f"ok {name}", flush=True)


def main():
    base_url, secret = sys.argv[1], sys.argv[2]
    http = Client(base_url=base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    client = SyncSCIMClient(http)
    client.discover()
    User = client.get_resource_model("User")
    Group = client.get_resource_model("Group")
    assert User is not None and Group is not None
    ok("discover")

    tag = uuid.uuid4().hex[:8]
    made = []
    for i in range(3):
        u = User.model_validate(
            {
                "schemas": [USER],
                "userName": f"Person.{i}.{tag}",
                "displayName": f"Person {i}",
                "emails": [{"value": f"person{i}.{tag}@example.com"}],
                "active": True,
            }
        )
        made.append(client.create(u))
    assert all(m.id for m in made), made
    ok("create")

    found = client.query(User, query_parameters={"filter": f'userName eq "person.1.{tag.upper()}"'})
    assert isinstance(found, ListResponse), found
    assert found.total_results == 1, found
    assert found.resources[0].id == made[1].id, found
    ok("filter_username_eq_case_insensitive")

    none = client.query(User, query_parameters={"filter": 'userName eq "nobody-at-all"'})
    assert none.total_results == 0 and not none.resources, none
    ok("filter_no_match")

    everyone = client.query(User)
    total = everyone.total_results
    assert total >= 4, everyone
    seen = []
    start = 1
    while start <= total:
        page = client.query(User, query_parameters={"startIndex": start, "count": 2})
        assert page.start_index == start, page
        assert page.total_results == total, page
        assert len(page.resources) == min(2, total - start + 1), page
        seen.extend(r.id for r in page.resources)
        start += 2
    assert len(seen) == total and len(set(seen)) == total, seen
    ok("pagination")

    target = made[0]
    patched = client.modify(
        User,
        target.id,
        PatchOp[User].model_validate(
            {
                "schemas": [PATCH],
                "Operations": [
                    {"op": "replace", "path": "displayName", "value": "Renamed"},
                    {"op": "add", "path": "externalId", "value": f"ext-{tag}"},
                ],
            }
        ),
    )
    assert patched.display_name == "Renamed" and patched.external_id == f"ext-{tag}", patched
    by_ext = client.query(User, query_parameters={"filter": f'externalId eq "ext-{tag}"'})
    assert by_ext.total_results == 1 and by_ext.resources[0].id == target.id, by_ext
    ok("patch_replace_and_add")

    off = client.modify(
        User,
        target.id,
        PatchOp[User].model_validate(
            {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}
        ),
    )
    assert off.active is False, off
    assert client.query(User, target.id).active is False
    ok("patch_deactivate")

    groups = client.query(Group, query_parameters={"filter": 'displayName eq "Token holders"'})
    assert groups.total_results == 1, groups
    holders = groups.resources[0]
    assert holders.id == "token-holders", holders
    ok("group_filter_display_name")

    member = made[1]
    client.modify(
        Group,
        holders.id,
        PatchOp[Group].model_validate(
            {
                "schemas": [PATCH],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": member.id}]}],
            }
        ),
    )
    ids = [m.value for m in (client.query(Group, holders.id).members or [])]
    assert member.id in ids, ids
    ok("group_add_member")

    client.modify(
        Group,
        holders.id,
        PatchOp[Group].model_validate(
            {
                "schemas": [PATCH],
                "Operations": [{"op": "remove", "path": f'members[value eq "{member.id}"]'}],
            }
        ),
    )
    ids = [m.value for m in (client.query(Group, holders.id).members or [])]
    assert member.id not in ids, ids
    ok("group_remove_member")

    bad = client.query(User, query_parameters={"filter": 'userName co "x"'}, raise_scim_errors=False, expected_status_codes=None)
    assert isinstance(bad, Error) and bad.status == 400 and bad.scim_type == "invalidFilter", bad
    ok("unsupported_filter_is_invalid_filter")

    client.delete(User, made[2].id)
    gone = client.query(User, made[2].id, raise_scim_errors=False, expected_status_codes=None)
    assert isinstance(gone, Error) and gone.status == 404, gone
    ok("delete")

    print("done", flush=True)


if __name__ == "__main__":
    main()
