"""Starts one vendor-sim process for the session and hands its startup JSON to the tests."""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _sim_binary() -> str:
    explicit = os.environ.get("VENDOR_SIM_BIN")
    if explicit:
        return explicit
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return str(target / "debug" / "vendor-sim")


@pytest.fixture(scope="session")
def sim():
    """The simulator's startup JSON: trend{url,adminApiKey,adminUser,adminPassword},
    cisco{url,apiKey,apiSecret,uiEmail,uiPassword}, visionOne{url,adminApiKey}, cloudOne{url,adminApiKey},
    caFile, controlUrl."""
    workdir = tempfile.mkdtemp(prefix="vendor-sim-py-")
    proc = subprocess.Popen(
        [_sim_binary(), "--ca-file", os.path.join(workdir, "ca.crt")],
        stdout=subprocess.PIPE,
        stderr=open(os.path.join(workdir, "stderr.log"), "wb"),
        text=True,
    )
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"vendor-sim exited without its startup line (see {workdir}/stderr.log)")
        info = json.loads(line)
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def control(sim):
    """A requests session bound to the control URL; faults and counts are reset around each test."""
    base = sim["controlUrl"]

    class Control:
        def url(self, path):
            return base + path

        def get(self, path, **kw):
            return requests.get(base + path, timeout=10, **kw)

        def post(self, path, **kw):
            return requests.post(base + path, timeout=10, **kw)

        def delete(self, path, **kw):
            return requests.delete(base + path, timeout=10, **kw)

    c = Control()
    c.delete("/faults")
    yield c
    c.delete("/faults")
