"""apimd --profile gateway: apimd renders nginx.conf, checks it with nginx -t,
runs nginx with ngx_http_apim_module as its child, reloads it on SIGHUP and
stops it on SIGTERM; the all-in-one profile starts the same gateway.

Needs nginx and the module next to apimd (the build tree) or
APIM_NGINX_MODULE; skipped otherwise.
"""

import base64
import http.client
import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import apimtest
import test_publisher as pt

NGINX = "/usr/sbin/nginx"
GW_HTTP = 8280
DP = "/api/am/devportal/v3"
FORM = "application/x-www-form-urlencoded"
DEFAULT_ENV = [{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}]


def module_path():
    """The module apimd finds by itself (next to it), else APIM_NGINX_MODULE."""
    here = os.path.join(os.path.dirname(os.path.abspath(apimtest.apimd_path())),
                        "ngx_http_apim_module.so")
    if os.path.exists(here):
        return here
    env = os.environ.get("APIM_NGINX_MODULE", "")
    return env if env and os.path.exists(env) else None


def skip_without_gateway():
    if not os.path.exists(NGINX):
        raise unittest.SkipTest("nginx not installed")
    if module_path() is None:
        raise unittest.SkipTest("ngx_http_apim_module.so not built")


def gateway_offset():
    """A port offset with both 9443+off and 8280+off free."""
    for _ in range(50):
        off = apimtest.free_port_offset()
        if apimtest.port_is_free(GW_HTTP + off):
            return off
    raise RuntimeError("no free gateway port")


def get(port, path, headers=None, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        try:
            js = json.loads(body)
        except ValueError:
            js = None
        return r.status, js, body
    finally:
        conn.close()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(cond, timeout=10, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


class GatewayProc:
    """apimd --profile gateway in a fresh home."""

    def __init__(self, extra=None):
        self.dir = tempfile.mkdtemp(prefix="apimtest-gw-")
        self.home = os.path.join(self.dir, "home")
        self.off = gateway_offset()
        self.port = GW_HTTP + self.off
        conf = {"server": {"home": self.home, "host": "127.0.0.1",
                           "port_offset": self.off},
                "log": {"format": "text"},
                # a control plane nobody answers on
                "gateway": {"control_plane_url": "http://127.0.0.1:%d"
                                                 % apimtest.unused_port(),
                            "credential": "gw-profile-test-credential"}}
        self.conf = apimtest.merge_conf(conf, extra or {})
        self.conf_path = apimtest.write_conf(os.path.join(self.dir, "apim.conf"), self.conf)
        self.out = os.path.join(self.dir, "stdout")
        self.err = os.path.join(self.dir, "stderr")
        self.proc = None

    def start(self):
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(
                [apimtest.apimd_path(), "--profile", "gateway", "--config", self.conf_path],
                env=apimtest.clean_env(), cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=o, stderr=e, preexec_fn=apimtest._child_setup)
        # ready: apimd printed its banner (after nginx listens)
        if not wait_for(lambda: self.proc.poll() is not None or
                        "ready in" in self.stdout(), 20):
            raise AssertionError("gateway did not listen: %s" % self.stderr())
        if self.proc.poll() is not None:
            raise AssertionError("apimd exited %d: %s" % (self.proc.returncode, self.stderr()))
        return self

    def stdout(self):
        with open(self.out, errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.err, errors="replace") as f:
            return f.read()

    def nginx_pid(self):
        path = os.path.join(self.home, "gateway", "nginx.pid")
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def worker_pids(self, master):
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % p) as f:
                    fields = f.read().split(")")[-1].split()
                if int(fields[1]) == master and fields[0] != "Z":
                    out.append(int(p))
            except (OSError, IndexError, ValueError):
                pass
        return sorted(out)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        pid = self.nginx_pid()
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        apimtest.assert_no_sanitizer_report(self.stderr() if os.path.exists(self.err) else "")
        shutil.rmtree(self.dir, ignore_errors=True)


class GatewayProfileTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        skip_without_gateway()

    def start(self, extra=None):
        g = GatewayProc(extra)
        self.addCleanup(g.close)
        return g.start()

    def assert_900906(self, port):
        status, js, body = get(port, "/no-such-api/1.0.0/items")
        self.assertEqual(status, 403, body)
        self.assertEqual(js["code"], "900906", body)
        self.assertEqual(js["message"], "No matching resource found for given API Request")

    def test_serves_faults_without_a_control_plane_and_no_database(self):
        g = self.start({"database": {"apimgtdb_url": "sqlite:///nonexistent/dir/a.db"}})
        self.assert_900906(g.port)
        out = g.stdout()
        self.assertIn("(gateway) ready", out)
        self.assertIn("gateway        http://127.0.0.1:%d/{context}/{version}" % g.port, out)
        self.assertNotIn("publisher", out)
        # no control plane here: nothing on 9443+offset, no database files
        self.assertTrue(apimtest.port_is_free(9443 + g.off))
        self.assertFalse(os.path.exists(os.path.join(g.home, "apimgt.db")))
        self.assertIn("[database] settings are ignored", g.stderr())
        conf = open(os.path.join(g.home, "gateway", "nginx.conf")).read()
        self.assertIn("daemon off;", conf)
        self.assertIn("listen 127.0.0.1:%d;" % g.port, conf)
        # every API call goes to the module's balancer, connections reused
        self.assertIn("upstream apim_backend {\n        apim_balancer;\n"
                      "        keepalive 64;\n    }", conf)
        # no variables in proxy_pass: the module sets the backend's URI
        self.assertIn("apim_backend_uri on;\n"
                      "            proxy_pass https://apim_backend;\n"
                      "            proxy_redirect off;\n", conf)
        self.assertIn("proxy_next_upstream error timeout;", conf)
        self.assertIn("proxy_set_header Host $apim_upstream_host;", conf)
        self.assertNotIn("proxy_ssl_verify", conf)
        self.assertNotIn("apim_backend_jwt", conf)
        # the JSON access log names the API variables
        log = os.path.join(g.home, "gateway", "access.log")
        self.assertTrue(wait_for(lambda: os.path.exists(log) and os.path.getsize(log) > 0, 5))
        line = open(log).read().strip().splitlines()[-1]
        rec = json.loads(line)
        self.assertEqual(rec["status"], 403)
        self.assertEqual(rec["uri"], "/no-such-api/1.0.0/items")
        self.assertIn("api_name", rec)

    def test_backend_settings_are_rendered(self):
        ca = os.path.join(tempfile.mkdtemp(prefix="apimtest-gwca-"), "ca.pem")
        self.addCleanup(shutil.rmtree, os.path.dirname(ca), True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", ca + ".key", "-out", ca, "-days", "2",
                        "-subj", "/CN=test-ca"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        g = self.start({"gateway": {"backend_keepalive": 7, "backend_ca_file": ca,
                                    "backend_jwt": True}})
        self.assert_900906(g.port)
        conf = open(os.path.join(g.home, "gateway", "nginx.conf")).read()
        self.assertIn("        keepalive 7;\n", conf)
        self.assertIn("proxy_ssl_verify on;", conf)
        self.assertIn('proxy_ssl_trusted_certificate "%s";' % ca, conf)
        key = os.path.join(g.home, "gateway", "backend-jwt.pem")
        with open(module_path(), "rb") as f:
            knows_jwt = b"apim_backend_jwt_key\0" in f.read()
        if not knows_jwt:
            # a module without the backend JWT directives: a warning, no key
            self.assertIn("gateway.backend_jwt is on", g.stderr())
            self.assertNotIn("apim_backend_jwt", conf)
            return
        self.assertIn('apim_backend_jwt_key "%s";' % key, conf)
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        pem = open(key).read()
        self.assertIn("PRIVATE KEY", pem)
        # the same key after a restart (backends keep trusting it)
        g.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: g.stderr().count("reloads") >= 1, 10))
        self.assertEqual(open(key).read(), pem)

    def test_sighup_reloads_with_the_same_master(self):
        g = self.start()
        master = wait_for(g.nginx_pid, 5)
        self.assertTrue(master)
        workers = wait_for(lambda: g.worker_pids(master), 5)
        self.assertTrue(workers)
        g.proc.send_signal(signal.SIGHUP)
        # new workers replace the old ones under the same master
        self.assertTrue(wait_for(lambda: g.worker_pids(master) and
                                 not set(g.worker_pids(master)) & set(workers), 10),
                        "workers were not replaced: %s -> %s" % (workers,
                                                                 g.worker_pids(master)))
        self.assertEqual(g.nginx_pid(), master)
        self.assertIsNone(g.proc.poll())
        self.assert_900906(g.port)
        self.assertIn("reloads", g.stderr())

    def test_sigterm_stops_nginx_and_exits_0(self):
        g = self.start()
        master = wait_for(g.nginx_pid, 5)
        workers = wait_for(lambda: g.worker_pids(master), 5)
        g.proc.send_signal(signal.SIGTERM)
        self.assertEqual(g.proc.wait(20), 0, g.stderr())
        self.assertFalse(pid_alive(master))
        for w in workers:
            self.assertFalse(pid_alive(w), "nginx worker %d left behind" % w)
        self.assertTrue(apimtest.port_is_free(g.port))

    def test_nginx_dying_stops_apimd_non_zero(self):
        g = self.start()
        master = wait_for(g.nginx_pid, 5)
        os.kill(master, signal.SIGKILL)
        try:
            rc = g.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.fail("apimd still runs after its nginx died")
        self.assertNotEqual(rc, 0)
        self.assertIn("exited unexpectedly", g.stderr())

    def run_bad(self, gateway_conf):
        g = GatewayProc({"gateway": gateway_conf})
        self.addCleanup(g.close)
        r = apimtest.run_apimd(["--profile", "gateway", "--config", g.conf_path], timeout=30)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("ready in", r.stdout)
        self.assertTrue(apimtest.port_is_free(g.port))
        return r

    def test_missing_nginx_binary_is_a_clear_error(self):
        r = self.run_bad({"nginx_binary": "/nonexistent/sbin/nginx"})
        self.assertIn("/nonexistent/sbin/nginx", r.stderr)
        self.assertIn("No such file or directory", r.stderr)
        self.assertIn("gateway.nginx_binary", r.stderr)

    def test_module_nginx_rejects_shows_nginx_error(self):
        bogus = os.path.join(tempfile.mkdtemp(prefix="apimtest-gwmod-"), "bogus.so")
        self.addCleanup(shutil.rmtree, os.path.dirname(bogus), True)
        with open(bogus, "w") as f:
            f.write("not a shared object\n")
        r = self.run_bad({"module_path": bogus})
        self.assertIn("nginx rejects the gateway configuration", r.stderr)
        self.assertIn("[emerg]", r.stderr)
        self.assertIn(bogus, r.stderr)

    def test_port_in_use_is_a_clear_error(self):
        g = GatewayProc()
        self.addCleanup(g.close)
        import socket
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", g.port))
        blocker.listen(1)
        self.addCleanup(blocker.close)
        r = apimtest.run_apimd(["--profile", "gateway", "--config", g.conf_path], timeout=30)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("ready in", r.stdout)
        self.assertIn("nginx exited at start", r.stderr)
        self.assertIn("Address already in use", r.stderr)

    def test_missing_module_path(self):
        r = self.run_bad({"module_path": "/nonexistent/ngx_http_apim_module.so"})
        self.assertIn("gateway.module_path", r.stderr)


class Backend(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        out = json.dumps({"path": self.path,
                          "backend": getattr(self.server, "label", ""),
                          "authorization": self.headers.get("Authorization"),
                          "host": self.headers.get("Host"),
                          "x-forwarded-for": self.headers.get("X-Forwarded-For"),
                          "x-forwarded-proto": self.headers.get("X-Forwarded-Proto")}
                         ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


class AllInOneGatewayTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        skip_without_gateway()
        cls.srv = apimtest.ApimServer()
        cls.srv.prepare()
        # the harness checks 9443+offset only: make sure 8280+offset is free too
        off = gateway_offset()
        cls.srv._write_conf(off)
        cls.srv.start()
        cls.gw_port = GW_HTTP + off

    @classmethod
    def tearDownClass(cls):
        srv = getattr(cls, "srv", None)
        if srv is not None:
            srv.stop()

    def test_prints_gateway_line_and_serves_faults(self):
        self.assertIn("gateway        http://127.0.0.1:%d/{context}/{version}" % self.gw_port,
                      self.srv.stdout())
        status, js, body = get(self.gw_port, "/nope/v1/x")
        self.assertEqual(status, 403, body)
        self.assertEqual(js["code"], "900906")

    def start_backend(self, label="be"):
        backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
        backend.label = label
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        self.addCleanup(backend.server_close)
        self.addCleanup(backend.shutdown)
        return backend

    def deploy_subscribe_token(self, endpoint_config, prefix):
        """An API with endpoint_config, deployed, published, subscribed:
        (its name, an access token)."""
        c = self.srv.client()
        name = pt.uniq(prefix)
        api = pt.create_api(self, c, name=name, policies=["Unlimited"],
                            endpointConfig=endpoint_config)
        r = c.post(pt.APIS + "/%s/revisions" % api["id"], json={"description": "r1"})
        self.assertEqual(r.status, 201, r)
        r = c.post(pt.APIS + "/%s/deploy-revision" % api["id"],
                   query={"revisionId": r.json["id"]}, json=DEFAULT_ENV)
        self.assertEqual(r.status, 201, r)
        r = c.post(pt.PUB + "/apis/change-lifecycle",
                   query={"apiId": api["id"], "action": "Publish"})
        self.assertEqual(r.status, 200, r)
        r = c.post(DP + "/applications", json={"name": pt.uniq("GwApp"),
                                               "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r)
        app = r.json
        r = c.post(DP + "/subscriptions", json={"applicationId": app["applicationId"],
                                                "apiId": api["id"],
                                                "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r)
        r = c.post(DP + "/applications/%s/generate-keys" % app["applicationId"], json={
            "keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"],
            "callbackUrl": "", "scopes": [], "validityTime": 3600})
        self.assertEqual(r.status, 200, r)
        keys = r.json
        r = self.srv.client(None).post(
            "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
            headers={"Authorization": basic(keys["consumerKey"], keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)
        return name, r.json["access_token"]

    def test_load_balanced_and_failover_endpoints_from_the_publisher(self):
        a = self.start_backend("a")
        b = self.start_backend("b")
        down = apimtest.unused_port()
        name, token = self.deploy_subscribe_token({
            "endpoint_type": "load_balance",
            "production_endpoints": [
                {"url": "http://127.0.0.1:%d/lb" % a.server_port},
                {"url": "http://127.0.0.1:%d/lb" % b.server_port}]}, "GwLb")
        path = "/%s/1.0.0/items" % name.lower()
        auth = {"Authorization": "Bearer " + token}
        self.assertTrue(wait_for(lambda: get(self.gw_port, path, auth)[0] == 200, 15, 0.1))
        seen = [get(self.gw_port, path, auth)[1]["backend"] for _ in range(4)]
        self.assertEqual(sorted(set(seen)), ["a", "b"], seen)

        name, token = self.deploy_subscribe_token({
            "endpoint_type": "failover",
            "production_endpoints": {"url": "http://127.0.0.1:%d/fo" % down},
            "production_failovers": [{"url": "http://127.0.0.1:%d/fo" % b.server_port,
                                      "config": {"actionDuration": "5000"}}]}, "GwFo")
        path = "/%s/1.0.0/items" % name.lower()
        auth = {"Authorization": "Bearer " + token}
        self.assertTrue(wait_for(lambda: get(self.gw_port, path, auth)[0] == 200, 15, 0.1))
        status, js, body = get(self.gw_port, path, auth)
        self.assertEqual(status, 200, body)
        self.assertEqual(js["backend"], "b")
        self.assertEqual(js["path"], "/fo/items")

    def test_deployed_api_is_callable_through_the_gateway(self):
        backend = self.start_backend()
        name, token = self.deploy_subscribe_token({
            "endpoint_type": "http",
            "production_endpoints": {"url": "http://127.0.0.1:%d/be"
                                            % backend.server_port}}, "GwApi")
        path = "/%s/1.0.0/items" % name.lower()
        last = {}

        def call():
            last["r"] = get(self.gw_port, path, {"Authorization": "Bearer " + token})
            return last["r"][0] == 200

        self.assertTrue(wait_for(call, 15, 0.1), "last answer: %r" % (last.get("r"),))
        status, js, body = last["r"]
        self.assertEqual(js["path"], "/be/items")
        self.assertIsNone(js["authorization"])  # the client's token is not forwarded
        self.assertEqual(js["host"], "127.0.0.1:%d" % backend.server_port)
        self.assertEqual(js["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(js["x-forwarded-proto"], "http")


def proc_uid(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


@unittest.skipUnless(os.geteuid() == 0, "needs root (nginx workers drop to another user)")
class GatewayWorkersAsNobodyTest(unittest.TestCase):
    """apimd as root, gateway.user = nobody: the workers run as nobody and
    still write the snapshot cache."""

    def test_workers_as_nobody_write_the_cache(self):
        skip_without_gateway()
        import pwd
        nobody = pwd.getpwnam("nobody").pw_uid
        srv = apimtest.ApimServer(conf={"gateway": {"user": "nobody"}})
        srv.prepare()
        self.addCleanup(srv.stop)
        os.chmod(srv.home, 0o711)   # searchable (not readable) for the workers
        off = gateway_offset()
        srv._write_conf(off)
        srv.start()
        port = GW_HTTP + off
        gwdir = os.path.join(srv.home, "gateway")
        self.assertIn("user nobody ", open(os.path.join(gwdir, "nginx.conf")).read())
        master = wait_for(lambda: pid_alive_pidfile(gwdir), 10)
        self.assertTrue(master)
        workers = wait_for(lambda: GatewayProc.worker_pids(None, master), 10)
        self.assertTrue(workers)
        for w in workers:
            self.assertEqual(proc_uid(w), nobody)
        cache = os.path.join(gwdir, "cache", "snapshot.json")
        self.assertTrue(wait_for(lambda: os.path.exists(cache), 10),
                        "the workers did not write %s" % cache)
        self.assertEqual(os.stat(cache).st_uid, nobody)
        status, js, body = get(port, "/nope/v1/x")
        self.assertEqual(status, 403, body)
        self.assertNotIn("cannot reach", srv.stderr_this_run())

    def test_unreachable_cache_is_reported(self):
        skip_without_gateway()
        g = GatewayProc({"gateway": {"user": "nobody"}})
        self.addCleanup(g.close)
        os.chmod(g.dir, 0o700)
        g.start()
        self.assertIn("the nginx workers (user nobody) cannot reach", g.stderr())
        self.assertIn("gateway.user", g.stderr())


def pid_alive_pidfile(gwdir):
    try:
        with open(os.path.join(gwdir, "nginx.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


if __name__ == "__main__":
    unittest.main()
