#!/usr/bin/env python3
"""Runs the integration tests (tests/integration/test_*.py) against one apimd.

    python3 tests/integration/run.py --apimd build/apimd --db sqlite
    python3 tests/integration/run.py --apimd build/apimd --db postgresql -k test_ops
    python3 tests/integration/run.py --apimd build/apimd --db sqlite -k '*lockout*'

For --db postgresql a throwaway PostgreSQL 15 cluster is started on a free
port in a temporary folder and removed at the end. Each test module runs in
its own Python process (so every module gets its own shared server), up to
--jobs at a time. The last line is "integration (<db>): N passed, M failed";
the exit status is non-zero when anything failed or no test ran.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PG_BIN = os.environ.get("APIM_TEST_PG_BIN", "/usr/lib/postgresql/15/bin")


# -- PostgreSQL ---------------------------------------------------------------

class ThrowawayPostgres:
    """A PostgreSQL cluster in a temp folder, trust auth, 127.0.0.1 only.

    PostgreSQL refuses to run as root: as root the cluster belongs to the
    `postgres` user and every command runs through runuser."""

    def __init__(self):
        self.dir = None
        self.data = None
        self.port = None
        self.started = False
        self.as_root = os.geteuid() == 0

    def _cmd(self, argv):
        if self.as_root:
            return ["runuser", "-u", "postgres", "--"] + argv
        return argv

    def _run(self, argv, timeout=120):
        r = subprocess.run(self._cmd(argv), cwd=self.dir, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            log = ""
            logf = os.path.join(self.dir, "postgres.log")
            if os.path.exists(logf):
                with open(logf, errors="replace") as f:
                    log = "".join(f.readlines()[-30:])
            raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(argv), r.returncode,
                                                         r.stdout, log))
        return r.stdout

    def start(self):
        if not os.path.exists(os.path.join(PG_BIN, "pg_ctl")):
            raise RuntimeError("PostgreSQL 15 not found in %s (set APIM_TEST_PG_BIN)" % PG_BIN)
        self.dir = tempfile.mkdtemp(prefix="apimpg-")
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self._run([os.path.join(PG_BIN, "initdb"), "--no-sync", "-A", "trust", "-U", "postgres",
                   "-E", "UTF8", "--locale=C", "-D", self.data])
        for attempt in range(5):
            self.port = free_port()
            opts = ("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off "
                    "-c max_connections=300" % (self.port, self.dir))
            try:
                self._run([os.path.join(PG_BIN, "pg_ctl"), "-w", "-t", "60", "-D", self.data,
                           "-l", os.path.join(self.dir, "postgres.log"), "-o", opts, "start"])
                self.started = True
                break
            except RuntimeError:
                if attempt == 4:
                    raise
                time.sleep(0.2)  # port taken in between: try another one
        return "postgresql://postgres@127.0.0.1:%d/postgres" % self.port

    def stop(self):
        try:
            if self.started:
                self._run([os.path.join(PG_BIN, "pg_ctl"), "-w", "-D", self.data, "-m", "fast",
                           "stop"], timeout=60)
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            sys.stderr.write("run.py: stopping PostgreSQL: %s\n" % e)
            try:
                self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate",
                           "stop"], timeout=30)
            except Exception:
                pass
        finally:
            self.started = False
            if self.dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- one module, in a child process ----------------------------------------------

def child_main(module, result_path, pattern):
    """Runs one test module with unittest (verbosity 2) and writes the counts
    as JSON to result_path. Shared servers are stopped here, after the tests,
    so that a bad exit or a sanitizer report counts as a failure."""
    sys.path.insert(0, HERE)
    import apimtest  # noqa: E402 - after sys.path

    counts = {"module": module, "run": 0, "passed": 0, "failed": 0, "skipped": 0,
              "problems": []}
    loader = unittest.TestLoader()
    if pattern:
        loader.testNamePatterns = [pattern if "*" in pattern else "*%s*" % pattern]
    ok = True
    try:
        mod = __import__(module)
        suite = loader.loadTestsFromModule(mod)
        runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2)
        res = runner.run(suite)
        bad = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
        counts["run"] = res.testsRun
        counts["skipped"] = len(res.skipped)
        counts["failed"] = bad
        counts["passed"] = res.testsRun - bad - len(res.skipped) - len(res.expectedFailures)
        ok = res.wasSuccessful()
    except Exception as e:  # noqa: BLE001 - an import error is a failed module
        import traceback
        traceback.print_exc(file=sys.stdout)
        counts["failed"] += 1
        counts["problems"].append("%s: %s" % (module, e))
        ok = False
    problems = apimtest.stop_all()
    if problems:
        for p in problems:
            print("FAIL: server shutdown in %s: %s" % (module, p))
        counts["failed"] += len(problems)
        counts["problems"] += problems
        ok = False
    for h in apimtest.kept_homes(clear=True):
        print("kept server home: %s" % h)
    sys.stdout.flush()
    with open(result_path, "w") as f:
        json.dump(counts, f)
    # The servers are stopped already: nothing left for apimtest's atexit.
    return 0 if ok else 1


# -- parent ---------------------------------------------------------------------

_print_lock = threading.Lock()
_children = set()


def run_module(module, env, pattern, timeout):
    fd, result_path = tempfile.mkstemp(prefix="apimtest-%s-" % module, suffix=".json")
    os.close(fd)
    argv = [sys.executable, os.path.abspath(__file__), "--child", module,
            "--result", result_path]
    if pattern:
        argv += ["-k", pattern]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    with _print_lock:
        _children.add(proc)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
        out, _ = proc.communicate()
    finally:
        with _print_lock:
            _children.discard(proc)
    kill_group(proc)  # apimd processes a crashed test may have left behind
    counts = None
    try:
        with open(result_path) as f:
            counts = json.load(f)
    except (OSError, ValueError):
        pass
    os.unlink(result_path)
    if counts is None:
        counts = {"module": module, "run": 0, "passed": 0, "failed": 1, "skipped": 0,
                  "problems": []}
        counts["problems"].append("timed out after %d s" % timeout if timed_out else
                                  "test process exited with %s without results" %
                                  proc.returncode)
    elif timed_out:
        counts["failed"] += 1
        counts["problems"].append("timed out after %d s" % timeout)
    counts["seconds"] = time.monotonic() - started
    with _print_lock:
        sys.stdout.write("\n===== %s (%.1f s) =====\n" % (module, counts["seconds"]))
        sys.stdout.write(out.decode("utf-8", errors="replace"))
        for p in counts["problems"]:
            sys.stdout.write("FAIL: %s: %s\n" % (module, p))
        sys.stdout.flush()
    return counts


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def discover():
    mods = sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(HERE, "test_*.py")))
    return mods


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apimd", help="path of the apimd binary under test")
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("-k", dest="pattern", default=None,
                    help="only tests whose module.Class.method matches (substring or "
                         "fnmatch pattern, as unittest -k)")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="test modules run at once (2)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per test module (600)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        return child_main(args.child, args.result, args.pattern)

    if not args.apimd:
        ap.error("--apimd is required")
    apimd = os.path.abspath(args.apimd)
    if not os.access(apimd, os.X_OK):
        print("run.py: %s is not an executable" % apimd, file=sys.stderr)
        print("integration (%s): 0 passed, 1 failed" % args.db)
        return 1

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    env = dict(os.environ)
    env.update({"APIMD": apimd, "APIM_TEST_DB": args.db, "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1"})
    env.pop("APIM_TEST_PG_URL", None)
    modules = discover()
    results = []
    pg = None
    interrupted = False
    try:
        if args.db == "postgresql":
            pg = ThrowawayPostgres()
            env["APIM_TEST_PG_URL"] = pg.start()
            print("run.py: PostgreSQL at %s" % env["APIM_TEST_PG_URL"], flush=True)
        ex = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs))
        try:
            futs = [ex.submit(run_module, m, env, args.pattern, args.timeout) for m in modules]
            for f in futs:
                results.append(f.result())
        finally:
            # On an interrupt: kill the running modules, do not wait for them.
            ex.shutdown(wait=False, cancel_futures=True)
    except KeyboardInterrupt as e:
        interrupted = True
        print("run.py: interrupted (%s)" % e, file=sys.stderr)
        with _print_lock:
            for p in list(_children):
                kill_group(p)
    except Exception as e:  # noqa: BLE001 - report and fail
        interrupted = True
        print("run.py: %s" % e, file=sys.stderr)
    finally:
        if pg is not None:
            pg.stop()

    passed = sum(r["passed"] for r in results)
    failed = sum(r["failed"] for r in results) + (1 if interrupted else 0)
    skipped = sum(r["skipped"] for r in results)
    ran = sum(r["run"] for r in results)
    print()
    for r in results:
        mark = "ok  " if r["failed"] == 0 else "FAIL"
        print("  %s %-28s %3d passed %3d failed %3d skipped  %6.1f s" % (
            mark, r["module"], r["passed"], r["failed"], r["skipped"], r.get("seconds", 0)))
    if skipped:
        print("(%d skipped)" % skipped)
    if ran == 0 and not failed:
        print("run.py: no test ran%s" % (" (pattern %r)" % args.pattern if args.pattern else ""))
    print("integration (%s): %d passed, %d failed" % (args.db, passed, failed), flush=True)
    return 0 if failed == 0 and ran > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
