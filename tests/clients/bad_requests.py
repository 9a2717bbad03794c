"""Sends malformed, oversized and stalled requests to ADDRESS and prints one line per case:
`case<TAB>what the server did` (its status code, or `closed` / `open`)."""
import socket
import sys
import time

host, port = sys.argv[1].rsplit(":", 1)
stall_seconds = float(sys.argv[2])


def answer(payload, wait=10):
    sock = socket.create_connection((host, int(port)), timeout=wait)
    sock.sendall(payload)
    try:
        data = sock.recv(4096)
    except socket.timeout:
        return "open"
    finally:
        sock.close()
    if not data:
        return "closed"
    return data.split(b" ", 2)[1].decode()


print("malformed\t" + answer(b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n"))
print("oversized\t" + answer(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"))
print("bad-version\t" + answer(b"GET / HTTP/9.7\r\nHost: x\r\n\r\n"))
started = time.monotonic()
print("stalled\t" + answer(b"GET / HTTP/1.1\r\nHost: x\r\n", wait=stall_seconds))
print(f"stalled-after\t{time.monotonic() - started:.1f}")
