"""Streaming with the typed client against `make run`'s demo: tokens are printed as they arrive,
then the call's usage and cost (carried by the stream's final chunk), then the job is completed.

    make run                                # in another terminal
    .venv/bin/python examples/streaming.py  # or: python -m examples.streaming

Configuration (environment): SAAS_LLM_BASE_URL (default http://localhost:8003), SAAS_LLM_TEAM_ID
(default acme-corp), SAAS_LLM_KEY (default: "team_key" from .demo-keys.json, written by `make run`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(ROOT))

from examples.typed_client import SaaSLLMClient, SaaSLLMError  # noqa: E402


def settings() -> tuple[str, str, str]:
    base_url = os.environ.get("SAAS_LLM_BASE_URL", "http://localhost:8003")
    team_id = os.environ.get("SAAS_LLM_TEAM_ID", "acme-corp")
    key = os.environ.get("SAAS_LLM_KEY")
    if not key:
        keys_file = ROOT / ".demo-keys.json"
        if keys_file.exists():
            key = json.loads(keys_file.read_text()).get("team_key")
    if not key:
        sys.exit("No API key: set SAAS_LLM_KEY, or run `make run` once so .demo-keys.json exists.")
    return base_url, team_id, key


async def main() -> None:
    base_url, team_id, key = settings()
    async with SaaSLLMClient(base_url=base_url, team_id=team_id, virtual_key=key) as client:
        async with client.job("story_writer", metadata={"example": "streaming"}) as run:
            print(f"Job {run.job_id}")
            print("Assistant: ", end="", flush=True)
            started = time.perf_counter()
            first_token_ms = None
            async with run.chat_stream("Write a very short story about a lighthouse.", purpose="story") as stream:
                async for chunk in stream:
                    if chunk.content:
                        if first_token_ms is None:
                            first_token_ms = (time.perf_counter() - started) * 1000
                        print(chunk.content, end="", flush=True)
            print()
            print(f"  chunks:        {stream.chunks} (first token after {first_token_ms or 0:.0f} ms)")
            print(f"  finish reason: {stream.finish_reason}")
            if stream.usage is not None:
                print(
                    f"  usage:         {stream.usage.prompt_tokens} prompt + {stream.usage.completion_tokens} "
                    f"completion = {stream.usage.total_tokens} tokens"
                )
            print(f"  cost:          ${stream.cost_usd}")
            print(f"  call id:       {stream.call_id}")

            # A second streamed call, read in one go.
            title = await run.chat_stream("Give the story a title.", purpose="title", max_tokens=5).collect()
            print(
                f"Title: {title.content.strip()!r} ({title.usage.total_tokens if title.usage else '?'} tokens, "
                f"${title.cost_usd})"
            )

        completion = run.completion
        assert completion is not None
        print(
            f"Job {completion.status}: {completion.costs.total_calls} calls, {completion.costs.total_tokens} tokens, "
            f"${completion.costs.cost_usd}; {completion.credits_charged} credit(s) charged, "
            f"{completion.credits_remaining} remaining"
        )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SaaSLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
