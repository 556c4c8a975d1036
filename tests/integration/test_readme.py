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
            script = script.replace("8080", str(backend))
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
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            lines = r.stdout.splitlines()
            self.assertRegex(lines[0], r"^API [0-9a-f-]{36}$")
            self.assertIn("PUBLISHED", lines)
            self.assertIn('"name":"Default"', r.stdout)
            self.assertIn('"policyName":"Platinum"', r.stdout)
            self.assertIn('"conditionType":"IP"', r.stdout)
            # alice (Internal/creator) sees the one API, so does the token.
            self.assertEqual(lines[-6:-4], ["1", "1"], r.stdout)
            # bob signed up, subscribed and got an application token.
            self.assertIn('"username":"bob"', r.stdout)
            self.assertEqual(lines[-3], "UNBLOCKED", r.stdout)
            # The gateway takes the token to the backend, and refuses no token.
            self.assertEqual(lines[-2], '["Margherita", "Marinara"]', r.stdout + r.stderr)
            self.assertIn('"code":"900902"', lines[-1])
            api = srv.client().get("/api/am/publisher/v4/apis",
                                   query={"query": "name:PizzaShack"}).json
            self.assertEqual(api["count"], 1)
            self.assertEqual(api["list"][0]["lifeCycleStatus"], "PUBLISHED")
        finally:
            srv.stop()


if __name__ == "__main__":
    unittest.main()
