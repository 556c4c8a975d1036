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
import ctypes
import glob
import json
import os
import pwd
import shlex
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

    def __init__(self, parent=None):
        self.parent = parent
        self.pid = None
        self.dir = None
        self.data = None
        self.port = None
        self.opts = None
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

    def prepare(self):
        """Creates the (empty) cluster folder; start() fills and starts it."""
        if not os.path.exists(os.path.join(PG_BIN, "pg_ctl")):
            raise RuntimeError("PostgreSQL 15 not found in %s (set APIM_TEST_PG_BIN)" % PG_BIN)
        self.dir = tempfile.mkdtemp(prefix="pg-", dir=self.parent)
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "data")

    def start(self):
        if self.dir is None:
            self.prepare()
        self._run([os.path.join(PG_BIN, "initdb"), "--no-sync", "-A", "trust", "-U", "postgres",
                   "-E", "UTF8", "--locale=C", "-D", self.data])
        for attempt in range(5):
            self.port = free_port()
            self.opts = ("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
                         "-c synchronous_commit=off -c full_page_writes=off "
                         "-c max_connections=300" % (self.port, self.dir))
            try:
                self.ctl("start")
                self.started = True
                self.pid = self._postmaster_pid()
                break
            except RuntimeError:
                if attempt == 4:
                    raise
                time.sleep(0.2)  # port taken in between: try another one
        return "postgresql://postgres@127.0.0.1:%d/postgres" % self.port

    def ctl(self, action, mode=None, timeout=120):
        """pg_ctl action ("start", "stop", "restart") on the running
        cluster's data folder, port and options, waiting until it is done;
        mode: "smart", "fast" or "immediate" for stop and restart. For tests
        that take the database server away under apimd (on a cluster of
        their own: the one of run.py is shared by the modules)."""
        argv = [os.path.join(PG_BIN, "pg_ctl"), "-w", "-t", "60", "-D", self.data]
        if action in ("start", "restart"):
            argv += ["-l", os.path.join(self.dir, "postgres.log"), "-o", self.opts]
        if mode is not None:
            argv += ["-m", mode]
        out = self._run(argv + [action], timeout=timeout)
        if action in ("start", "restart"):
            self.pid = self._postmaster_pid()
        return out

    def _postmaster_pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def _kill_postmaster(self):
        """Last resort when pg_ctl cannot stop the cluster (e.g. its folder
        is gone): SIGQUIT (immediate shutdown) to the postmaster we started."""
        if not self.pid:
            return
        try:
            with open("/proc/%d/cmdline" % self.pid, "rb") as f:
                if self.data.encode() not in f.read():
                    return  # not our postmaster any more
            os.kill(self.pid, signal.SIGQUIT)
        except OSError:
            pass

    def watchdog_script(self):
        """Shell commands that stop the cluster at once (for the watchdog):
        pg_ctl, else SIGQUIT to the postmaster whose pid the watchdog read
        from postmaster.pid while waiting (into $pm)."""
        argv = self._cmd([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate",
                          "stop"])
        return ("%s >/dev/null 2>&1 || { [ -n \"$pm\" ] && grep -qaF -- %s /proc/$pm/cmdline "
                "&& kill -QUIT \"$pm\"; }; " % (" ".join(shlex.quote(a) for a in argv),
                                                 shlex.quote(self.data)))

    def pid_file(self):
        return os.path.join(self.data, "postmaster.pid")

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
                self._kill_postmaster()
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

class CountingResult(unittest.TextTestResult):
    """Counts tests, not outcomes: a test with several failing subtests is
    one failed test; a failing setUpClass/setUpModule counts as one."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.run_ids, self.failed_ids, self.skipped_ids = set(), set(), set()

    def startTest(self, test):
        super().startTest(test)
        self.run_ids.add(test.id())

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.failed_ids.add(test.id())

    def addError(self, test, err):
        super().addError(test, err)
        self.failed_ids.add(test.id())

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.failed_ids.add(test.id())

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.failed_ids.add(test.id())

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skipped_ids.add(test.id())


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
        runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2,
                                         resultclass=CountingResult)
        res = runner.run(suite)
        counts["run"] = len(res.run_ids)
        counts["skipped"] = len(res.skipped_ids - res.failed_ids)
        counts["failed"] = len(res.failed_ids)
        counts["passed"] = len(res.run_ids - res.failed_ids - res.skipped_ids)
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
        counts["problems"] += ["server shutdown: " + p.splitlines()[0] for p in problems]
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
    fd, result_path = tempfile.mkstemp(prefix="result-%s-" % module, suffix=".json",
                                       dir=env.get("TMPDIR"))
    os.close(fd)
    argv = [sys.executable, os.path.abspath(__file__), "--child", module,
            "--result", result_path]
    if pattern:
        argv += ["-k", pattern]
    started = time.monotonic()
    # Own process group (a timeout kills the module with its servers), and
    # killed by the kernel if this runner dies (the thread that forks it
    # waits for it, so it never outlives its thread otherwise).
    proc = subprocess.Popen(argv, cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=die_with_parent)
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


def die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def discover():
    mods = sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(HERE, "test_*.py")))
    return mods


def start_watchdog(run_root, pg):
    """A detached process that cleans up after this runner if it is killed
    outright (SIGKILL, a CI timeout): stops the PostgreSQL cluster and
    removes the run folder once this process is gone. Killed by the runner
    when it ends normally."""
    if pg is not None:
        # The latest pid in postmaster.pid (initdb's bootstrap backend
        # writes one too), kept if the file disappears.
        remember = ('p=$(head -n 1 %s 2>/dev/null) && [ -n "$p" ] && pm=$p; ' %
                    shlex.quote(pg.pid_file()))
        stop = pg.watchdog_script()
    else:
        remember = stop = ""
    script = ("pm=; while kill -0 %d 2>/dev/null; do %ssleep 1; done; %srm -rf %s" % (
        os.getpid(), remember, stop, shlex.quote(run_root)))
    return subprocess.Popen(["sh", "-c", script], cwd="/", stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


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

    # Everything of this run (server homes, the PostgreSQL cluster) lives in
    # one folder: removed at the end unless a test failed (then the homes
    # of failed servers are kept there for inspection).
    run_root = tempfile.mkdtemp(prefix="apim-itest-")
    os.chmod(run_root, 0o755)  # the postgres user must reach its cluster inside
    env = dict(os.environ)
    env.update({"APIMD": apimd, "APIM_TEST_DB": args.db, "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": run_root})
    env.pop("APIM_TEST_PG_URL", None)
    modules = discover()
    results = []
    pg = None
    watchdog = None
    interrupted = False
    try:
        if args.db == "postgresql":
            pg = ThrowawayPostgres(run_root)
            pg.prepare()
            watchdog = start_watchdog(run_root, pg)
            env["APIM_TEST_PG_URL"] = pg.start()
            print("run.py: PostgreSQL at %s" % env["APIM_TEST_PG_URL"], flush=True)
        else:
            watchdog = start_watchdog(run_root, None)
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
        any_failed = interrupted or any(r["failed"] for r in results)
        if any_failed and not interrupted and os.listdir(run_root):
            print("run.py: server homes of failed tests kept in %s" % run_root)
        else:
            shutil.rmtree(run_root, ignore_errors=True)
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()

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
