"""The official Trend Micro SDK (deep-security-api 20.0.463), unchanged, against vendor-sim.

Trend's two documented flows (docs/vendor-apis.md §3-§4; SDK: role by name, key expiring in two weeks, its
secret used, regenerated, deleted; cURL: sessions, sID cookie and rID header, then the first key), plus the error
shapes, search semantics, rights and rate limit the operator depends on.
"""
import gc
import re
import time
import uuid

import deepsecurity as api
import pytest
import requests
from deepsecurity.rest import ApiException

API_VERSION = "v1"
TWO_WEEKS_MS = 14 * 24 * 60 * 60 * 1000


def sdk_client(sim, secret):
    """An ApiClient authenticating with `secret`, verifying the simulator's certificate."""
    configuration = api.Configuration()
    configuration.host = sim["trend"]["url"]
    # Configuration() instances are shallow copies of one default and share its api_key dict.
    configuration.api_key = {}
    configuration.api_key["api-secret-key"] = secret
    configuration.verify_ssl = True
    configuration.ssl_ca_cert = sim["caFile"]
    return api.ApiClient(configuration)


@pytest.fixture(autouse=True)
def _release_sdk_clients():
    """Each ApiClient owns a thread pool that its __del__ joins; collect them while the interpreter is whole."""
    yield
    gc.collect()


@pytest.fixture
def admin(sim):
    return sdk_client(sim, sim["trend"]["adminApiKey"])


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def search_role_id(client, role_name):
    """The "Obtain a role ID" snippet of Trend's documentation (docs/vendor-apis.md §4)."""
    name_criteria = api.SearchCriteria()
    name_criteria.field_name = "name"
    name_criteria.string_value = role_name
    name_criteria.string_test = "equal"
    role_filter = api.SearchFilter()
    role_filter.search_criteria = [name_criteria]
    admin_roles_api = api.AdministratorRolesApi(client)
    roles = admin_roles_api.search_administrator_roles(API_VERSION, search_filter=role_filter)
    if len(roles.roles) > 0:
        return roles.roles[0].id
    return None


def create_audit_key(client, key_name, role_id):
    """The "Create an API key using an SDK" snippet of Trend's documentation (docs/vendor-apis.md §4)."""
    time_to_expiry_in_ms = 14 * 24 * 60 * 60 * 1000
    current_time_in_ms = int(round(time.time() * 1000))
    key = api.ApiKey()
    key.key_name = key_name
    key.description = "Read-only access"
    key.role_id = role_id
    key.locale = "en-US"
    key.time_zone = "Asia/Tokyo"
    key.expiry_date = current_time_in_ms + time_to_expiry_in_ms  # expires in 2 weeks
    api_keys_api = api.APIKeysApi(client)
    return api_keys_api.create_api_key(key, API_VERSION)


def error_message(exc):
    import json

    return json.loads(exc.body)["message"]


def test_seed_sdk_flow(sim, admin, control):
    role_id = search_role_id(admin, "Auditor")
    assert role_id == 2

    key_name = unique("reporting-auditor")
    before = int(time.time() * 1000)
    created = create_audit_key(admin, key_name, role_id)
    assert created.id > 0
    assert created.key_name == key_name
    assert created.role_id == 2
    assert created.active is True
    assert re.fullmatch(rf"{created.id}:[A-Za-z0-9+/]{{43}}=", created.secret_key)
    assert before + TWO_WEEKS_MS <= created.expiry_date <= int(time.time() * 1000) + TWO_WEEKS_MS

    own = api.APIKeysApi(sdk_client(sim, created.secret_key))
    current = own.describe_current_api_key(API_VERSION)
    assert current.id == created.id
    assert current.key_name == key_name
    assert current.description == "Read-only access"
    assert current.role_id == 2
    assert current.locale == "en-US"
    assert current.time_zone == "Asia/Tokyo"
    assert current.expiry_date == created.expiry_date
    assert current.secret_key is None
    assert current.role_urn

    admin_keys = api.APIKeysApi(admin)
    regenerated = admin_keys.replace_api_secret_key(created.id, API_VERSION)
    assert regenerated.id == created.id
    assert regenerated.secret_key and regenerated.secret_key != created.secret_key

    with pytest.raises(ApiException) as refused:
        own.describe_current_api_key(API_VERSION)
    assert refused.value.status == 401
    assert error_message(refused.value)

    renewed = api.APIKeysApi(sdk_client(sim, regenerated.secret_key))
    assert renewed.describe_current_api_key(API_VERSION).id == created.id

    admin_keys.delete_api_key(created.id, API_VERSION)
    with pytest.raises(ApiException) as gone:
        admin_keys.describe_api_key(created.id, API_VERSION)
    assert gone.value.status == 404
    assert error_message(gone.value) == "The API key does not exist."
    with pytest.raises(ApiException) as after_delete:
        renewed.describe_current_api_key(API_VERSION)
    assert after_delete.value.status == 401

    keys = control.get("/trend/keys").json()["keys"]
    assert not [k for k in keys if k["keyName"] == key_name]


def test_role_id_as_string_like_the_seed_sample(sim, admin):
    # Trend's documented snippet assigns key.role_id = "2" (docs/vendor-apis.md §4); the SDK sends the string as is.
    created = create_audit_key(admin, unique("string-role"), "2")
    assert created.role_id == 2
    api.APIKeysApi(admin).delete_api_key(created.id, API_VERSION)


def test_seed_curl_flow_sessions(sim):
    url = sim["trend"]["url"]
    ca = sim["caFile"]
    login = requests.post(
        f"{url}/sessions",
        headers={"Cache-Control": "no-cache", "Content-Type": "application/json", "api-version": "v1"},
        json={"userName": sim["trend"]["adminUser"], "password": sim["trend"]["adminPassword"]},
        verify=ca,
        timeout=10,
    )
    assert login.status_code == 200, login.text
    set_cookie = login.headers["Set-Cookie"]
    assert re.fullmatch(r"sID=[0-9A-F]{32}; Path=/; Secure; HttpOnly", set_cookie), set_cookie
    assert login.headers["Cache-Control"] == "no-cache,no-store"
    body = login.json()
    assert body["administratorID"] == 1
    assert body["accessType"] == "webService"
    assert isinstance(body["created"], int) and isinstance(body["lastActivity"], int)
    assert re.fullmatch(r"[0-9A-F]{32}", body["RID"])

    key_name = unique("First Key")
    headers = {"Content-Type": "application/json", "api-version": "v1", "rID": body["RID"]}
    payload = {"keyName": key_name, "description": "Created using a request ID", "roleID": 1}
    created = requests.post(f"{url}/apikeys", headers=headers, cookies=login.cookies, json=payload, verify=ca, timeout=10)
    assert created.status_code == 200, created.text
    key = created.json()
    assert list(key) == [
        "keyName", "description", "locale", "roleID", "timeZone", "active", "created",
        "unsuccessfulSignInAttempts", "secretKey", "serviceAccount", "ID",
    ]
    assert (key["keyName"], key["roleID"], key["locale"], key["active"]) == (key_name, 1, "en-US", True)
    assert key["serviceAccount"] is False and key["unsuccessfulSignInAttempts"] == 0

    # The new key works with the SDK.
    own = api.APIKeysApi(sdk_client(sim, key["secretKey"]))
    assert own.describe_current_api_key(API_VERSION).key_name == key_name

    # The cookie without the rID header, or a wrong password, is refused.
    no_rid = {k: v for k, v in headers.items() if k != "rID"}
    refused = requests.get(f"{url}/apikeys", headers=no_rid, cookies=login.cookies, verify=ca, timeout=10)
    assert refused.status_code == 401 and refused.json()["message"]
    bad = requests.post(
        f"{url}/sessions",
        headers={"Content-Type": "application/json", "api-version": "v1"},
        json={"userName": sim["trend"]["adminUser"], "password": "wrong"},
        verify=ca,
        timeout=10,
    )
    assert bad.status_code == 401 and bad.json()["message"]
    api.APIKeysApi(sdk_client(sim, sim["trend"]["adminApiKey"])).delete_api_key(key["ID"], API_VERSION)


def test_auditor_key_reads_but_cannot_write(sim, admin):
    created = create_audit_key(admin, unique("auditor"), 2)
    auditor = api.APIKeysApi(sdk_client(sim, created.secret_key))
    assert any(k.id == created.id for k in auditor.list_api_keys(API_VERSION).api_keys)
    assert auditor.describe_api_key(created.id, API_VERSION).key_name == created.key_name
    roles = api.AdministratorRolesApi(sdk_client(sim, created.secret_key)).list_administrator_roles(API_VERSION)
    assert {r.name: r.id for r in roles.roles} == {"Full Access": 1, "Auditor": 2}
    assert roles.roles[1].rights.platform_rights.apikey_rights.can_create_new_api_keys is False

    new_key = api.ApiKey(key_name=unique("escalate"), role_id=1)
    with pytest.raises(ApiException) as denied:
        auditor.create_api_key(new_key, API_VERSION)
    assert denied.value.status == 403
    assert error_message(denied.value) == "Not authorized to create API keys."
    with pytest.raises(ApiException) as denied:
        auditor.replace_api_secret_key(1, API_VERSION)
    assert denied.value.status == 403
    assert error_message(denied.value) == "Not authorized to generate API secret keys."
    api.APIKeysApi(admin).delete_api_key(created.id, API_VERSION)


def test_search_filter_semantics(sim, admin):
    keys = api.APIKeysApi(admin)
    tag = uuid.uuid4().hex[:6]
    made = [keys.create_api_key(api.ApiKey(key_name=name, role_id=2), API_VERSION) for name in
            (f"c{tag}_1", f"c{tag}X1", f"c{tag}_1")]

    def search(**criteria):
        c = api.SearchCriteria(**criteria)
        return [k.id for k in keys.search_api_keys(API_VERSION, search_filter=api.SearchFilter(search_criteria=[c])).api_keys]

    # stringWildcards defaults to true: "_" matches any one character.
    assert search(field_name="keyName", string_value=f"c{tag}_1", string_test="equal") == [k.id for k in made]
    exact = search(field_name="keyName", string_value=f"c{tag}_1", string_test="equal", string_wildcards=False)
    assert exact == [made[0].id, made[2].id]
    assert search(field_name="keyName", string_value=f"c{tag}%") == [k.id for k in made]
    assert search(id_test="equal", id_value=made[1].id) == [made[1].id]

    paged = keys.search_api_keys(API_VERSION, search_filter=api.SearchFilter(
        max_items=2, sort_by_object_id=True,
        search_criteria=[api.SearchCriteria(id_test="greater-than", id_value=made[0].id - 1)]))
    assert [k.id for k in paged.api_keys] == [made[0].id, made[1].id]

    roles = api.AdministratorRolesApi(admin).search_administrator_roles(API_VERSION, search_filter=api.SearchFilter(
        search_criteria=[api.SearchCriteria(field_name="name", string_value="%Access", string_test="equal")]))
    assert [r.name for r in roles.roles] == ["Full Access"]
    assert api.AdministratorRolesApi(admin).describe_administrator_role(2, API_VERSION).name == "Auditor"

    with pytest.raises(ApiException) as bad:
        keys.search_api_keys(API_VERSION, search_filter=api.SearchFilter(
            search_criteria=[api.SearchCriteria(field_name="noSuchField", string_value="x")]))
    assert bad.value.status == 400 and error_message(bad.value)
    for k in made:
        keys.delete_api_key(k.id, API_VERSION)


def test_modify_locks_out_and_control_revoke_expire(sim, admin, control):
    keys = api.APIKeysApi(admin)
    created = create_audit_key(admin, unique("lifecycle"), 2)
    own = api.APIKeysApi(sdk_client(sim, created.secret_key))

    modified = keys.modify_api_key(created.id, api.ApiKey(active=False, locale="ja-JP"), API_VERSION)
    assert (modified.active, modified.locale, modified.description) == (False, "ja-JP", "Read-only access")
    with pytest.raises(ApiException) as locked:
        own.describe_current_api_key(API_VERSION)
    assert locked.value.status == 401
    keys.modify_api_key(created.id, api.ApiKey(active=True), API_VERSION)
    assert own.describe_current_api_key(API_VERSION).id == created.id

    assert control.post(f"/trend/keys/{created.id}/revoke").json()["active"] is False
    with pytest.raises(ApiException) as revoked:
        own.describe_current_api_key(API_VERSION)
    assert revoked.value.status == 401
    keys.modify_api_key(created.id, api.ApiKey(active=True), API_VERSION)
    expired = control.post(f"/trend/keys/{created.id}/expire").json()
    assert expired["live"] is False and expired["expiryDate"] < time.time() * 1000
    with pytest.raises(ApiException) as too_late:
        own.describe_current_api_key(API_VERSION)
    assert too_late.value.status == 401

    listed = control.get("/trend/keys").json()["keys"]
    mine = [k for k in listed if k["ID"] == created.id]
    assert len(mine) == 1 and "secretKey" not in mine[0]
    assert control.delete(f"/trend/keys/{created.id}").status_code == 200
    with pytest.raises(ApiException) as gone:
        keys.describe_api_key(created.id, API_VERSION)
    assert gone.value.status == 404


def test_errors_have_the_documented_shape(sim):
    url = sim["trend"]["url"]
    ca = sim["caFile"]
    admin_key = sim["trend"]["adminApiKey"]
    no_version = requests.get(f"{url}/apikeys", headers={"api-secret-key": admin_key}, verify=ca, timeout=10)
    assert no_version.status_code == 400 and "api-version" in no_version.json()["message"]
    nobody = requests.get(f"{url}/apikeys", headers={"api-version": "v1"}, verify=ca, timeout=10)
    assert nobody.status_code == 401 and nobody.json()["message"]
    with pytest.raises(ApiException) as unknown:
        api.APIKeysApi(sdk_client(sim, "999:" + "A" * 43 + "=")).list_api_keys(API_VERSION)
    assert unknown.value.status == 401 and error_message(unknown.value)
    with pytest.raises(ApiException) as bad_locale:
        api.APIKeysApi(sdk_client(sim, admin_key)).create_api_key(
            {"keyName": unique("bad-locale"), "roleID": 2, "locale": "fr-FR"}, API_VERSION)
    assert bad_locale.value.status == 400 and error_message(bad_locale.value)


def test_per_key_rate_limit_answers_429(sim, admin, control):
    created = create_audit_key(admin, unique("throttled"), 2)
    own = api.APIKeysApi(sdk_client(sim, created.secret_key))
    previous = control.get("/trend/rate-limit").json()
    assert previous["perMinute"] == 500
    try:
        assert requests.put(control.url("/trend/rate-limit"), json={"perMinute": 3}, timeout=10).ok
        for _ in range(3):
            own.describe_current_api_key(API_VERSION)
        with pytest.raises(ApiException) as limited:
            own.describe_current_api_key(API_VERSION)
        assert limited.value.status == 429
        assert error_message(limited.value) == "Too many API requests"
        # The limit is per key: the admin key still gets through.
        api.APIKeysApi(admin).describe_current_api_key(API_VERSION)
    finally:
        requests.put(control.url("/trend/rate-limit"), json=previous, timeout=10)
    api.APIKeysApi(admin).delete_api_key(created.id, API_VERSION)
