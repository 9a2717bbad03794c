"""A TCP echo server on HOST:PORT: a service that does not speak HTTP."""
import socketserver
import sys


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


host, port = sys.argv[1].rsplit(":", 1)
socketserver.ThreadingTCPServer.allow_reuse_address = True
with socketserver.ThreadingTCPServer((host, int(port)), Echo) as server:
    server.serve_forever()
