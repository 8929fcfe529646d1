#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay in each direction, for benchmarking the
mirror over a long link on a kernel without tc netem (this VM has no sch_netem).

With --redirect-from IP it also installs an iptables DNAT rule (nat/OUTPUT) sending
that source address's connections to --to through the proxy, and removes it on exit:
the mirror worker (which connects from its own address) then crosses the "long link"
while everything else reaches the broker directly. Needs root for the rule.

  scripts/delay_proxy.py --listen 127.0.0.63:9090 --to 127.0.0.60:9090 --delay-ms 50 \\
      --redirect-from 127.0.0.62

Bytes are forwarded unchanged and in order (TLS passes through); each chunk is released
delay-ms after it arrived, so a round trip pays 2 x delay-ms and throughput is bounded by
the window the endpoints keep in flight, as on a real long fat network."""
import argparse
import asyncio
import signal
import subprocess
import time


async def pipe(reader, writer, delay):
    queue = asyncio.Queue()

    async def release():
        while True:
            due, chunk = await queue.get()
            if chunk is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(release())
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            queue.put_nowait((time.monotonic() + delay, chunk))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((0, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--redirect-from")
    args = parser.parse_args()
    listen_host, listen_port = args.listen.rsplit(":", 1)
    to_host, to_port = args.to.rsplit(":", 1)
    delay = args.delay_ms / 1000.0

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(to_host, int(to_port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer, delay),
                             pipe(upstream_reader, client_writer, delay))

    server = await asyncio.start_server(handle, listen_host, int(listen_port))
    rule = None
    if args.redirect_from:
        rule = ["-s", args.redirect_from, "-d", to_host, "-p", "tcp", "--dport", to_port,
                "-j", "DNAT", "--to-destination", args.listen]
        subprocess.run(["iptables", "-t", "nat", "-I", "OUTPUT", *rule], check=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"delay proxy {args.listen} -> {args.to}, {args.delay_ms} ms each way", flush=True)
    try:
        await stop.wait()
    finally:
        if rule:
            subprocess.run(["iptables", "-t", "nat", "-D", "OUTPUT", *rule], check=False)
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
