"""The official Cisco SDK (tetpyclient 1.0.8), unchanged, against the Secure Workload simulator.

Pins the simulator's signature checks and answers to what the real SDK sends and expects:
credentials.json, GET with a query, POST with a JSON body, 401 `Unknown credentials` for an unknown
key, 403 `Invalid request` for a wrong secret. The UI session flow is driven with plain `requests`,
the way the public scripts that use it do (docs/vendor-apis.md §11).
"""
import json
import re

import pytest
import requests
from tetpyclient import RestClient


def _client(sim, tmp_path, api_key, api_secret, name="credentials.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"api_key": api_key, "api_secret": api_secret}))
    return RestClient(sim["cisco"]["url"], credentials_file=str(path), verify=sim["caFile"])


@pytest.fixture
def seeded(sim, tmp_path):
    return _client(sim, tmp_path, sim["cisco"]["apiKey"], sim["cisco"]["apiSecret"])


def _new_key(sim, capabilities, description="sdk test"):
    resp = requests.post(
        sim["controlUrl"] + "/cisco/keys",
        json={"capabilities": capabilities, "description": description},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_get_with_query_params(seeded):
    enabled = seeded.get("/users")
    assert enabled.status_code == 200, enabled.text
    assert enabled.headers["Content-Type"] == "application/json; charset=utf-8"
    everyone = seeded.get("/users", params={"include_disabled": "true"})
    assert everyone.status_code == 200, everyone.text
    assert everyone.request.path_url == "/openapi/v1/users?include_disabled=true"
    assert len(everyone.json()) == len(enabled.json()) + 1
    assert any(u["disabled_at"] for u in everyone.json())


def test_post_put_delete_with_json_body(seeded):
    body = {"email": "sdk.user@example.com", "first_name": "Sdk", "last_name": "User"}
    created = seeded.post("/users", json_body=json.dumps(body))
    assert created.status_code == 200, created.text
    assert "X-Tetration-Cksum" in created.request.headers
    user = created.json()
    assert user["email"] == body["email"] and user["id"]

    renamed = seeded.put("/users/%s" % user["id"], json_body=json.dumps({"first_name": "Renamed"}))
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["first_name"] == "Renamed"

    disabled = seeded.delete("/users/%s" % user["id"])
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled_at"]
    enabled = seeded.post("/users/%s/enable" % user["id"])
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["disabled_at"] is None


def test_prefixed_and_bare_paths_are_the_same(seeded):
    assert seeded.get("/openapi/v1/sensors").json() == seeded.get("/sensors").json()


def test_wrong_secret_is_403_invalid_request(sim, tmp_path):
    rc = _client(sim, tmp_path, sim["cisco"]["apiKey"], "0" * 40)
    resp = rc.get("/app_scopes")
    assert resp.status_code == 403
    assert resp.text == "Invalid request"
    assert resp.headers["Content-Type"].startswith("text/plain")
    # Before routing: an unknown path is refused the same way.
    assert rc.get("/no_such_thing").status_code == 403


def test_unknown_key_is_401_unknown_credentials(sim, tmp_path):
    rc = _client(sim, tmp_path, "f" * 32, sim["cisco"]["apiSecret"])
    resp = rc.get("/app_scopes")
    assert resp.status_code == 401
    assert resp.text == "Unknown credentials"
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_good_signature_on_unknown_path_is_404(seeded):
    assert seeded.get("/no_such_thing").status_code == 404


def test_capabilities_are_enforced_per_probe_table(sim, tmp_path):
    key = _new_key(sim, ["sensor_management"])
    rc = _client(sim, tmp_path, key["apiKey"], key["apiSecret"])
    assert rc.get("/sensors").status_code == 200
    for path in ["/roles", "/applications", "/flowsearch/dimensions", "/app_scopes"]:
        resp = rc.get(path)
        assert resp.status_code == 403, path
        assert resp.text != "Invalid request", "a missing capability must differ from a bad signature"
        assert "error" in resp.json()


def test_retry_resends_the_same_signed_request(seeded, control):
    # tetpyclient re-sends the prepared request (old Timestamp and signature) after 2 s.
    rule = control.post("/faults", json={"vendor": "cisco", "pathPrefix": "/openapi/v1/roles", "status": 503, "count": 1})
    assert rule.status_code == 201, rule.text
    resp = seeded.get("/roles")
    assert resp.status_code == 200, resp.text


def test_revoked_key_becomes_unknown(sim, tmp_path, control):
    key = _new_key(sim, ["flow_inventory_query"])
    rc = _client(sim, tmp_path, key["apiKey"], key["apiSecret"])
    assert rc.get("/flowsearch/dimensions").status_code == 200
    listed = control.get("/cisco/credentials").json()
    assert any(k["apiKey"] == key["apiKey"] for k in listed)
    assert key["apiSecret"] not in json.dumps(listed)
    assert control.post("/cisco/keys/%s/revoke" % key["apiKey"]).status_code == 204
    resp = rc.get("/flowsearch/dimensions")
    assert (resp.status_code, resp.text) == (401, "Unknown credentials")


def _csrf(html):
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _ui_session(sim):
    """A browser-like session trusting the simulator's CA on every request (an env CA bundle would
    otherwise win over `Session.verify`)."""
    ui = requests.Session()
    send = ui.request

    def request(method, url, **kw):
        kw.setdefault("verify", sim["caFile"])
        kw.setdefault("timeout", 10)
        return send(method, url, **kw)

    ui.request = request
    return ui


def test_ui_session_mints_a_key_tetpyclient_can_use(sim, tmp_path):
    base = sim["cisco"]["url"]
    ui = _ui_session(sim)
    page = ui.get(base + "/h4_users/sign_in")
    assert page.status_code == 200
    signed_in = ui.post(
        base + "/h4_users/sign_in",
        data={
            "authenticity_token": _csrf(page.text),
            "h4_user[email]": sim["cisco"]["uiEmail"],
            "h4_user[password]": sim["cisco"]["uiPassword"],
        },
    )
    assert signed_in.status_code == 200 and signed_in.history and signed_in.history[0].status_code == 302
    token = _csrf(signed_in.text)
    headers = {"X-CSRF-Token": token, "Accept": "application/json"}

    unknown = ui.post(base + "/api/api_credentials.json", json={"description": "x", "capability_names": "root"}, headers=headers)
    assert unknown.status_code == 422 and "error" in unknown.json()
    no_token = ui.post(base + "/api/api_credentials.json", json={"description": "x", "capability_names": "sensor_management"})
    assert no_token.status_code == 422

    created = ui.post(
        base + "/api/api_credentials.json",
        json={"description": "from the UI", "capability_names": "sensor_management,flow_inventory_query"},
        headers=headers,
    )
    assert created.status_code == 200, created.text
    cred = created.json()
    assert len(cred["api_key"]) == 32 and len(cred["api_secret"]) == 40

    rc = _client(sim, tmp_path, cred["api_key"], cred["api_secret"], name="ui.json")
    assert rc.get("/sensors").status_code == 200
    assert rc.get("/flowsearch/dimensions").status_code == 200
    assert rc.get("/roles").status_code == 403

    listed = ui.get(base + "/api/api_credentials.json", headers=headers).json()
    assert any(k["id"] == cred["id"] for k in listed)
    assert cred["api_secret"] not in json.dumps(listed)

    deleted = ui.delete(base + "/api/api_credentials/%s.json" % cred["id"], headers=headers)
    assert deleted.status_code == 200
    assert rc.get("/sensors").status_code == 401


def test_ui_rejects_wrong_password(sim):
    base = sim["cisco"]["url"]
    ui = _ui_session(sim)
    page = ui.get(base + "/h4_users/sign_in")
    resp = ui.post(
        base + "/h4_users/sign_in",
        data={"authenticity_token": _csrf(page.text), "h4_user[email]": sim["cisco"]["uiEmail"], "h4_user[password]": "wrong"},
        allow_redirects=False,
    )
    assert resp.status_code == 401
    assert ui.get(base + "/api/api_credentials.json").status_code == 401
