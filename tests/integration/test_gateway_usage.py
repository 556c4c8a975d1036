"""Usage events: the gateway module counts every request that matched an API
(passed or refused, with its fault code) per throttle key and publishes the
counts to NATS subject apim.throttle.usage about every 100 ms (see
docs/ARCHITECTURE.md, "Usage events").

nginx with the module, a snapshot file and apim_event_hub_url pointing to a
nats-server started here; a raw-socket NATS subscriber reads the messages.
Needs APIM_NGINX_MODULE, /usr/sbin/nginx and nats-server.
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import gwtest


CTX = "/pizzashack"
VER = "1.0.0"
MANY = 250   # distinct resources: more than one message's 200 entries


class GatewayUsageTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_module()
        if not gwtest.HAVE_NATS:
            raise unittest.SkipTest("nats-server not installed")
        cls.tmp = tempfile.mkdtemp(prefix="apim-gw-usage-")
        os.chmod(cls.tmp, 0o755)
        cls.backend = gwtest.start_backend("production")
        cls.key, cls.jwk = gwtest.rsa_jwk(cls.tmp)
        cls.nats = gwtest.NatsServer().start()
        cls.sub = gwtest.NatsSub(cls.nats.port)
        ec = {"endpoint_type": "http",
              "production_endpoints": {
                  "url": "http://127.0.0.1:%d/pizza" % cls.backend.server_port}}

        def op(target, verb, auth="Application & Application User"):
            return {"target": target, "verb": verb, "authType": auth, "scopes": []}

        snap = {
            "seq": 1,
            "apis": [{"id": gwtest.API_ID, "name": "PizzaShack", "context": CTX,
                      "version": VER, "isDefaultVersion": True,
                      "lifeCycleStatus": "PUBLISHED", "endpointConfig": ec,
                      "apiThrottlingPolicy": "50KPerMin", "policies": ["Gold"],
                      "operations": [op("/menu", "GET"),
                                     op("/health", "GET", auth="None")]
                                    + [op("/r%d" % i, "GET") for i in range(MANY)]}],
            "applications": [{"id": gwtest.APP_ID, "name": "App1", "owner": "alice",
                              "tier": "20PerMin"}],
            "keyMappings": [{"applicationId": gwtest.APP_ID, "consumerKey": gwtest.PROD_KEY,
                             "keyType": "PRODUCTION"}],
            "subscriptions": [{"id": "s1", "apiId": gwtest.API_ID,
                               "applicationId": gwtest.APP_ID, "tier": "Gold",
                               "status": "UNBLOCKED"}],
            "revokedJwts": [],
            "keyManagers": [{"name": "Resident Key Manager", "issuer": gwtest.ISSUER,
                             "jwks": {"keys": [cls.jwk]}}],
        }
        cls.port, cls.nginx = gwtest.start_snapshot_gateway(
            cls.tmp, snap, "\n    apim_event_hub_url %s;\n    apim_gateway_label UsageTest;"
            % cls.nats.url)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "nginx", None) is not None and cls.nginx.poll() is None:
            gwtest.stop_nginx(cls.nginx)
        if getattr(cls, "sub", None) is not None:
            cls.sub.close()
        if getattr(cls, "nats", None) is not None:
            cls.nats.stop()
        gwtest.stop_backend(getattr(cls, "backend", None))
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def token(self):
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": gwtest.KID}
        claims = {"iss": gwtest.ISSUER, "sub": "alice", "azp": gwtest.PROD_KEY,
                  "client_id": gwtest.PROD_KEY, "scope": "default", "iat": now,
                  "exp": now + 600, "jti": "usage-%d" % now}
        signing_input = (gwtest.b64url(json.dumps(header).encode()) + "." +
                         gwtest.b64url(json.dumps(claims).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input.encode(), check=True,
                             capture_output=True).stdout
        return signing_input + "." + gwtest.b64url(sig)

    def call(self, path, token=None):
        h = {"Authorization": "Bearer " + token} if token else {}
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path, headers=h)
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def raw_calls(self, path, token, n):
        """n GETs over one keepalive connection: the bytes sent and received."""
        req = ("GET %s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n\r\n"
               % (path, token)).encode()
        sent = received = 0
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            f = s.makefile("rb")
            for _ in range(n):
                s.sendall(req)
                sent += len(req)
                status = f.readline()
                self.assertIn(b" 200 ", status)
                received += len(status)
                length = 0
                while True:
                    line = f.readline()
                    received += len(line)
                    if line in (b"\r\n", b""):
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                received += len(f.read(length))
        return sent, received

    def usage(self):
        with self.sub.cond:
            return [b for s, b in self.sub.msgs if s == "apim.throttle.usage"]

    def entries(self):
        out = []
        for m in self.usage():
            out.extend(m["entries"])
        return out

    def test_counts_per_throttle_key_with_faults(self):
        tok = self.token()
        sent, received = self.raw_calls("/pizzashack/1.0.0/menu", tok, 3)
        for _ in range(2):
            self.assertEqual(self.call("/pizzashack/1.0.0/health"), 200)
        self.assertEqual(self.call("/pizzashack/1.0.0/menu"), 401)   # 900902
        self.assertEqual(self.call("/nosuchapi/1/x"), 403)           # no API: not counted

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if sum(e["count"] for e in self.entries()) >= 6:
                break
            time.sleep(0.05)
        time.sleep(0.4)   # nothing more arrives
        entries = self.entries()
        self.assertEqual(sum(e["count"] for e in entries), 6, entries)

        def total(pred):
            return sum(e["count"] for e in entries if pred(e))

        api_key = "%s:%s" % (CTX, VER)
        self.assertTrue(all(e["apiKey"] == api_key for e in entries), entries)

        ok = [e for e in entries if e["appId"] == gwtest.APP_ID and e["faultCode"] == ""]
        self.assertEqual(sum(e["count"] for e in ok), 3, entries)
        e = ok[0]
        self.assertEqual(e["subscriptionKey"], "%s:%s:%s" % (gwtest.APP_ID, CTX, VER))
        self.assertEqual(e["appKey"], "%s:alice" % gwtest.APP_ID)
        self.assertEqual(e["resourceKey"], "%s/%s/menu:GET" % (CTX, VER))
        self.assertEqual(e["resource"], "GET /menu")
        self.assertEqual(e["keyType"], "PRODUCTION")
        self.assertEqual(e["subscriptionTier"], "Gold")
        self.assertEqual(e["appTier"], "20PerMin")
        self.assertEqual(e["apiTier"], "50KPerMin")
        # exactly what went over the wire, per request (one connection)
        self.assertEqual(sum(x["bytesIn"] for x in ok), sent)
        self.assertEqual(sum(x["bytesOut"] for x in ok), received)

        self.assertEqual(total(lambda e: e["resourceKey"] == "%s/%s/health:GET" % (CTX, VER)
                               and e["appKey"] == "" and e["faultCode"] == ""), 2)
        self.assertEqual(total(lambda e: e["faultCode"] == "900902"), 1)

        m = self.usage()[0]
        self.assertEqual(m["label"], "UsageTest")
        self.assertTrue(m["gatewayId"])
        self.assertGreater(m["pid"], 0)
        self.assertLessEqual(m["windowStart"], m["windowEnd"])
        self.assertEqual(m["dropped"], 0)

    def test_many_keys_are_split_into_messages(self):
        # 250 refused calls (no token) on 250 resources, pipelined on one
        # connection: nginx answers them itself, quickly
        reqs = b"".join(b"GET /pizzashack/1.0.0/r%d HTTP/1.1\r\nHost: gw\r\n\r\n" % i
                        for i in range(MANY))
        got = 0
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(reqs)
            f = s.makefile("rb")
            while got < MANY:
                line = f.readline()
                self.assertTrue(line, "connection closed after %d answers" % got)
                self.assertIn(b" 401 ", line)
                length = 0
                while True:
                    h = f.readline()
                    if h in (b"\r\n", b""):
                        break
                    if h.lower().startswith(b"content-length:"):
                        length = int(h.split(b":")[1])
                f.read(length)
                got += 1

        def mine():
            return [e for e in self.entries()
                    if e["resource"].startswith("GET /r") and e["faultCode"] == "900902"]

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(e["count"] for e in mine()) < MANY:
            time.sleep(0.05)
        time.sleep(0.3)
        self.assertEqual(sum(e["count"] for e in mine()), MANY)
        self.assertEqual(len({e["resource"] for e in mine()}), MANY)
        windows = {}
        for m in self.usage():
            self.assertLessEqual(len(m["entries"]), 200)
            windows.setdefault((m["pid"], m["windowStart"]), []).append(m)
        for msgs in windows.values():
            n = sum(len(m["entries"]) for m in msgs)
            self.assertEqual(len(msgs), (n + 199) // 200, [len(m["entries"]) for m in msgs])

    def test_zz_no_message_without_traffic(self):
        time.sleep(0.3)
        n = len(self.usage())
        time.sleep(0.5)
        self.assertEqual(len(self.usage()), n)

    def test_zzz_publishing_resumes_after_nats_restart(self):
        self.sub.close()
        self.nats.stop()
        self.assertEqual(self.call("/pizzashack/1.0.0/health"), 200)  # NATS down: no harm
        self.nats.start()
        self.__class__.sub = gwtest.NatsSub(self.nats.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.usage():
            self.assertEqual(self.call("/pizzashack/1.0.0/health"), 200)
            time.sleep(0.2)
        self.assertTrue(self.usage(), "no usage message after NATS came back")
        e = self.entries()[0]
        self.assertEqual(e["resourceKey"], "%s/%s/health:GET" % (CTX, VER))


if __name__ == "__main__":
    unittest.main()
