"""The official Trend Vision One library (pytmv1 0.11.0), unchanged, against vendor-sim.

pytmv1 takes the region's host root (`pytmv1.init(name, token, url)`, it adds `/v3.0`) and sends through
requests' `HTTPAdapter.send` without a `Session`, so `REQUESTS_CA_BUNDLE` does not reach it: verification uses
requests' default bundle path, which the `trust_sim_ca` fixture points at the simulator's CA for the test only.
"""
import uuid

import pytest
import pytmv1
import requests.adapters
from pytmv1 import ApiExpInMonths, ApiKeyRequest, ApiStatus, QueryOp, ResultCode


@pytest.fixture(autouse=True)
def trust_sim_ca(sim, monkeypatch):
    """Verification stays on; it trusts only the simulator's CA (the path requests reads at each send)."""
    monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", sim["caFile"])


def client(sim, token):
    return pytmv1.init("workload-key-operator-conformance", token, sim["visionOne"]["url"])


@pytest.fixture
def admin(sim):
    return client(sim, sim["visionOne"]["adminApiKey"])


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_startup_json_names_the_host_root(sim):
    url = sim["visionOne"]["url"]
    assert url.startswith("https://") and not url.endswith("/v3.0")


def test_admin_key_passes_the_connectivity_check(admin):
    result = admin.system.check_connectivity()
    assert result.result_code == ResultCode.SUCCESS, result.error
    assert result.response.status == "available"


def test_create_get_list_update_delete(sim, admin):
    name = unique("wko-app")
    created = admin.api_key.create(
        ApiKeyRequest(
            name=name,
            role="Analyst",
            months_to_expiration=ApiExpInMonths.THREE,
            description="wko-uid:1234",
        )
    )
    assert created.result_code == ResultCode.SUCCESS, created.errors
    item = created.response.items[0]
    assert item.status == 201
    key_id, secret = item.id, item.value
    assert key_id and secret and item.expired_date_time

    got = admin.api_key.get(key_id)
    assert got.result_code == ResultCode.SUCCESS, got.error
    assert (got.response.data.name, got.response.data.role) == (name, "Analyst")
    assert got.response.data.status == ApiStatus.ENABLED
    assert got.response.etag

    listed = admin.api_key.list(name=name)
    assert listed.result_code == ResultCode.SUCCESS, listed.error
    assert [k.id for k in listed.response.items] == [key_id]
    assert listed.response.total_count == 1
    both = admin.api_key.list(op=QueryOp.OR, name=name, role="Nobody")
    assert [k.id for k in both.response.items] == [key_id]
    none = admin.api_key.list(name=name, role="Auditor")
    assert none.response.items == []

    updated = admin.api_key.update(
        key_id, got.response.etag, description="changed", status=ApiStatus.DISABLED
    )
    assert updated.result_code == ResultCode.SUCCESS, updated.error
    # The ETag moved on: the old one no longer matches.
    stale = admin.api_key.update(key_id, got.response.etag, description="again")
    assert stale.result_code == ResultCode.ERROR
    assert stale.error.status == 412
    again = admin.api_key.get(key_id).response
    assert again.data.description == "changed" and again.data.status == ApiStatus.DISABLED
    assert again.etag != got.response.etag

    deleted = admin.api_key.delete(key_id)
    assert deleted.result_code == ResultCode.SUCCESS, deleted.errors
    assert deleted.response.items[0].status == 204
    gone = admin.api_key.get(key_id)
    assert gone.result_code == ResultCode.ERROR and gone.error.status == 404
    twice = admin.api_key.delete(key_id)
    assert twice.result_code == ResultCode.ERROR and twice.errors[0].status == 404


def test_a_new_keys_secret_is_a_working_token(sim, admin):
    created = admin.api_key.create(ApiKeyRequest(name=unique("wko-token"), role="Auditor"))
    assert created.result_code == ResultCode.SUCCESS, created.errors
    item = created.response.items[0]
    app = client(sim, item.value)
    ok = app.system.check_connectivity()
    assert ok.result_code == ResultCode.SUCCESS, ok.error
    # An Auditor key may not manage keys.
    refused = app.api_key.list()
    assert refused.result_code == ResultCode.ERROR and refused.error.status == 403
    # Deleted, it no longer authenticates.
    assert admin.api_key.delete(item.id).result_code == ResultCode.SUCCESS
    after = app.system.check_connectivity()
    assert after.result_code == ResultCode.ERROR and after.error.status == 401


def test_master_administrator_is_refused_and_no_key_is_made(sim, admin, control):
    name = unique("wko-master")
    result = admin.api_key.create(ApiKeyRequest(name=name, role="Master Administrator"))
    assert result.result_code == ResultCode.ERROR
    assert result.errors[0].status == 400
    assert "cannot be assigned" in result.errors[0].message
    keys = control.get("/visionone/keys").json()["keys"]
    assert not [k for k in keys if k["name"] == name]


def test_a_bad_token_is_refused(sim):
    bad = client(sim, "not-a-key")
    result = bad.system.check_connectivity()
    assert result.result_code == ResultCode.ERROR and result.error.status == 401


def test_control_api_lists_and_revokes(sim, admin, control):
    name = unique("wko-ctl")
    item = admin.api_key.create(ApiKeyRequest(name=name, role="Operator")).response.items[0]
    keys = {k["id"]: k for k in control.get("/visionone/keys").json()["keys"]}
    assert keys[item.id]["live"] is True and "value" not in keys[item.id]
    assert control.post(f"/visionone/keys/{item.id}/revoke").json()["live"] is False
    revoked = client(sim, item.value).system.check_connectivity()
    assert revoked.result_code == ResultCode.ERROR and revoked.error.status == 401


def test_injected_faults_keep_the_error_shape(sim, admin, control):
    rule = {"vendor": "trend", "pathPrefix": "/v3.0/healthcheck", "status": 503, "count": 1}
    assert control.post("/faults", json=rule).status_code == 201
    result = admin.system.check_connectivity()
    assert result.result_code == ResultCode.ERROR and result.error.status == 503
    assert admin.system.check_connectivity().result_code == ResultCode.SUCCESS
