"""A gRPC client on grpcio for the tests: calls cheops.test.Echo (grpc_service.py) at TARGET
and prints what it got as one JSON object. SCOPE, when given, travels as `x-scope` metadata.

    grpc_client.py kinds TARGET [SCOPE]     the four kinds of call, and a call that fails
    grpc_client.py streams TARGET SCOPE1 SCOPE2
                                            two bidirectional calls at once on one connection
    grpc_client.py upload TARGET MIB [SCOPE]  a client-streaming upload of MIB mebibytes
    grpc_client.py unary TARGET [SCOPE [TEXT]]  one call: its status code and details
"""
import json
import sys

import grpc

SERVICE = "/cheops.test.Echo/"
# A deadline for every call: the tests never hang on a call.
DEADLINE = 60


def metadata(scope):
    return (("x-scope", scope),) if scope else ()


def kinds(channel, scope):
    md = metadata(scope)
    result = {}
    unary = channel.unary_unary(SERVICE + "Unary")
    result["unary"] = unary(b"hello", metadata=md, timeout=DEADLINE).decode()
    count = channel.unary_stream(SERVICE + "Count")
    call = count(b"3", metadata=md, timeout=DEADLINE)
    result["server_streaming"] = [m.decode() for m in call]
    result["server_streaming_trailers"] = dict(call.trailing_metadata())
    upload = channel.stream_unary(SERVICE + "Upload")
    answer, call = upload.with_call(
        iter([b"a" * 1000, b"b" * 24]), metadata=md, timeout=DEADLINE
    )
    result["client_streaming"] = answer.decode()
    result["client_streaming_trailers"] = dict(call.trailing_metadata())
    chat = channel.stream_stream(SERVICE + "Chat")
    result["bidi_streaming"] = [
        m.decode() for m in chat(iter([b"one", b"two"]), metadata=md, timeout=DEADLINE)
    ]
    failing = count(b"fail", metadata=md, timeout=DEADLINE)
    received = []
    try:
        for m in failing:
            received.append(m.decode())
    except grpc.RpcError as err:
        result["failed"] = {
            "received": received,
            "code": err.code().value[0],
            "details": err.details(),
            "trailers": dict(err.trailing_metadata() or ()),
        }
    return result


def streams(channel, scope1, scope2):
    """Two chats at once on the channel's one connection, each message answered before the
    next is sent on either: they are open together, each routed on its own scope."""
    chat = channel.stream_stream(SERVICE + "Chat")
    sends = [Sender(), Sender()]
    calls = [
        chat(iter(sends[0]), metadata=metadata(scope1), timeout=DEADLINE),
        chat(iter(sends[1]), metadata=metadata(scope2), timeout=DEADLINE),
    ]
    answers = [[], []]
    for round_ in range(3):
        for i in (0, 1):
            sends[i].send(f"{i}-{round_}".encode())
            answers[i].append(next(calls[i]).decode())
    for sender in sends:
        sender.close()
    for i in (0, 1):
        answers[i].extend(m.decode() for m in calls[i])
    return {"first": answers[0], "second": answers[1]}


class Sender:
    """A request stream fed one message at a time."""

    def __init__(self):
        import queue

        self.queue = queue.Queue()

    def send(self, message):
        self.queue.put(message)

    def close(self):
        self.queue.put(None)

    def __iter__(self):
        while (message := self.queue.get()) is not None:
            yield message


def upload(channel, mib, scope):
    chunk = b"x" * (64 * 1024)

    def chunks():
        for _ in range(mib * 16):
            yield chunk

    call = channel.stream_unary(SERVICE + "Upload")
    return {"answer": call(chunks(), metadata=metadata(scope), timeout=DEADLINE).decode()}


def one_call(channel, scope, text):
    unary = channel.unary_unary(SERVICE + "Unary")
    try:
        answer = unary(text.encode(), metadata=metadata(scope), timeout=DEADLINE)
        return {"code": 0, "answer": answer.decode()}
    except grpc.RpcError as err:
        return {"code": err.code().value[0], "details": err.details()}


def main():
    command, target, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    # Straight to the address dialled (no proxy settings): cheops intercepts in the kernel.
    channel = grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
    if command == "kinds":
        result = kinds(channel, args[0] if args else None)
    elif command == "streams":
        result = streams(channel, args[0], args[1])
    elif command == "upload":
        result = upload(channel, int(args[0]), args[1] if len(args) > 1 else None)
    elif command == "unary":
        result = one_call(channel, args[0] if args else None, args[1] if len(args) > 1 else "hello")
    else:
        sys.exit(f"unknown command {command}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
