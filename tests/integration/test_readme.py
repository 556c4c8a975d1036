"""The README's walkthrough, run exactly as written (only the port and the
password file are pointed at the test server), so that the README stays true."""
import os
import re
import signal
import subprocess
import unittest

import apimtest

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "..", "README.md")


WALKTHROUGH = ("## Your first API", "## Tokens instead of passwords", "## Consume the API")


def walkthrough_script():
    """The sh code blocks of the walkthrough sections, in order."""
    text = open(README, encoding="utf-8").read()
    blocks = []
    for title in WALKTHROUGH:
        section = text.split(title + "\n", 1)[1].split("\n## ", 1)[0]
        blocks += re.findall(r"```sh\n(.*?)```", section, re.S)
    return "\n".join(blocks)


def gateway_log(home):
    """The gateway's nginx error log (what a failed call leaves behind)."""
    for root, _dirs, files in os.walk(home):
        if "error.log" in files:
            with open(os.path.join(root, "error.log"), errors="replace") as f:
                return f.read()[-6000:]
    return "(no error.log under %s)" % home


class ReadmeWalkthroughTest(unittest.TestCase):
    def test_walkthrough_publishes_an_api(self):
        srv = apimtest.ApimServer()
        srv.start()
        try:
            port = srv.base_url.rsplit(":", 1)[1]
            script = walkthrough_script()
            self.assertIn("deploy-revision", script)
            offset = int(port) - 9443
            script = script.replace("localhost:9443", "127.0.0.1:" + port)
            script = script.replace("localhost:8280", "127.0.0.1:%d" % (8280 + offset))
            backend = apimtest.unused_port()
            for form in ("127.0.0.1:8080", "http.server 8080"):
                script = script.replace(form, form.replace("8080", str(backend)))
            self.assertNotIn("8080", script)
            script = script.replace("/tmp/pizza", os.path.join(srv.home, "pizza"))
            script = script.replace("var/admin-password",
                                    os.path.join(srv.home, "admin-password"))
            p = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=apimtest.clean_env(), start_new_session=True)
            try:
                out, err = p.communicate(timeout=120)
            finally:
                try:
                    os.killpg(p.pid, signal.SIGTERM)   # the backend, if still there
                except ProcessLookupError:
                    pass
            r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
            why = "%s%s\n--- gateway error.log ---\n%s" % (r.stdout, r.stderr,
                                                       gateway_log(srv.home))
            self.assertEqual(r.returncode, 0, why)
            lines = r.stdout.splitlines()
            self.assertRegex(lines[0], r"^API [0-9a-f-]{36}$", why)
            self.assertIn("PUBLISHED", lines, why)
            self.assertIn('"name":"Default"', r.stdout, why)
            self.assertIn('"policyName":"Platinum"', r.stdout, why)
            self.assertIn('"conditionType":"IP"', r.stdout, why)
            # alice (Internal/creator) sees the one API, so does the token.
            self.assertEqual(lines[-6:-4], ["1", "1"], why)
            # bob signed up, subscribed and got an application token.
            self.assertIn('"username":"bob"', r.stdout, why)
            self.assertEqual(lines[-3], "UNBLOCKED", why)
            # The gateway takes the token to the backend, and refuses no token.
            self.assertEqual(lines[-2], '["Margherita", "Marinara"]', why)
            self.assertIn('"code":"900902"', lines[-1], why)
            api = srv.client().get("/api/am/publisher/v4/apis",
                                   query={"query": "name:PizzaShack"}).json
            self.assertEqual(api["count"], 1)
            self.assertEqual(api["list"][0]["lifeCycleStatus"], "PUBLISHED")
        finally:
            srv.stop()


if __name__ == "__main__":
    unittest.main()
