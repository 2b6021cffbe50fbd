#!/usr/bin/env python3
"""package-notify - runs the installed sophiad the way systemd would and
checks its sd_notify(3) protocol (scripts/package-test calls it).

  package-notify.py SOPHIAD CONFIG LISTEN

Listens on a unix datagram socket, starts SOPHIAD -c CONFIG with
NOTIFY_SOCKET pointing at it and SOPHIA_LISTEN=LISTEN, under the kernel's
MemoryDenyWriteExecute (prctl PR_SET_MDWE, what the unit's
MemoryDenyWriteExecute=yes asks systemd for) when the kernel has it, then:
READY=1 -> GET /healthz answers -> SIGHUP -> RELOADING=1 then READY=1 ->
/healthz again -> SIGTERM -> STOPPING=1 and exit status 0. Any deviation or
timeout exits 1 with what was expected and what arrived.
"""
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def fail(msg):
    print(f"package-notify: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def set_mdwe():
    """In the child before exec: no mapping may become writable+executable."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        os.write(2, b"package-notify: kernel has no PR_SET_MDWE; running without\n")
    else:
        os.write(2, b"package-notify: MemoryDenyWriteExecute on (PR_SET_MDWE)\n")


def expect(sock, proc, want, timeout, seen):
    """Reads datagrams until one holds the line `want`; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"sophiad exited ({proc.returncode}) while waiting for {want}; got {seen}")
        sock.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            continue
        lines = msg.split("\n")
        seen.append(lines)
        print(f"package-notify: got {lines}")
        if want in lines:
            return lines
    fail(f"no {want} within {timeout}s; got {seen}")


def healthz(listen, timeout=20):
    """/healthz answers 200 once Redis and PostgreSQL are connected (503
    while a tier is still coming up, right after READY=1)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{listen}/healthz", timeout=5) as r:
                print(f"package-notify: /healthz {r.status} {r.read().decode()[:200]}")
                return
        except urllib.error.HTTPError as e:
            last = f"{e.code} {e.read().decode()[:300]}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    fail(f"/healthz not 200 within {timeout}s; last: {last}")


def main():
    sophiad, config, listen = sys.argv[1:4]
    tmp = tempfile.mkdtemp(prefix="sophia-notify-")
    path = os.path.join(tmp, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    env = dict(os.environ, NOTIFY_SOCKET=path, SOPHIA_LISTEN=listen)
    proc = subprocess.Popen([sophiad, "-c", config], env=env,
                            preexec_fn=set_mdwe)
    seen = []
    try:
        ready = expect(sock, proc, "READY=1", 60, seen)
        if not any(l.startswith("STATUS=") for l in ready):
            fail(f"READY=1 came without STATUS=: {ready}")
        healthz(listen)
        proc.send_signal(signal.SIGHUP)
        reloading = expect(sock, proc, "RELOADING=1", 10, seen)
        if not any(l.startswith("MONOTONIC_USEC=") for l in reloading):
            fail(f"RELOADING=1 without MONOTONIC_USEC=: {reloading}")
        expect(sock, proc, "READY=1", 30, seen)
        healthz(listen)
        proc.send_signal(signal.SIGTERM)
        expect(sock, proc, "STOPPING=1", 10, seen)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fail("sophiad did not exit within 30s of SIGTERM")
        if rc != 0:
            fail(f"sophiad exited with {rc} after SIGTERM")
        print("package-notify: READY=1, RELOADING=1, READY=1, STOPPING=1, exit 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        os.unlink(path)
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
