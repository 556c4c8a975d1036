#!/usr/bin/env python3
"""Gateway request path with credentials, measured with wrk against one
nginx (1 worker) whose backend is a `return 200` server in the same nginx:

  bare      proxy_pass to the backend, no module in the path (no keepalive
            either: the module's $apim_backend path opens a connection per
            request too, until the upstream balancer does keepalive)
  open      the module, a resource with authType None (no credential)
  jwt       Authorization: Bearer <RS256 JWT>, subscription and scope checks
  apikey    apikey: <API key>
  jwt+bjwt  as jwt, plus the backend JWT (X-JWT-Assertion)

Usage: bench/gateway_auth.py <module.so> [<other module.so> ...] [-d secs] [-r rounds]
Each module is run in turn, rounds times, cases alternating; medians of
requests/s and of nginx's CPU time per request (both servers: gateway
and the return-200 backend; steadier than req/s on a shared machine) are
printed. Modules older than the backend JWT skip jwt+bjwt.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from gwtest import b64url, free_port, rsa_jwk  # noqa: E402

ISSUER = "https://127.0.0.1:9443/oauth2/token"
API_ID = "bench-api-1"
APP_ID = "bench-app-1"


def sign(key, claims):
    hdr = {"alg": "RS256", "typ": "JWT", "kid": "gw-test-key"}
    si = b64url(json.dumps(hdr).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key],
                         input=si.encode(), check=True, capture_output=True).stdout
    return si + "." + b64url(sig)


def start(tmp, module, bjwt, port, bport):
    conf = os.path.join(tmp, "nginx.conf")
    extra = ("apim_backend_jwt on; apim_backend_jwt_key %s/bjwt.pem;" % tmp) if bjwt else ""
    with open(conf, "w") as f:
        f.write("""
load_module %(module)s;
user root; daemon off; master_process on; worker_processes 1;
error_log %(dir)s/error.log warn; pid %(dir)s/nginx.pid;
events { worker_connections 1024; }
http {
    apim_snapshot_file %(dir)s/snapshot.json;
    %(extra)s
    access_log off;
    upstream be { server 127.0.0.1:%(bport)d; keepalive 32; }
    server {
        listen 127.0.0.1:%(bport)d;
        location / { return 200 "ok"; }
    }
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            apim_gateway on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass $apim_backend$apim_rest$is_args$args;
        }
        location /bare/ {
            proxy_pass http://127.0.0.1:%(bport)d/;
        }
    }
}
""" % {"module": module, "dir": tmp, "port": port, "bport": bport, "extra": extra})
    p = subprocess.Popen(["/usr/sbin/nginx", "-c", conf, "-p", tmp + "/"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start")


def cpu_ticks(master):
    """utime + stime of nginx's workers (the backend server included)."""
    with open("/proc/%d/task/%d/children" % (master, master)) as f:
        kids = [int(x) for x in f.read().split()]
    total = 0
    for k in kids:
        with open("/proc/%d/stat" % k) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def wrk(port, path, header, secs, master):
    """(requests/s, worker CPU microseconds per request)"""
    t0 = cpu_ticks(master)
    cmd = ["wrk", "-t1", "-c16", "-d%ds" % secs]
    if header:
        cmd += ["-H", header]
    out = subprocess.run(cmd + ["http://127.0.0.1:%d%s" % (port, path)],
                         capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError("non-2xx answers: %s" % out)
    n = int(re.search(r"(\d+) requests in", out).group(1))
    us = (cpu_ticks(master) - t0) * 1e6 / os.sysconf("SC_CLK_TCK") / max(n, 1)
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), us


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("modules", nargs="+")
    ap.add_argument("-d", type=int, default=5)
    ap.add_argument("-r", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="apim-bench-auth-")
    os.chmod(tmp, 0o755)
    try:
        key, jwk = rsa_jwk(tmp)
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", tmp + "/bjwt.pem"],
                       check=True, capture_output=True)
        port, bport = free_port(), free_port()
        now = int(time.time())
        snap = {"seq": 1,
                "apis": [{"id": API_ID, "name": "Bench", "context": "/bench",
                          "version": "1.0.0", "lifeCycleStatus": "PUBLISHED",
                          "securityScheme": ["oauth2", "api_key"],
                          "endpointConfig": {"endpoint_type": "http",
                                             "production_endpoints": {
                                                 "url": "http://127.0.0.1:%d" % bport}},
                          "operations": [{"target": "/items", "verb": "GET",
                                          "authType": "Application", "scopes": []},
                                         {"target": "/open", "verb": "GET",
                                          "authType": "None", "scopes": []}]}],
                "applications": [{"id": APP_ID, "name": "B", "owner": "alice",
                                  "tier": "Unlimited"}],
                "keyMappings": [{"applicationId": APP_ID, "consumerKey": "benchKey",
                                 "keyType": "PRODUCTION"}],
                "subscriptions": [{"id": "s", "apiId": API_ID, "applicationId": APP_ID,
                                   "tier": "Gold", "status": "UNBLOCKED"}],
                "revokedJwts": [{"jti": "r%d" % i, "expiry": now + 3600}
                                for i in range(100)],
                "keyManagers": [{"name": "KM", "issuer": ISSUER, "jwks": {"keys": [jwk]}}]}
        with open(tmp + "/snapshot.json", "w") as f:
            json.dump(snap, f)
        tok = sign(key, {"iss": ISSUER, "sub": "alice", "azp": "benchKey",
                         "scope": "default", "iat": now, "exp": now + 7200, "jti": "t1"})
        akey = sign(key, {"iss": ISSUER, "sub": "alice", "iat": now, "exp": now + 7200,
                          "jti": "k1", "keytype": "PRODUCTION", "token_type": "apiKey",
                          "application": {"uuid": APP_ID, "name": "B"},
                          "subscribedAPIs": [{"uuid": API_ID, "name": "Bench",
                                              "version": "1.0.0"}]})
        cases = [("bare", "/bare/items", None, False),
                 ("open", "/bench/1.0.0/open", None, False),
                 ("jwt", "/bench/1.0.0/items", "Authorization: Bearer " + tok, False),
                 ("apikey", "/bench/1.0.0/items", "apikey: " + akey, False),
                 ("jwt+bjwt", "/bench/1.0.0/items", "Authorization: Bearer " + tok, True)]
        res = {}
        for _ in range(a.r):
            for m in a.modules:
                for bj in (False, True):
                    try:
                        p = start(tmp, m, bj, port, bport)
                    except RuntimeError:
                        continue    # a module without apim_backend_jwt
                    try:
                        for name, path, hdr, want_bj in cases:
                            if want_bj != bj:
                                continue
                            try:
                                rps = wrk(port, path, hdr, a.d, p.pid)
                            except RuntimeError:
                                continue    # a module without this credential
                            res.setdefault((m, name), []).append(rps)
                    finally:
                        p.send_signal(signal.SIGQUIT)
                        p.wait(10)
        for (m, name), v in sorted(res.items()):
            print("%-50s %-9s median %7.0f req/s %6.1f us CPU/req  (%s)"
                  % (m[-50:], name, statistics.median(x[0] for x in v),
                     statistics.median(x[1] for x in v),
                     ", ".join("%.0f" % x[0] for x in v)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
