"""Opens COUNT connections to the given addresses (round robin) and holds them all open at
once, then sends one HTTP/1.0 request on each and prints, per connection, the address it
dialled and the body it got: `address<TAB>body`.
With SOURCE_PORT_BASE set, connection i is made from port SOURCE_PORT_BASE+i, so that clients
in two network namespaces make connections with the very same addresses and ports; with
ADDRESS_OFFSET set, connection i dials address i+ADDRESS_OFFSET (round robin)."""
import os
import socket
import sys

count = int(sys.argv[1])
addresses = [a.rsplit(":", 1) for a in sys.argv[2:]]
source_port_base = int(os.environ.get("SOURCE_PORT_BASE", "0"))
offset = int(os.environ.get("ADDRESS_OFFSET", "0"))
connections = []
for i in range(count):
    host, port = addresses[(i + offset) % len(addresses)]
    source = ("", source_port_base + i) if source_port_base else None
    connection = socket.create_connection((host, int(port)), timeout=30, source_address=source)
    connections.append((f"{host}:{port}", connection))
for address, sock in connections:
    sock.sendall(f"GET /whoami HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
for address, sock in connections:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    body = data.split(b"\r\n\r\n", 1)[1].decode().strip() if b"\r\n\r\n" in data else "NO-ANSWER"
    print(f"{address}\t{body}")
