#!/usr/bin/env python3
"""An application using the Secrets the operator wrote, the way a pod does with them mounted as volumes.

    consumer.py --trend-secret DIR --cisco-secret DIR [--vision-one-secret DIR] [--cloud-one-secret DIR]
                [--trend-ca FILE]

Each DIR holds one file per key of a Secret (what a Secret volume gives a pod). Each key is used the way its
vendor documents, with nothing else configured:

- Trend Micro Workload Security / Deep Security (the official SDK, deep-security-api):
  configuration.api_key['api-secret-key'] from the `api-secret-key` file, configuration.host from `endpoint`;
  the key describes itself (GET /api/apikeys/current);
- Trend Vision One (the official SDK, pytmv1): pytmv1.init(name, <api-key>, <endpoint>), then the connectivity
  check (GET /v3.0/healthcheck/connectivity), which answers only to a valid key;
- Trend Cloud One (plain HTTPS with requests): `Authorization: ApiKey <api-key>` with `Api-Version: v1`; the key
  describes itself (GET <endpoint>/apikeys/<api-key-id>, a read, which its Read Only role allows);
- Cisco Secure Workload (the official SDK, tetpyclient): RestClient(endpoint, credentials_file=<DIR>/credentials.json).

--trend-ca is the CA of the Trend endpoints (all three), for a private CA; without it the system roots are trusted.
Prints what each API answered (never a secret) and exits non-zero when a call fails.
"""
import argparse
import contextlib
import datetime
import os
import sys
import tempfile
import urllib.parse

import certifi
import deepsecurity
import pytmv1
import requests
import requests.adapters
from tetpyclient import RestClient

API_VERSION = "v1"


def read(directory, key):
    with open(os.path.join(directory, key), encoding="utf-8") as f:
        return f.read().strip()


def trend(secret_dir, ca_file):
    configuration = deepsecurity.Configuration()
    configuration.host = read(secret_dir, "endpoint")
    configuration.api_key = {}  # Configuration() instances share one default dict; use our own
    configuration.api_key["api-secret-key"] = read(secret_dir, "api-secret-key")
    configuration.verify_ssl = True  # the SDK's default is False: never call an API key endpoint unverified
    if ca_file:
        configuration.ssl_ca_cert = ca_file
    client = deepsecurity.ApiClient(configuration)
    try:
        me = deepsecurity.APIKeysApi(client).describe_current_api_key(API_VERSION)
        expires = (
            datetime.datetime.fromtimestamp(me.expiry_date / 1000, datetime.timezone.utc).isoformat(timespec="seconds")
            if me.expiry_date
            else "never"
        )
        print(
            f"trend deep-security: GET /api/apikeys/current -> key {me.id} '{me.key_name}', role {me.role_id}, "
            f"expires {expires}"
        )
    finally:
        # The SDK's ApiClient owns a thread pool that its __del__ joins; join it now, not at interpreter exit.
        client.pool.close()
        client.pool.join()


@contextlib.contextmanager
def requests_default_ca(ca_file):
    """pytmv1 takes no CA option: it sends through requests' HTTPAdapter without a Session, so requests' default
    bundle decides what is trusted. With ca_file, that bundle is certifi's roots plus ca_file, for this process and
    while the block runs."""
    if not ca_file:
        yield
        return
    with open(certifi.where(), encoding="utf-8") as roots, open(ca_file, encoding="utf-8") as extra:
        pem = roots.read() + "\n" + extra.read()
    saved = requests.adapters.DEFAULT_CA_BUNDLE_PATH
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as bundle:
        bundle.write(pem)
    requests.adapters.DEFAULT_CA_BUNDLE_PATH = bundle.name
    try:
        yield
    finally:
        requests.adapters.DEFAULT_CA_BUNDLE_PATH = saved
        os.unlink(bundle.name)


def vision_one(secret_dir, ca_file):
    key_id = read(secret_dir, "api-key-id")
    with requests_default_ca(ca_file):
        client = pytmv1.init("consumer", read(secret_dir, "api-key"), read(secret_dir, "endpoint"))
        result = client.system.check_connectivity()
    if result.result_code != pytmv1.ResultCode.SUCCESS:
        raise RuntimeError(f"check_connectivity failed: {result.error}")
    print(
        f"trend vision-one: pytmv1 check_connectivity() (GET /v3.0/healthcheck/connectivity) -> "
        f"{result.response.status}, with key {key_id}"
    )


def cloud_one(secret_dir, ca_file):
    endpoint = read(secret_dir, "endpoint")
    key_id = read(secret_dir, "api-key-id")
    headers = {"Authorization": f"ApiKey {read(secret_dir, 'api-key')}", "Api-Version": "v1"}
    url = f"{endpoint}/apikeys/{urllib.parse.quote(key_id, safe='')}"
    resp = requests.get(url, headers=headers, verify=ca_file or True, timeout=30)
    path = urllib.parse.urlsplit(url).path
    if resp.status_code != 200:
        raise RuntimeError(f"GET {path} answered {resp.status_code}")
    me = resp.json()
    print(
        f"trend cloud-one: GET {path} (the key describing itself) -> {resp.status_code}, alias '{me.get('alias')}', "
        f"role {me.get('roleID')}, locale {me.get('locale')}, time zone {me.get('timezone')}"
    )


def cisco(secret_dir):
    ca = os.path.join(secret_dir, "ca.crt")
    client = RestClient(
        read(secret_dir, "endpoint"),
        credentials_file=os.path.join(secret_dir, "credentials.json"),
        verify=ca if os.path.exists(ca) else True,
    )
    for path in ["/sensors", "/flowsearch/dimensions"]:
        resp = client.get(path)
        if resp.status_code != 200:
            raise RuntimeError(f"GET /openapi/v1{path} answered {resp.status_code}")
        body = resp.json()
        size = len(body) if isinstance(body, (list, dict)) else 1
        print(f"cisco: GET /openapi/v1{path} -> {resp.status_code}, {size} item(s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trend-secret", required=True, help="directory with a Deep Security WorkloadApiKey's Secret")
    parser.add_argument("--cisco-secret", required=True, help="directory with the SecureWorkloadCredential's Secret")
    parser.add_argument("--vision-one-secret", help="directory with a Vision One WorkloadApiKey's Secret")
    parser.add_argument("--cloud-one-secret", help="directory with a Cloud One WorkloadApiKey's Secret")
    parser.add_argument("--trend-ca", help="CA bundle of the Trend endpoints (default: system roots)")
    args = parser.parse_args()
    used = ["Trend Deep Security"]
    try:
        trend(args.trend_secret, args.trend_ca)
        if args.vision_one_secret:
            vision_one(args.vision_one_secret, args.trend_ca)
            used.append("Trend Vision One")
        if args.cloud_one_secret:
            cloud_one(args.cloud_one_secret, args.trend_ca)
            used.append("Trend Cloud One")
        cisco(args.cisco_secret)
        used.append("Cisco Secure Workload")
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        print(f"consumer: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"consumer: OK (every key authenticated with the operator's Secrets: {', '.join(used)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
