"""A database on another machine: a TCP proxy that delays every chunk of bytes, each way.

The proxy runs on an event loop in a thread of the benchmark's process. Its
selector is select(), whose timeout counts in microseconds: epoll's and
poll()'s count in milliseconds, and would round each half-millisecond delay
up to a whole one.
"""

import asyncio
import contextlib
import selectors
import threading

CHUNK = 65536


@contextlib.contextmanager
def delaying(host, port, delay):
    """A proxy to ``host``:``port`` on a free port of 127.0.0.1; yields that port.

    Each chunk read from one side is written to the other ``delay`` seconds
    after it arrived, in order: a round trip takes 2 x ``delay`` more.
    """
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    thread = threading.Thread(target=loop.run_forever, name="bench proxy", daemon=True)
    thread.start()

    async def connect(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(
            _forward(client_reader, server_writer, delay), _forward(server_reader, client_writer, delay)
        )

    async def serve():
        return await asyncio.start_server(connect, "127.0.0.1", 0)

    server = asyncio.run_coroutine_threadsafe(serve(), loop).result()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


async def _forward(reader, writer, delay):
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    arrived = asyncio.Queue()

    async def send():
        with contextlib.suppress(ConnectionError):  # the receiver left: nothing more to deliver
            while (chunk := await arrived.get()) is not None:
                due, data = chunk
                await asyncio.sleep(due - loop.time())
                writer.write(data)
                await writer.drain()
        writer.close()

    sending = asyncio.create_task(send())
    with contextlib.suppress(ConnectionError):  # the sender left: what it sent still goes through
        while data := await reader.read(CHUNK):
            arrived.put_nowait((loop.time() + delay, data))
    arrived.put_nowait(None)
    await sending
