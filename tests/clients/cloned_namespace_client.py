"""A process made in a new network namespace by clone(CLONE_NEWNET), as crun, LXC and
bubblewrap make one, rather than by setns or unshare: no tracepoint cheops follows tells of it.
It brings its loopback up and sends `GET PATH` to HOST:PORT until an answer comes (its first
connections, before cheops listens in the namespace, fail open and find no route), then prints
the answer and how many connections failed first.

    cloned_namespace_client.py HOST PORT PATH SECONDS
"""
import ctypes
import os
import socket
import subprocess
import sys
import time

CLONE_NEWNET = 0x40000000
SIGCHLD = 17
SYS_CLONE = 56  # x86_64


def ask(host, port, path, seconds):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    deadline = time.monotonic() + seconds
    failed = 0
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
            print(f"failed before: {failed}")
            print(answer.decode(errors="replace"))
            return 0
        except OSError:
            failed += 1
            time.sleep(0.05)
    print(f"no answer in {seconds} s after {failed} failed connections", file=sys.stderr)
    return 1


def main():
    host, port, path, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    libc = ctypes.CDLL(None, use_errno=True)
    # clone with no new stack behaves as fork, in a new network namespace.
    pid = libc.syscall(SYS_CLONE, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0)
    if pid < 0:
        print(f"clone: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    if pid == 0:
        code = ask(host, port, path, seconds)
        sys.stdout.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
