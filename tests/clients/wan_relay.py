"""A WAN link for tests: accepts TCP at LISTEN and relays each connection to TARGET, holding
every chunk DELAY_MS/2 milliseconds in each direction (so a round trip gains DELAY_MS), in
order. The kernel here has no netem, so latency is added in userspace."""
import asyncio
import sys

listen_host, listen_port = sys.argv[1].rsplit(":", 1)
target_host, target_port = sys.argv[2].rsplit(":", 1)
one_way = float(sys.argv[3]) / 2000.0


async def pipe(reader, writer):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + one_way, data))
    except ConnectionError:
        pass
    queue.put_nowait((loop.time() + one_way, None))
    try:
        await sender
    except ConnectionError:
        pass


async def relay(client_reader, client_writer):
    try:
        server_reader, server_writer = await asyncio.open_connection(target_host, int(target_port))
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))


async def main():
    server = await asyncio.start_server(relay, listen_host, int(listen_port))
    async with server:
        await server.serve_forever()


asyncio.run(main())
