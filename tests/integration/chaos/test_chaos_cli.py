"""``unbroken proxy`` runs the proxy and the Toxiproxy-compatible API until SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

import httpx
from chaos_peers import PeerServer, connect

T = 10.0


async def test_cli_proxy_serves_api_and_exits_cleanly_on_sigint(echo: PeerServer) -> None:
    upstream = f"127.0.0.1:{echo.address[1]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from unbroken.cli import main; main()",
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--api",
        "127.0.0.1:0",
        "--name",
        "cli",
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), T)).decode()
        second = (await asyncio.wait_for(process.stdout.readline(), T)).decode()
        assert first.startswith("proxy cli: listening on 127.0.0.1:")
        assert f"-> upstream {upstream}" in first
        port = int(first.split("listening on ")[1].split(" ")[0].rsplit(":", 1)[1])
        url = second.strip().rsplit(" ", 1)[1]
        assert url.startswith("http://127.0.0.1:")

        client = await connect(port)
        client.send(b"cli")
        assert await asyncio.wait_for(client.wait_bytes(3), T) == b"cli"

        async with httpx.AsyncClient(base_url=url, timeout=T) as http:
            r = await http.get("/proxies")
            assert r.status_code == 200
            assert r.json()["cli"]["upstream"] == upstream
            r = await http.post("/proxies/cli/toxics", json={"type": "reset_peer"})
            assert r.status_code == 200
        client.send(b"boom")
        assert isinstance(await asyncio.wait_for(client.lost, T), ConnectionResetError)

        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), T) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
