"""The gateway's nginx module (ngx_http_apim_module.so) on Debian's nginx:
routing, JWT checks, subscriptions, scopes, fault bodies and hot reload of
the snapshot file, with a real nginx and a small backend started here.

Needs APIM_NGINX_MODULE (set by CMake's integration test definition) and
/usr/sbin/nginx; skipped otherwise. Does not use apimd: the snapshot file
has the shape the control plane's internal data API will serve.
"""

import http.client
import json
import os
import signal
import threading
import time
import unittest

import gwtest
from gwtest import APP_ID, APP2_ID, API_ID, MODULE, NGINX, OTHER_KEY, SAND_KEY


class GatewayModuleTest(gwtest.PizzaGateway, unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.setup_pizza("apim-gw-")
        cls.snapshot = cls.base_snapshot()
        cls.write_snapshot(cls.snapshot)
        cls.port = gwtest.free_port()
        cls.start_nginx()

    @classmethod
    def start_nginx(cls):
        cls.nginx = gwtest.start_nginx(cls.tmp, cls.port, gwtest.nginx_conf(cls.tmp, """
    apim_snapshot_file %(dir)s/snapshot.json;
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            apim_gateway on;
            proxy_set_header X-Apim-Api-Id $apim_api_id;
            proxy_set_header X-Apim-App-Id $apim_app_id;
            proxy_set_header X-Apim-Key-Type $apim_key_type;
            proxy_pass $apim_backend$apim_rest$is_args$args;
        }
        location /plain/ {
            proxy_pass http://127.0.0.1:%(prod)d/;
        }
    }""" % {"dir": cls.tmp, "port": cls.port, "prod": cls.prod.server_port}))

    # -- tests ---------------------------------------------------------------

    def test_valid_token_reaches_backend_without_authorization(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/1.0.0/menu?size=large",
                                            self.token()))
        self.assertEqual(doc["path"], "/pizza-backend/menu?size=large")
        self.assertNotIn("authorization", doc["headers"])
        self.assertEqual(doc["headers"]["x-apim-api-id"], API_ID)
        self.assertEqual(doc["headers"]["x-apim-app-id"], APP_ID)
        self.assertEqual(doc["headers"]["x-apim-key-type"], "PRODUCTION")

    def test_post_body_is_proxied(self):
        doc = self.assert_backend(self.call("POST", "/pizzashack/1.0.0/order",
                                            self.token(scope="default order:write"),
                                            headers={"Content-Type": "application/json"},
                                            body=b'{"pizza":"margherita"}'))
        self.assertEqual(doc["method"], "POST")
        self.assertEqual(doc["body"], '{"pizza":"margherita"}')

    def test_sandbox_key_reaches_sandbox_endpoint(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/1.0.0/menu",
                                            self.token(client=SAND_KEY)), "sandbox")
        self.assertEqual(doc["path"], "/pizza-sandbox/menu")
        self.assertEqual(doc["headers"]["x-apim-key-type"], "SANDBOX")

    def test_default_version_on_unversioned_context(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/menu", self.token()))
        self.assertEqual(doc["path"], "/pizza-backend/menu")
        self.assertEqual(doc["headers"]["x-apim-api-id"], API_ID)

    def test_other_version_is_a_different_api(self):
        # version 2.0.0 exists but App1 is not subscribed to it
        self.assert_fault(self.call("GET", "/pizzashack/2.0.0/menu", self.token()),
                          403, "900908")
        # and it has no /order resource
        self.assert_fault(self.call("POST", "/pizzashack/2.0.0/order", self.token()),
                          403, "900906")

    def test_template_with_param(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/1.0.0/order/42",
                                            self.token()))
        self.assertEqual(doc["path"], "/pizza-backend/order/42")
        # {param} is exactly one segment
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/order/42/extra",
                                    self.token()), 403, "900906")
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/order/", self.token()),
                          403, "900906")

    def test_wildcard_and_longest_match(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/1.0.0/files/a/b.txt",
                                            self.token()))
        self.assertEqual(doc["path"], "/pizza-backend/files/a/b.txt")
        # /files/* needs a token ...
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/files/other"),
                          401, "900902")
        # ... but the more specific /files/special is authType None
        self.assert_backend(self.call("GET", "/pizzashack/1.0.0/files/special"))

    def test_verb_mismatch_is_900906(self):
        doc = self.assert_fault(self.call("PUT", "/pizzashack/1.0.0/menu", self.token()),
                                403, "900906")
        self.assertEqual(doc["message"], "No matching resource found for given API Request")

    def test_unknown_api_and_resource(self):
        self.assert_fault(self.call("GET", "/nosuchapi/1.0.0/menu", self.token()),
                          403, "900906")
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/nosuch", self.token()),
                          403, "900906")
        self.assert_fault(self.call("GET", "/pizzashack/9.9.9/menu", self.token()),
                          403, "900906")

    def test_auth_none_passes_without_token(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/1.0.0/health"))
        self.assertEqual(doc["path"], "/pizza-backend/health")

    def test_missing_credentials_900902(self):
        st, headers, _ = self.call("GET", "/pizzashack/1.0.0/menu")
        self.assert_fault((st, headers, _), 401, "900902")
        self.assertIn("bearer", headers.get("www-authenticate", "").lower())
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    headers={"Authorization": "Basic YWxpY2U6eA=="}),
                          401, "900902")

    def test_invalid_credentials_900901(self):
        cases = {
            "garbage": "not.a.jwt",
            "bad signature": self.token(tamper=True),
            "expired": self.token(exp_in=-120),
            "not yet valid": self.token(nbf_in=600),
            "unknown kid": self.token(kid="other-kid"),
            "wrong issuer": self.token(iss="https://evil.example/token"),
            "revoked jti": self.token(jti="revoked-jti-1"),
        }
        for what, tok in cases.items():
            with self.subTest(what):
                doc = self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu", tok),
                                        401, "900901")
                self.assertEqual(doc["message"], "Invalid Credentials")

    def test_es256_token(self):
        self.assert_backend(self.call("GET", "/pizzashack/1.0.0/menu",
                                      self.token(ec=True)))
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    self.token(ec=True, tamper=True)), 401, "900901")
        # an RS256 header on the EC key (algorithm confusion) is refused
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    self.token(ec=True, alg="RS256")), 401, "900901")

    def test_leeway_of_30_seconds(self):
        # expired 10 s ago and valid from 10 s on: inside the leeway
        self.assert_backend(self.call("GET", "/pizzashack/1.0.0/menu",
                                      self.token(exp_in=-10, nbf_in=10)))

    def test_api_blocked_700700(self):
        self.assert_fault(self.call("GET", "/old/v1/anything", self.token()),
                          503, "700700")

    def test_not_subscribed_900908(self):
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    self.token(client=OTHER_KEY)), 403, "900908")
        # a client id without any key mapping
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    self.token(client="unknownClient")), 403, "900908")

    def test_scope_900910(self):
        self.assert_fault(self.call("POST", "/pizzashack/1.0.0/order",
                                    self.token(scope="default")), 403, "900910")
        self.assert_fault(self.call("DELETE", "/pizzashack/1.0.0/order/7",
                                    self.token(scope="order:write")), 403, "900910")
        self.assert_backend(self.call("DELETE", "/pizzashack/1.0.0/order/7",
                                      self.token(scope="order:admin default")))

    def test_api_root_and_host_only_backend(self):
        # endpointConfig given as a JSON string, as the reference stores it
        doc = self.assert_backend(self.call("GET", "/root/v1"))
        self.assertEqual(doc["path"], "/")
        doc = self.assert_backend(self.call("GET", "/root/v1/a/b%20c?q=1"))
        self.assertEqual(doc["path"], "/a/b%20c?q=1")

    def test_keepalive_connection_mixes_faults_and_calls(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            tok = self.token()
            for i in range(3):
                c.request("POST", "/pizzashack/1.0.0/order", body=b"x" * 5000,
                          headers={"Authorization": "Bearer " + tok})
                r = c.getresponse()
                self.assertEqual(r.status, 403)
                self.assertEqual(json.loads(r.read())["code"], "900910")
                c.request("GET", "/pizzashack/1.0.0/menu",
                          headers={"Authorization": "Bearer " + tok})
                r = c.getresponse()
                self.assertEqual(r.status, 200)
                self.assertEqual(json.loads(r.read())["path"], "/pizza-backend/menu")
        finally:
            c.close()

    def test_plain_location_is_untouched(self):
        st, _, body = self.call("GET", "/plain/x")
        self.assertEqual(st, 200, body)

    def test_zy_requests_during_many_reloads(self):
        """Swapping the data under traffic never fails a request."""
        stop = threading.Event()

        def rewrite():
            i = 0
            while not stop.is_set():
                snap = json.loads(json.dumps(self.snapshot))
                snap["seq"] = 100 + i
                i += 1
                self.write_snapshot(snap)
                time.sleep(0.03)

        t = threading.Thread(target=rewrite)
        t.start()
        statuses = {}
        try:
            tok = self.token()
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            deadline = time.time() + 1.5
            while time.time() < deadline:
                c.request("GET", "/pizzashack/1.0.0/menu",
                          headers={"Authorization": "Bearer " + tok})
                r = c.getresponse()
                r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            c.close()
        finally:
            stop.set()
            t.join()
            self.write_snapshot(self.snapshot)
        self.assertEqual(list(statuses), [200], statuses)
        self.assertGreater(statuses[200], 20)
        self.assertNotIn("exited on signal", self.read_log("error.log"))

    def test_zz_reload_snapshot(self):
        """Subscription changes in the file apply within a second, no restart."""
        pid = self.read_log("nginx.pid").strip()
        snap = json.loads(json.dumps(self.snapshot))
        tok2 = self.token(client=OTHER_KEY)
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu", tok2), 403, "900908")

        snap["seq"] = 2
        snap["subscriptions"].append({"id": "s2", "apiId": API_ID,
                                      "applicationId": APP2_ID, "tier": "Gold",
                                      "status": "UNBLOCKED"})
        self.write_snapshot(snap)
        self.assert_backend(self.wait_for(lambda: self.call(
            "GET", "/pizzashack/1.0.0/menu", tok2), 200))

        # block it: 900907; production-only block: 900907 for production keys
        snap["seq"] = 3
        snap["subscriptions"][-1]["status"] = "BLOCKED"
        snap["subscriptions"][0]["status"] = "PROD_ONLY_BLOCKED"
        self.write_snapshot(snap)
        self.assert_fault(self.wait_for(lambda: self.call(
            "GET", "/pizzashack/1.0.0/menu", tok2), 401), 401, "900907")
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu", self.token()),
                          401, "900907")
        self.assert_backend(self.call("GET", "/pizzashack/1.0.0/menu",
                                      self.token(client=SAND_KEY)), "sandbox")

        # a broken file keeps the last good data
        with open(self.snapshot_path + ".tmp", "w") as f:
            f.write("{not json")
        os.replace(self.snapshot_path + ".tmp", self.snapshot_path)
        time.sleep(0.6)
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu", tok2), 401, "900907")

        self.write_snapshot(self.snapshot)
        self.assert_fault(self.wait_for(lambda: self.call(
            "GET", "/pizzashack/1.0.0/menu", tok2), 403), 403, "900908")
        self.assertEqual(self.read_log("nginx.pid").strip(), pid)
        self.assertNotIn("exited on signal", self.read_log("error.log"))

    def wait_for(self, fn, status, timeout=1.0):
        deadline = time.time() + timeout
        while True:
            res = fn()
            if res[0] == status or time.time() > deadline:
                return res
            time.sleep(0.05)


class GatewayShutdownTest(unittest.TestCase):
    """Runs after GatewayModuleTest in the same module: its own nginx, a few
    requests, then SIGQUIT: no worker may have crashed."""

    def test_clean_shutdown(self):
        if not MODULE or not os.path.exists(MODULE) or not os.path.exists(NGINX):
            self.skipTest("APIM_NGINX_MODULE not built")
        cls = GatewayModuleTest
        try:
            cls.setUpClass()
            t = GatewayModuleTest("test_valid_token_reaches_backend_without_authorization")
            t.test_valid_token_reaches_backend_without_authorization()
            t.assert_fault(t.call("GET", "/pizzashack/1.0.0/menu"), 401, "900902")
            snap = json.loads(json.dumps(cls.snapshot))
            snap["seq"] = 9
            cls.write_snapshot(snap)
            time.sleep(0.5)
            cls.nginx.send_signal(signal.SIGQUIT)
            self.assertEqual(cls.nginx.wait(10), 0)
            log = cls.read_log("error.log")
            self.assertNotIn("exited on signal", log)
            self.assertNotRegex(log, r"\[(alert|emerg|crit)\]")
            self.assertIn("reloaded", log)
        finally:
            cls.tearDownClass()


if __name__ == "__main__":
    unittest.main()
