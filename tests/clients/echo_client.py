"""Sends bytes that are not HTTP to ADDRESS and prints what comes back, hex-encoded."""
import socket
import sys

host, port = sys.argv[1].rsplit(":", 1)
payload = bytes(range(256)) * 4
with socket.create_connection((host, int(port)), timeout=10) as sock:
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
print("same" if data == payload else f"different: {len(data)} bytes")
