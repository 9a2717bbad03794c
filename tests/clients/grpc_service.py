"""A gRPC service on grpcio, the tests' gRPC application: every answer names the site that
served it. Messages are raw bytes (no protobuf needed: grpcio's generic handlers).

    grpc_service.py ADDRESS SITE

Methods of cheops.test.Echo:
  Unary(text) -> "SITE:text"; "unavailable at SITE" -> UNAVAILABLE at that site, no message
  Count(n) -> n messages "SITE:i"; "fail" -> one message, then ABORTED with trailing metadata
  Upload(stream of chunks) -> "SITE:<bytes received>"
  Chat(stream of texts) -> a stream of "SITE:text", one per message, as they come
Every call ends with the trailing metadata x-served-by: SITE.
"""
import sys
from concurrent import futures

import grpc

SERVICE = "cheops.test.Echo"


def main():
    address, site = sys.argv[1], sys.argv[2]
    tag = site.encode()

    def trailers(context):
        context.set_trailing_metadata((("x-served-by", site),))

    def unary(request, context):
        trailers(context)
        if request == b"unavailable at " + tag:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{site} is draining")
        return tag + b":" + request

    def count(request, context):
        trailers(context)
        if request == b"fail":
            yield tag + b":0"
            context.abort(grpc.StatusCode.ABORTED, f"stopped after one message at {site}")
        for i in range(int(request)):
            yield tag + b":" + str(i).encode()

    def upload(requests, context):
        trailers(context)
        return tag + b":" + str(sum(len(chunk) for chunk in requests)).encode()

    def chat(requests, context):
        trailers(context)
        for request in requests:
            yield tag + b":" + request

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)],
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(address)
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
