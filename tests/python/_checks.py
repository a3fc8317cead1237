"""A tiny runner shared by the client checks in this folder (driven by tests/clients.rs).

Every check runs, even after one fails, so one run tells which of them fail. Each prints
`PASS name` or `FAIL name: why`; the process exits 1 when any failed.
"""

import http.client
import json
import sys
import traceback

_checks = []


def check(fn):
    """Registers `fn` as a check; they run in the order they are defined."""
    _checks.append(fn)
    return fn


def expect(got, want, what=""):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}" if what else f"got {got!r}, want {want!r}")


def raw(host, port, method, path, body=None, content_type="application/json"):
    """One HTTP request; returns (status, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Content-Type": content_type} if body is not None else {}
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def raw_json(host, port, method, path, body):
    status, data = raw(host, port, method, path, json.dumps(body))
    return status, json.loads(data)


def run(client_name, *args):
    failed = []
    for fn in _checks:
        try:
            fn(*args)
        except Exception as e:  # every failure is reported, whatever its kind
            failed.append(fn.__name__)
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            print(f"FAIL {fn.__name__}: {detail}", flush=True)
            traceback.print_exc(file=sys.stdout)
        else:
            print(f"PASS {fn.__name__}", flush=True)
    print(f"{client_name}: {len(_checks) - len(failed)} of {len(_checks)} checks ok", flush=True)
    if failed:
        print(f"{client_name}: failing checks: {', '.join(failed)}", flush=True)
        sys.exit(1)
