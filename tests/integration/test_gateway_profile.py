"""apimd --profile gateway: apimd renders nginx.conf, checks it with nginx -t,
runs nginx with ngx_http_apim_module as its child, reloads it on SIGHUP and
stops it on SIGTERM; the all-in-one profile starts the same gateway.

Needs nginx and the module next to apimd (the build tree) or
APIM_NGINX_MODULE; skipped otherwise.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import unittest

import apimtest
import gwtest
from gwtest import (GW_HTTP, GatewayProc, gateway_offset, get, module_path, pid_alive,
                    skip_without_gateway, wait_for)

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


class AllInOneGatewayTest(gwtest.AllInOne, unittest.TestCase):

    def test_prints_gateway_line_and_serves_faults(self):
        self.assertIn("gateway        http://127.0.0.1:%d/{context}/{version}" % self.gw_port,
                      self.srv.stdout())
        status, js, body = get(self.gw_port, "/nope/v1/x")
        self.assertEqual(status, 403, body)
        self.assertEqual(js["code"], "900906")

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
