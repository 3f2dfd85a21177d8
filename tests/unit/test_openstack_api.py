"""The OpenStack-compatible API in process (SQLite and PostgreSQL): Keystone tokens,
every route x every role against the native policy entry it stands for, errors in the
shapes the OpenStack clients parse (never a 500), microversions, pagination."""

import json
import re

from fastapi.routing import APIRoute
from sqlalchemy import func, select

from nubis.api.openstack.app import MODULES
from nubis.db.models import Instance
from nubis.services.identity import policy
from tests.unit.identity_world import PASSWORD, ROLES, bootstrap_password
from tests.unit.test_api_contract import qcow2

OS = "/openstack"
AUTH = f"{OS}/identity/v3/auth/tokens"
COMPUTE = f"{OS}/compute/v2.1"


def keystone(client, username, password, project=None, project_id=None, domain="Default"):
    scope = None
    if project:
        scope = {"project": {"name": project, "domain": {"name": domain}}}
    elif project_id:
        scope = {"project": {"id": project_id}}
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": username, "domain": {"name": domain}, "password": password}
                },
            },
            **({"scope": scope} if scope else {}),
        }
    }
    return client.post(AUTH, json=body)


def token_of(client, username, password=PASSWORD, project=None):
    resp = keystone(client, username, password, project)
    assert resp.status_code == 201, resp.text
    return resp.headers["X-Subject-Token"]


def upload_image(caller, tmp_path, name):
    return caller.post(
        "/images",
        params={"name": name},
        content=qcow2(tmp_path, f"{name}.qcow2"),
        headers={"Content-Type": "application/octet-stream"},
    ).json()


def openstack_routes():
    """(method, path template, native policy action) of every facade route."""
    found = []
    for route in (r for module in MODULES for r in module.router.routes):
        assert isinstance(route, APIRoute)
        actions = [
            d.call.policy_action
            for d in _dependencies(route.dependant)
            if hasattr(d.call, "policy_action")
        ]
        for method in route.methods:
            found.append((method, route.path, actions[0] if actions else None))
    return found


def _dependencies(dependant):
    for dep in dependant.dependencies:
        yield dep
        yield from _dependencies(dep)


def test_keystone_password_login_scoped_by_name_or_id_with_catalog(client, callers, platform):
    password = bootstrap_password(platform, "admin")
    resp = keystone(client, "admin", password, project="admin")
    assert resp.status_code == 201, resp.text
    token = resp.json()["token"]
    assert token["project"]["name"] == "admin" and token["user"]["name"] == "admin"
    assert "system_admin" in [r["name"] for r in token["roles"]]
    types = {entry["type"]: entry["endpoints"] for entry in token["catalog"]}
    assert {"identity", "compute", "image", "network", "volumev3"} <= set(types)
    compute = [e["url"] for e in types["compute"] if e["interface"] == "public"]
    assert compute == ["http://testserver/openstack/compute/v2.1"]
    # the token is a Nubis token: the native API knows who it is
    subject = resp.headers["X-Subject-Token"]
    who = client.get("/api/v1/auth/whoami", headers={"Authorization": f"Bearer {subject}"})
    assert who.json()["username"] == "admin"

    by_id = keystone(client, "p1-member", PASSWORD, project_id=token_project(client, "p1"))
    assert by_id.status_code == 201 and by_id.json()["token"]["project"]["name"] == "p1"


def token_project(client, name):
    mine = keystone(client, "p1-member", PASSWORD, project=name)
    return mine.json()["token"]["project"]["id"]


def test_keystone_refusals_are_401_in_keystones_shape(client, callers):
    for resp in (
        keystone(client, "p1-member", "wrong-password", project="p1"),
        keystone(client, "no-such-user", PASSWORD),
        keystone(client, "p1-member", PASSWORD, project="p1", domain="Other"),
        keystone(client, "p1-member", PASSWORD, project="p2"),  # not a member there
    ):
        assert resp.status_code == 401, resp.text
        error = resp.json()["error"]
        assert error["code"] == 401 and error["title"] == "Unauthorized" and error["message"]
    malformed = client.post(AUTH, json={"auth": {"identity": {"methods": "password"}}})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == 400


def test_logins_and_changes_are_audited_without_passwords(client, callers):
    keystone(client, "p1-member", "wrong-secret-xyz", project="p1")
    token = token_of(client, "p1-member", project="p1")
    key = {"keypair": {"name": "audited"}}
    assert client.post(f"{COMPUTE}/os-keypairs", headers={"X-Auth-Token": token}, json=key)
    rows = callers["auditor"].get("/audit", params={"username": "p1-member"}).json()["items"]
    logins = [r for r in rows if r["path"] == AUTH]
    assert [(r["success"], r["status_code"]) for r in logins] == [(False, 401), (True, 201)]
    made = [r for r in rows if r["path"] == f"{COMPUTE}/os-keypairs"]
    assert len(made) == 1 and made[0]["success"] and made[0]["roles"] == "member"
    assert PASSWORD not in json.dumps(rows) and "wrong-secret-xyz" not in json.dumps(rows)


def test_token_validation_and_revocation(client, callers):
    token = token_of(client, "p1-member", project="p1")
    other = token_of(client, "p2-member", project="p2")
    headers = {"X-Auth-Token": token, "X-Subject-Token": token}
    shown = client.get(AUTH, headers=headers)
    assert shown.status_code == 200 and shown.json()["token"]["user"]["name"] == "p1-member"
    # someone else's token is not shown to a project user
    foreign = client.get(AUTH, headers={"X-Auth-Token": other, "X-Subject-Token": token})
    assert foreign.status_code == 404
    assert client.delete(AUTH, headers=headers).status_code == 204
    after = client.get(f"{COMPUTE}/flavors", headers={"X-Auth-Token": token})
    assert after.status_code == 401 and after.json()["unauthorized"]["code"] == 401
    assert client.get(f"{COMPUTE}/flavors").status_code == 401  # no token at all


def test_every_route_names_a_policy_entry_and_every_role_is_held_to_it(client, callers):
    by_role = {role: caller.token for role, caller in callers.items() if role in ROLES}
    routes = openstack_routes()
    assert len(routes) > 60
    # only discovery and the token's own routes answer without a policy entry
    open_routes = re.compile(
        r"^/(identity|compute|image|network|volume)/?$|/(v3|v2\.1)/?$|/versions$"
        r"|^/identity/v3/auth/|^/identity/v3/users/\{user_id\}/projects$"
    )
    unguarded = [(m, p) for m, p, action in routes if action is None and not open_routes.search(p)]
    assert unguarded == []
    mismatches = []
    for method, template, action in routes:
        if action is None:
            continue
        path = OS + re.sub(r"\{[^}]+\}", "no-such-thing", template)
        for role, token in by_role.items():
            resp = client.request(method, path, headers={"X-Auth-Token": token}, json={})
            assert resp.status_code < 500, f"{method} {path} as {role}: {resp.text}"
            refused = resp.status_code == 403
            if resp.status_code == 401 or refused != (role not in policy.POLICY[action]):
                mismatches.append(f"{method} {template} as {role}: {resp.status_code}")
            if resp.status_code >= 400:
                assert _openstack_shaped(template, resp.json()), resp.text
    assert mismatches == []


def _openstack_shaped(template, body):
    if template.startswith("/identity"):
        return set(body["error"]) == {"code", "title", "message"}
    if template.startswith("/network"):
        return {"type", "message"} <= set(body["NeutronError"])
    ((key, fault),) = body.items()
    return key[0].islower() and isinstance(fault["code"], int) and fault["message"]


def test_microversions(client, callers):
    token = callers["member"].token
    plain = client.get(f"{COMPUTE}/flavors", headers={"X-Auth-Token": token})
    assert plain.headers["OpenStack-API-Version"] == "compute 2.1"
    assert plain.headers["X-OpenStack-Nova-API-Version"] == "2.1"
    latest = client.get(
        f"{COMPUTE}/flavors",
        headers={"X-Auth-Token": token, "OpenStack-API-Version": "compute latest"},
    )
    assert latest.status_code == 200 and latest.headers["OpenStack-API-Version"] == "compute 2.1"
    too_new = client.get(
        f"{COMPUTE}/flavors",
        headers={"X-Auth-Token": token, "X-OpenStack-Nova-API-Version": "2.99"},
    )
    assert too_new.status_code == 406 and "2.1" in too_new.json()["notAcceptable"]["message"]
    garbage = client.get(
        f"{COMPUTE}/flavors",
        headers={"X-Auth-Token": token, "OpenStack-API-Version": "compute two"},
    )
    assert garbage.status_code == 400
    discovery = client.get(f"{OS}/compute/").json()["versions"][0]
    assert (discovery["min_version"], discovery["version"]) == ("2.1", "2.1")


def test_pagination_follows_next_links(client, callers):
    token = callers["member"].token
    url, names = f"{COMPUTE}/flavors?limit=3", []
    for _ in range(5):
        page = client.get(url, headers={"X-Auth-Token": token}).json()
        names += [f["name"] for f in page["flavors"]]
        nexts = [link["href"] for link in page.get("flavors_links", []) if link["rel"] == "next"]
        if not nexts:
            break
        assert "marker=" in nexts[0]
        url = nexts[0].removeprefix("http://testserver")
    assert sorted(names) == ["m1.large", "m1.medium", "m1.small", "m1.tiny"]
    bad = client.get(f"{COMPUTE}/flavors?marker=nope", headers={"X-Auth-Token": token})
    assert bad.status_code == 400 and "marker" in bad.json()["badRequest"]["message"]


def test_unsupported_calls_are_clean_and_change_nothing(client, callers, platform):
    token = callers["member"].token
    h = {"X-Auth-Token": token}

    def count():
        with platform.db.begin() as s:
            return s.scalar(select(func.count()).select_from(Instance))

    flavor = client.get(f"{COMPUTE}/flavors", headers=h).json()["flavors"][0]["id"]
    before = count()
    boot_from_volume = {
        "server": {
            "name": "bfv",
            "flavorRef": flavor,
            "block_device_mapping_v2": [
                {"source_type": "volume", "destination_type": "volume", "uuid": "x"}
            ],
        }
    }
    resp = client.post(f"{COMPUTE}/servers", headers=h, json=boot_from_volume)
    assert resp.status_code == 501 and "volume" in resp.json()["notImplemented"]["message"]
    two = {"server": {"name": "two", "flavorRef": flavor, "imageRef": "x", "max_count": 2}}
    assert client.post(f"{COMPUTE}/servers", headers=h, json=two).status_code == 501
    hints = {
        "server": {"name": "h", "flavorRef": flavor, "imageRef": "x"},
        "os:scheduler_hints": {"same_host": ["x"]},
    }
    assert client.post(f"{COMPUTE}/servers", headers=h, json=hints).status_code == 501
    missing = client.get(f"{COMPUTE}/servers/no-such-server", headers=h)
    assert missing.status_code == 404 and missing.json()["itemNotFound"]["code"] == 404
    ipv6 = {"security_group_rule": {"security_group_id": "x", "ethertype": "IPv6"}}
    resp = client.post(f"{OS}/network/v2.0/security-group-rules", headers=h, json=ipv6)
    assert resp.status_code == 501 and resp.json()["NeutronError"]["type"] == "NotImplemented"
    unknown = client.get(f"{COMPUTE}/os-services", headers=h)
    assert unknown.status_code == 404 and "not part of the API" in unknown.text
    assert count() == before


def test_another_projects_things_are_not_found(client, callers):
    p1 = {"X-Auth-Token": callers["member"].token}
    p2 = {"X-Auth-Token": callers["p2-member"].token}
    key = {"keypair": {"name": "k1"}}
    created = client.post(f"{COMPUTE}/os-keypairs", headers=p1, json=key)
    assert created.status_code == 200 and created.json()["keypair"]["private_key"]
    assert client.get(f"{COMPUTE}/os-keypairs/k1", headers=p1).status_code == 200
    assert client.get(f"{COMPUTE}/os-keypairs/k1", headers=p2).status_code == 404
    assert client.get(f"{COMPUTE}/os-keypairs", headers=p2).json()["keypairs"] == []
    group = {"server_group": {"name": "g1", "policies": ["anti-affinity"]}}
    made = client.post(f"{COMPUTE}/os-server-groups", headers=p1, json=group).json()
    gid = made["server_group"]["id"]
    assert made["server_group"]["policies"] == ["anti-affinity"]
    assert client.get(f"{COMPUTE}/os-server-groups/{gid}", headers=p2).status_code == 404
    assert client.get(f"{COMPUTE}/os-server-groups/{gid}", headers=p1).status_code == 200
    # the native API sees the same rule group
    native = callers["member"].get("/rule-groups/g1").json()
    assert (native["policy"], native["strict"]) == ("anti-affinity", True)


def test_operator_views_and_quota_sets(client, callers, platform):
    admin = {"X-Auth-Token": callers["system_admin"].token}
    member = {"X-Auth-Token": callers["member"].token}
    hypervisors = client.get(f"{COMPUTE}/os-hypervisors/detail", headers=admin).json()
    (fake,) = hypervisors["hypervisors"]
    native = callers["system_admin"].get("/hosts/fake").json()
    assert (fake["id"], fake["hypervisor_hostname"], fake["vcpus"]) == (
        native["id"],
        "fake",
        native["cpus"],
    )
    assert client.get(f"{COMPUTE}/os-hypervisors", headers=member).status_code == 403
    zones = client.get(f"{COMPUTE}/os-availability-zone", headers=member).json()
    assert [z["zoneName"] for z in zones["availabilityZoneInfo"]] == [
        z["name"] for z in callers["member"].get("/zones").json()["items"]
    ]

    project = callers["member"].get("/auth/whoami").json()["project_id"]
    shown = client.get(f"{COMPUTE}/os-quota-sets/{project}/detail", headers=member).json()
    native_quotas = callers["member"].get("/quotas").json()["quotas"]
    assert shown["quota_set"]["cores"]["limit"] == native_quotas["vcpus"]["limit"]
    body = {"quota_set": {"instances": 3, "ram": 4096}}
    refused = client.put(f"{COMPUTE}/os-quota-sets/{project}", headers=member, json=body)
    assert refused.status_code == 403 and refused.json()["forbidden"]["code"] == 403
    changed = client.put(f"{COMPUTE}/os-quota-sets/{project}", headers=admin, json=body)
    assert changed.status_code == 200, changed.text
    after = callers["member"].get("/quotas").json()["quotas"]
    assert (after["instances"]["limit"], after["memory_mib"]["limit"]) == (3, 4096)
    unknown = {"quota_set": {"floating_ips": 3}}
    assert (
        client.put(f"{COMPUTE}/os-quota-sets/{project}", headers=admin, json=unknown).status_code
        == 400
    )
    other = callers["p2-member"].get("/auth/whoami").json()["project_id"]
    assert client.get(f"{COMPUTE}/os-quota-sets/{other}", headers=member).status_code == 404


def test_server_metadata_is_the_instances_properties(client, callers, tmp_path):
    member = callers["member"]
    image = upload_image(member, tmp_path, "md-img")
    h = {"X-Auth-Token": member.token}
    flavor = client.get(f"{COMPUTE}/flavors", headers=h).json()["flavors"][0]["id"]
    body = {
        "server": {
            "name": "md",
            "imageRef": image["id"],
            "flavorRef": flavor,
            "metadata": {"role": "web"},
        }
    }
    made = client.post(f"{COMPUTE}/servers", headers=h, json=body)
    assert made.status_code == 202, made.text
    sid = made.json()["server"]["id"]
    assert member.get(f"/instances/{sid}").json()["properties"] == {"role": "web"}
    url = f"{COMPUTE}/servers/{sid}/metadata"
    merged = client.post(url, headers=h, json={"metadata": {"tier": "1"}}).json()
    assert merged["metadata"] == {"role": "web", "tier": "1"}
    item = client.put(f"{url}/tier", headers=h, json={"meta": {"tier": "2"}})
    assert item.json() == {"meta": {"tier": "2"}}
    assert client.delete(f"{url}/role", headers=h).status_code == 204
    gone = client.get(f"{url}/role", headers=h)
    assert gone.status_code == 404 and gone.json()["itemNotFound"]
    shown = client.get(f"{COMPUTE}/servers/{sid}", headers=h).json()["server"]
    assert shown["metadata"] == {"tier": "2"}
    replaced = client.put(url, headers=h, json={"metadata": {"a": "b"}}).json()
    assert replaced["metadata"] == {"a": "b"}
    assert member.get(f"/instances/{sid}").json()["properties"] == {"a": "b"}

    # bad input is refused and changes nothing, through either API
    too_many = {"metadata": {f"k{i}": "v" for i in range(129)}}
    assert client.post(url, headers=h, json=too_many).status_code == 400
    long_value = {"metadata": {"a": "x" * 256}}
    assert client.post(url, headers=h, json=long_value).status_code == 400
    assert member.put(f"/instances/{sid}/properties", json={"": "v"}).status_code == 400
    assert member.get(f"/instances/{sid}").json()["properties"] == {"a": "b"}
    reader = {"X-Auth-Token": callers["reader"].token}
    assert client.post(url, headers=reader, json={"metadata": {"c": "d"}}).status_code == 403
    assert client.get(url, headers=reader).json() == {"metadata": {"a": "b"}}
    other = {"X-Auth-Token": callers["p2-member"].token}
    assert client.get(url, headers=other).status_code == 404


def test_quotas_of_every_service_and_their_checks(client, callers, tmp_path):
    admin = {"X-Auth-Token": callers["system_admin"].token}
    member = {"X-Auth-Token": callers["member"].token}
    project = callers["member"].get("/auth/whoami").json()["project_id"]
    volume = f"{OS}/volume/v3/{project}"
    shown = client.get(f"{volume}/os-quota-sets/{project}?usage=True", headers=member).json()
    native = callers["member"].get("/quotas").json()["quotas"]
    assert shown["quota_set"]["gigabytes"]["limit"] == native["volume_gib"]["limit"]
    network = client.get(f"{OS}/network/v2.0/quotas/{project}", headers=member).json()
    assert network["quota"]["network"] == native["networks"]["limit"]
    assert network["quota"]["floatingip"] == native["floating_ips"]["limit"]
    assert network["quota"]["router"] == native["routers"]["limit"]

    body = {"quota": {"network": 2, "check_limit": True}}
    changed = client.put(f"{OS}/network/v2.0/quotas/{project}", headers=admin, json=body)
    assert changed.status_code == 200 and changed.json()["quota"]["network"] == 2
    body = {"quota_set": {"volumes": 5, "gigabytes": 50}}
    changed = client.put(f"{volume}/os-quota-sets/{project}", headers=admin, json=body)
    assert changed.status_code == 200, changed.text
    after = callers["member"].get("/quotas").json()["quotas"]
    assert (after["networks"]["limit"], after["volumes"]["limit"]) == (2, 5)
    limits = client.get(f"{volume}/limits", headers=member).json()["limits"]["absolute"]
    assert (limits["maxTotalVolumes"], limits["maxTotalVolumeGigabytes"]) == (5, 50)

    # a limit below what is in use is refused unless the client forces it
    image = upload_image(callers["member"], tmp_path, "q-img")
    vm = {"name": "q", "image": image["id"], "flavor": "m1.tiny"}
    assert callers["member"].post("/instances", json=vm).status_code == 202
    compute = f"{COMPUTE}/os-quota-sets/{project}"
    below = {"quota_set": {"instances": 0, "cores": 8}}
    refused = client.put(compute, headers=admin, json=below)
    assert refused.status_code == 400 and "in use" in refused.json()["badRequest"]["message"]
    unchanged = callers["member"].get("/quotas").json()["quotas"]
    assert unchanged["vcpus"]["limit"] == native["vcpus"]["limit"]  # nothing was set
    forced = client.put(
        compute, headers=admin, json={"quota_set": {**below["quota_set"], "force": True}}
    )
    assert forced.status_code == 200
    assert callers["member"].get("/quotas").json()["quotas"]["instances"]["limit"] == 0
    unknown = {"quota": {"subnet": 5}}
    refused = client.put(f"{OS}/network/v2.0/quotas/{project}", headers=admin, json=unknown)
    assert refused.status_code == 400 and refused.json()["NeutronError"]["message"]
    assert (
        client.put(f"{volume}/os-quota-sets/{project}", headers=member, json=body).status_code
        == 403
    )


def test_security_groups_page_through_neutron_links(client, callers):
    h = {"X-Auth-Token": callers["member"].token}
    for i in range(3):
        body = {"security_group": {"name": f"sg{i}"}}
        made = client.post(f"{OS}/network/v2.0/security-groups", headers=h, json=body)
        assert made.status_code == 201, made.text
    url, names = f"{OS}/network/v2.0/security-groups?limit=2", []
    for _ in range(4):
        page = client.get(url, headers=h).json()
        names += [g["name"] for g in page["security_groups"]]
        nexts = [lnk["href"] for lnk in page.get("security_groups_links", [])]
        if not nexts:
            break
        url = nexts[0].removeprefix("http://testserver")
    assert sorted(names) == ["default", "sg0", "sg1", "sg2"]
    native = callers["member"].get("/security-groups").json()["items"]
    assert sorted(g["name"] for g in native) == sorted(names)
