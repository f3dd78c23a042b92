#!/usr/bin/env python3
"""One deployment diagnosis: an LLM that queries Prometheus (and GitHub) through MCP tools.

This is the design's `diagnosis_runner.py` + `simple_anthropic_mcp.py`, ported and fixed.
The service runs it as a local child process (`Runner.Kind: process`) or execs it inside
the managed container (`Runner.Kind: docker`); both read its output the same way.

Input
  * the prompt on stdin (an alert's prompt can be long; argv is also world-readable);
  * settings as flags (`--help`);
  * secrets only from the environment: `AI_API_KEY`, `GITHUB_TOKEN`. They never appear
    in argv, in what this program prints, or in the MCP servers' argv.

Output protocol (stdout)
  log lines, then a line `#####`, then the final answer: the model's text (the service
  pulls the JSON report out of it), or `{"error": {"kind": ..., "message": ...}}` with a
  non-zero exit status when the diagnosis could not be made.

Exit status: 0 answer printed, 2 diagnosis failed (error JSON printed), 64 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import sys
import time
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

try:  # mcp 2.x ships httpx2; mcp 1.x used httpx. Both have the same API for what we use.
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

SPLIT = "#####"
_STARTED = time.monotonic()
_SECRETS: list[str] = []


class DiagnosisError(Exception):
    """A failure with a kind the service can count and a message a person can act on."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.3f}s] {redact(message)}", flush=True)


# ---------------------------------------------------------------------------------------
# LLM wire formats


def detect_protocol(base_url: str, configured: str) -> str:
    """`anthropic` or `openai`: the configured one, or recognised from the base URL."""
    if configured in ("anthropic", "openai"):
        return configured
    host = (urlsplit(base_url).hostname or "").lower()
    return "anthropic" if host.endswith("anthropic.com") else "openai"


def endpoint(base_url: str, protocol: str) -> str:
    """The request URL for a base URL as the design writes them (`.../v1` or a bare host)."""
    base = base_url.rstrip("/")
    path = urlsplit(base).path
    if protocol == "anthropic":
        return base + ("/messages" if path.endswith("/v1") else "/v1/messages")
    # OpenAI-compatible: OpenAI and DashScope give a base with a path (`/v1`,
    # `/compatible-mode/v1`); ModelScope's design URL is a bare host serving `/v1`.
    return base + ("/chat/completions" if path not in ("", "/") else "/v1/chat/completions")


class LLM:
    """One chat turn at a time, in either wire format, with tools or without."""

    def __init__(self, args: argparse.Namespace, api_key: str) -> None:
        self.protocol = detect_protocol(args.base_url, args.protocol)
        self.url = endpoint(args.base_url, self.protocol)
        self.model = args.model
        self.max_tokens = args.max_tokens
        headers = {"content-type": "application/json"}
        if self.protocol == "anthropic":
            headers["x-api-key"] = api_key
            headers["anthropic-version"] = "2023-06-01"
        else:
            headers["authorization"] = f"Bearer {api_key}"
        self.client = httpx.AsyncClient(headers=headers, timeout=args.request_timeout)
        self.input_tokens = 0
        self.output_tokens = 0

    async def aclose(self) -> None:
        await self.client.aclose()

    def tool_specs(self, tools: list[Any]) -> list[dict[str, Any]]:
        if self.protocol == "anthropic":
            return [
                {"name": t.name, "description": t.description or "", "input_schema": t.input_schema}
                for t in tools
            ]
        return [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description or "", "parameters": t.input_schema},
            }
            for t in tools
        ]

    def user_message(self, text: str) -> dict[str, Any]:
        return {"role": "user", "content": text}

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        where = f"{urlsplit(self.url).scheme}://{urlsplit(self.url).netloc}{urlsplit(self.url).path}"
        try:
            response = await self.client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise DiagnosisError("llm_timeout", f"AI call to {where} timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise DiagnosisError("llm_unreachable", f"AI endpoint {where} unreachable: {exc}") from exc
        if response.status_code >= 400:
            detail = " ".join(response.text.split())[:300]
            raise DiagnosisError(
                "llm_status",
                f"AI call failed with status {response.status_code} at {where}: {detail}",
            )
        try:
            return response.json()
        except ValueError as exc:
            raise DiagnosisError("llm_bad_response", f"AI endpoint {where} answered non-JSON") from exc

    async def turn(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None):
        """Returns (assistant message to append, text, [(call id, tool name, arguments)])."""
        if self.protocol == "anthropic":
            return await self._anthropic_turn(messages, tools)
        return await self._openai_turn(messages, tools)

    async def _anthropic_turn(self, messages, tools):
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "messages": messages}
        if tools:
            body["tools"] = tools
        data = await self.post(body)
        usage = data.get("usage") or {}
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise DiagnosisError("llm_bad_response", "AI answer has no content blocks")
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        calls = [
            (b.get("id", ""), b.get("name", ""), b.get("input") or {})
            for b in blocks
            if b.get("type") == "tool_use"
        ]
        return {"role": "assistant", "content": blocks}, text, calls

    async def _openai_turn(self, messages, tools):
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens}
        if tools:
            body["tools"] = tools
        data = await self.post(body)
        usage = data.get("usage") or {}
        self.input_tokens += int(usage.get("prompt_tokens") or 0)
        self.output_tokens += int(usage.get("completion_tokens") or 0)
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise DiagnosisError("llm_bad_response", "AI answer has no choices[0].message") from exc
        calls = []
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            raw = function.get("arguments") or "{}"
            try:
                arguments = json.loads(raw) if isinstance(raw, str) else dict(raw)
            except ValueError:
                arguments = {"_unparsed_arguments": raw}
            calls.append((call.get("id", ""), function.get("name", ""), arguments))
        assistant = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            assistant["tool_calls"] = message["tool_calls"]
        return assistant, message.get("content") or "", calls

    def tool_results(self, results: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
        """Messages that carry the results of one turn's tool calls back to the model."""
        if self.protocol == "anthropic":
            return [
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call_id, "content": text, "is_error": is_error}
                        for call_id, text, is_error in results
                    ],
                }
            ]
        return [{"role": "tool", "tool_call_id": call_id, "content": text} for call_id, text, _ in results]


# ---------------------------------------------------------------------------------------
# MCP servers and the tool router


def cap(text: str, limit: int) -> str:
    """A tool result over the cap is cut, and says so, so the model knows it saw a part."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[truncated by deploy-diagnosis: showing {limit} of {len(text)} characters]"


def result_text(result: Any) -> str:
    parts = []
    for block in result.content:
        text = getattr(block, "text", None)
        parts.append(text if text is not None else block.model_dump_json())
    if not parts and getattr(result, "structured_content", None) is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


class Tools:
    """The MCP sessions of one diagnosis and a router from tool name to session."""

    def __init__(self, stack: AsyncExitStack, result_cap: int) -> None:
        self.stack = stack
        self.result_cap = result_cap
        self.routes: dict[str, ClientSession] = {}
        self.tools: list[Any] = []

    async def add_stdio(self, label: str, command: list[str], env: dict[str, str]) -> None:
        params = StdioServerParameters(command=command[0], args=command[1:], env=env)
        read, write = await self.stack.enter_async_context(stdio_client(params))
        await self._add(label, read, write)

    async def add_http(self, label: str, url: str, wait: float = 15.0) -> None:
        """Connects to a running server, first waiting (up to `wait` seconds) for it to
        accept connections: a container that was just created or restarted is still
        starting it. Waiting on a plain TCP connect keeps the transport's own failure path
        (which cancels through its task group) out of the normal start-up."""
        from mcp.client.streamable_http import streamable_http_client

        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        give_up = time.monotonic() + wait
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                break
            except OSError as exc:
                if time.monotonic() >= give_up:
                    raise DiagnosisError(
                        "mcp_failed", f"{label} at {url} not reachable after {wait:.0f}s: {exc}"
                    ) from exc
                await asyncio.sleep(0.1)
        read, write = await self.stack.enter_async_context(streamable_http_client(url))
        await self._add(label, read, write)

    async def _add(self, label: str, read: Any, write: Any) -> None:
        session = await self.stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        listed = await session.list_tools()
        for tool in listed.tools:
            if tool.name in self.routes:
                log(f"{label}: tool {tool.name} already offered by another server; keeping the first")
                continue
            self.routes[tool.name] = session
            self.tools.append(tool)
        log(f"{label}: {len(listed.tools)} tools: {', '.join(t.name for t in listed.tools)}")

    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        session = self.routes.get(name)
        if session is None:
            return f"unknown tool {name!r}; available: {', '.join(sorted(self.routes))}", True
        try:
            result = await session.call_tool(name, arguments)
        except Exception as exc:  # a failed tool call is reported to the model, not fatal
            return f"tool {name} failed: {type(exc).__name__}: {exc}", True
        return cap(result_text(result), self.result_cap), bool(getattr(result, "is_error", False))


def prometheus_mcp_command(configured: str) -> list[str]:
    if configured:
        return shlex.split(configured)
    # The console script installed beside this interpreter (the runner's virtualenv).
    beside = os.path.join(os.path.dirname(sys.executable), "prometheus-mcp-server")
    return [beside if os.path.exists(beside) else "prometheus-mcp-server"]


async def check_prometheus(url: str) -> None:
    """Fail fast, with the reason, when Prometheus cannot be reached at all."""
    probe = url.rstrip("/") + "/api/v1/status/buildinfo"
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(probe)
    except httpx.HTTPError as exc:
        raise DiagnosisError("prometheus_unreachable", f"Prometheus unreachable at {url}: {exc}") from exc
    if response.status_code >= 400:
        raise DiagnosisError(
            "prometheus_unreachable", f"Prometheus at {url} answered status {response.status_code}"
        )


def run_labels() -> dict[str, str]:
    """Marks an MCP server's process with the diagnosis it serves, so the service can find
    and stop it (kill_run.py) and people can see it (/proc, `ps e`)."""
    return {k: os.environ[k] for k in ("DD_DEPLOYMENT_ID", "DD_RUN_ID") if k in os.environ}


async def open_tools(args: argparse.Namespace, stack: AsyncExitStack) -> Tools:
    tools = Tools(stack, args.tool_result_max_chars)
    await check_prometheus(args.prometheus_url)
    if args.prometheus_mcp_url:
        try:
            await tools.add_http("prometheus-mcp", args.prometheus_mcp_url)
        except Exception as exc:
            raise DiagnosisError(
                "mcp_failed", f"Prometheus MCP server at {args.prometheus_mcp_url} unreachable: {exc}"
            ) from exc
    else:
        env = {
            "PROMETHEUS_URL": args.prometheus_url,
            "PROMETHEUS_MCP_SERVER_TRANSPORT": "stdio",
            **run_labels(),
        }
        try:
            await tools.add_stdio("prometheus-mcp", prometheus_mcp_command(args.prometheus_mcp_command), env)
        except Exception as exc:
            raise DiagnosisError("mcp_failed", f"Prometheus MCP server could not start: {exc}") from exc

    token = os.environ.get("GITHUB_TOKEN", "")
    if token:
        command = shlex.split(args.github_mcp_command)
        if not command or shutil.which(command[0]) is None:
            log(f"GitHub MCP server {args.github_mcp_command!r} not found; GitHub analysis disabled")
        else:
            env = {
                "GITHUB_PERSONAL_ACCESS_TOKEN": token,
                "GITHUB_TOOLSETS": args.github_toolsets,
                **run_labels(),
            }
            try:
                await tools.add_stdio("github-mcp", command, env)
            except Exception as exc:  # GitHub is optional: go on with Prometheus alone
                log(f"GitHub MCP server failed to start ({type(exc).__name__}); GitHub analysis disabled")
    return tools


# ---------------------------------------------------------------------------------------
# The agent loop


async def diagnose(args: argparse.Namespace, prompt: str) -> str:
    api_key = os.environ.get("AI_API_KEY", "")
    llm = LLM(args, api_key)
    log(f"model {args.model} via {llm.protocol} at {urlsplit(llm.url).netloc}")
    async with AsyncExitStack() as stack:
        stack.push_async_callback(llm.aclose)
        tools = await open_tools(args, stack)
        specs = llm.tool_specs(tools.tools)
        messages: list[dict[str, Any]] = [llm.user_message(prompt)]
        tool_calls = 0
        for turn in range(1, args.max_turns + 1):
            last = turn == args.max_turns
            if last:
                # The last turn offers no tools, so the model has to answer with what it has.
                messages.append(
                    llm.user_message(
                        "工具调用次数已用完。请基于已获得的信息，立即按要求的 JSON 格式输出最终诊断报告。"
                    )
                )
            assistant, text, calls = await llm.turn(messages, None if last or not specs else specs)
            messages.append(assistant)
            if not calls or last:
                log(f"answer after {turn} turn(s)")
                usage = {
                    "inputTokens": llm.input_tokens,
                    "outputTokens": llm.output_tokens,
                    "steps": turn,
                    "toolCalls": tool_calls,
                }
                log(f"DD-USAGE {json.dumps(usage)}")
                return text
            results = []
            for call_id, name, arguments in calls:
                log(f"turn {turn}: tool {name} {json.dumps(arguments, ensure_ascii=False)[:200]}")
                output, is_error = await tools.call(name, arguments)
                tool_calls += 1
                if is_error:
                    log(f"turn {turn}: tool {name} returned an error: {output[:200]}")
                results.append((call_id, output, is_error))
            messages.extend(llm.tool_results(results))
    raise DiagnosisError("internal", "agent loop ended without an answer")  # unreachable


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True, help="AI API base URL (e.g. https://api.openai.com/v1)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--protocol", default="auto", choices=["auto", "anthropic", "openai"])
    parser.add_argument("--prometheus-url", required=True)
    parser.add_argument("--prometheus-mcp-command", default="", help="default: prometheus-mcp-server")
    parser.add_argument("--prometheus-mcp-url", default="", help="a running server's streamable-HTTP URL")
    parser.add_argument("--github-mcp-command", default="github-mcp-server stdio")
    parser.add_argument("--github-toolsets", default="repos,issues,pull_requests,releases")
    parser.add_argument("--max-turns", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--tool-result-max-chars", type=int, default=8000)
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds per AI request")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process dies")
    parser.add_argument(
        "--prompt-bytes",
        type=int,
        default=-1,
        help="read exactly this many bytes of prompt from stdin (when stdin is not closed, as over docker exec)",
    )
    args = parser.parse_args(argv)
    if args.max_turns < 1:
        parser.error("--max-turns must be at least 1")
    return args


def read_exactly(stream: Any, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def main() -> int:
    args = parse_args(sys.argv[1:])
    _SECRETS.extend(s for s in (os.environ.get("AI_API_KEY"), os.environ.get("GITHUB_TOKEN")) if s)
    if args.prompt_bytes >= 0:
        prompt = read_exactly(sys.stdin.buffer, args.prompt_bytes).decode("utf-8", errors="replace")
    else:
        prompt = sys.stdin.read()
    if not prompt.strip():
        print(SPLIT)
        print(json.dumps({"error": {"kind": "bad_input", "message": "empty prompt on stdin"}}))
        return 2

    loop = asyncio.new_event_loop()
    task = loop.create_task(diagnose(args, prompt))
    # SIGTERM (the service's deadline) cancels the task, so the MCP servers are shut down
    # by their context managers instead of being left behind.
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    # Started as the service's child: if the service dies (kill -9), nobody will read our
    # answer, so stop instead of spending AI calls on it. A dead parent shows as a new
    # parent process id. (Under docker exec the parent is outside the container's PID
    # namespace; the service kills the run there itself.)
    watcher = loop.create_task(watch_parent(os.getppid(), task) if args.exit_with_parent else asyncio.sleep(0))
    try:
        answer = loop.run_until_complete(task)
    except BaseException as raised:  # noqa: BLE001 - the service needs a reason, whatever it was
        return report_failure(unwrap(raised))
    finally:
        watcher.cancel()
        loop.run_until_complete(asyncio.gather(watcher, return_exceptions=True))
        loop.close()
    print(SPLIT)
    print(redact(answer))
    return 0


async def watch_parent(parent: int, task: asyncio.Task) -> None:
    while not task.done():
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            log("the service that started this runner is gone; stopping")
            task.cancel()
            return


def unwrap(exc: BaseException) -> BaseException:
    """The task groups of the MCP transports wrap what was raised inside them, at any depth."""

    def leaves(e: BaseException):
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                yield from leaves(inner)
        else:
            yield e

    found = list(leaves(exc))
    return next((e for e in found if isinstance(e, DiagnosisError)), found[0] if found else exc)


def report_failure(exc: BaseException) -> int:
    if isinstance(exc, DiagnosisError):
        kind, message = exc.kind, exc.message
    elif isinstance(exc, asyncio.CancelledError):
        kind, message = "cancelled", "stopped by the service"
    else:
        kind, message = "runner_crashed", f"{type(exc).__name__}: {exc}"
    log(f"diagnosis failed: {kind}: {message}")
    print(SPLIT)
    print(json.dumps({"error": {"kind": kind, "message": redact(message)}}, ensure_ascii=False))
    return 2


if __name__ == "__main__":
    sys.exit(main())
