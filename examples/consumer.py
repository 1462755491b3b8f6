#!/usr/bin/env python3
"""An application using the Secrets the operator wrote, the way a pod does with them mounted as volumes.

    consumer.py --trend-secret DIR --cisco-secret DIR [--trend-ca FILE]

Each DIR holds one file per key of a Secret (what a Secret volume gives a pod). The vendor APIs are called
with the vendors' official Python SDKs and nothing else configured:

- Trend Micro (deep-security-api): configuration.api_key['api-secret-key'] from the `api-secret-key` file,
  configuration.host from `endpoint`;
- Cisco Secure Workload (tetpyclient): RestClient(endpoint, credentials_file=<DIR>/credentials.json).

Prints what each API answered (never a secret) and exits non-zero when a call fails.
"""
import argparse
import datetime
import os
import sys

import deepsecurity
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
        print(f"trend: GET /api/apikeys/current -> key {me.id} '{me.key_name}', role {me.role_id}, expires {expires}")
    finally:
        # The SDK's ApiClient owns a thread pool that its __del__ joins; join it now, not at interpreter exit.
        client.pool.close()
        client.pool.join()


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
    parser.add_argument("--trend-secret", required=True, help="directory with the WorkloadApiKey's Secret")
    parser.add_argument("--cisco-secret", required=True, help="directory with the SecureWorkloadCredential's Secret")
    parser.add_argument("--trend-ca", help="CA bundle of the Trend endpoint (default: system roots)")
    args = parser.parse_args()
    try:
        trend(args.trend_secret, args.trend_ca)
        cisco(args.cisco_secret)
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        print(f"consumer: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("consumer: OK (both vendor SDKs authenticated with the operator's Secrets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
