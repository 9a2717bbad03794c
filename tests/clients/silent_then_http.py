"""Connects to ADDRESS, says nothing for SECONDS (as a pool that opens its connections ahead of
its requests), then sends one HTTP/1.1 request for PATH and prints the whole answer."""
import socket
import sys
import time

host, port = sys.argv[1].rsplit(":", 1)
seconds, path = float(sys.argv[2]), sys.argv[3]
with socket.create_connection((host, int(port)), timeout=10) as sock:
    time.sleep(seconds)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    sock.sendall(request.encode())
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
print(answer.decode(errors="replace"))
