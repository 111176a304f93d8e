"""Basic usage of the typed client against `make run`'s demo: one job, two LLM calls, completion,
cost breakdown and credit balance.

    make run                                  # in another terminal
    .venv/bin/python examples/basic_usage.py  # or: python -m examples.basic_usage

Configuration (environment): SAAS_LLM_BASE_URL (default http://localhost:8003), SAAS_LLM_TEAM_ID
(default acme-corp), SAAS_LLM_KEY (default: "team_key" from .demo-keys.json, written by `make run`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
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
        balance = await client.get_balance()
        print(f"Team {balance.team_id}: {balance.credits_remaining} credits remaining ({balance.budget_mode} mode)")

        job_id = await client.create_job("document_analysis", metadata={"document": "q3-report.pdf"})
        print(f"Created job {job_id}")

        summary = await client.chat(
            job_id,
            [
                {"role": "system", "content": "You summarise documents in one sentence."},
                {"role": "user", "content": "Summarise: revenue grew 12% while costs fell 3%."},
            ],
            purpose="summarise",
            max_tokens=16,
        )
        print(f"  call 1 (summarise, model {summary.model}):")
        print(f"    answer:  {summary.content!r} (finish: {summary.finish_reason})")
        print(f"    tokens:  {summary.usage.prompt_tokens} in / {summary.usage.completion_tokens} out")
        print(f"    cost:    ${summary.cost_usd} in {summary.latency_ms} ms")

        label = await client.chat(
            job_id, "Classify the sentiment: positive or negative?", purpose="classify", max_tokens=4
        )
        print(f"  call 2 (classify, model {label.model}):")
        print(f"    answer:  {label.content!r}")
        print(f"    tokens:  {label.usage.total_tokens}, cost ${label.cost_usd}")

        result = await client.complete_job(job_id, metadata={"outcome": "ok"})
        print(
            f"Job {result.status}: {result.costs.total_calls} calls, {result.costs.total_tokens} tokens, "
            f"${result.costs.cost_usd}; {result.credits_charged} credit(s) charged"
        )

        costs = await client.get_costs(job_id)
        print("Cost breakdown:")
        for line in costs.breakdown:
            print(
                f"  {line.purpose or '-':<10} {line.model:<10} {line.total_tokens:>4} tokens  ${line.cost_usd}  {line.status}"
            )
        print(f"  total ${costs.total_cost_usd}")

        balance = await client.get_balance()
        print(
            f"Credits remaining: {balance.credits_remaining} (used {balance.credits_used}, reserved {balance.credits_reserved})"
        )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SaaSLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
