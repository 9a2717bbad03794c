"""Python's own http.server (ThreadingHTTPServer with SimpleHTTPRequestHandler, as
`python3 -m http.server` runs it) serving DIRECTORY at HOST PORT, with a listen backlog of 1,024
rather than its 5: tests open hundreds of connections at once, and the SYNs a full backlog drops
are sent again only a second later, then 3, then 7."""
import functools
import http.server
import socket
import sys

host, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]


class Server(http.server.ThreadingHTTPServer):
    address_family = family
    request_queue_size = 1024


handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
with Server(address, handler) as server:
    server.serve_forever()
