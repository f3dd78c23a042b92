#!/usr/bin/env python3
"""One deployment diagnosis: an LLM that queries Prometheus (and GitHub) through MCP tools.

This is the design's `diagnosis_runner.py` + `simple_anthropic_mcp.py`, ported and fixed.
The service runs it as a local child process (`Runner.Kind: process`) or execs it inside
the managed container (`Runner.Kind: docker`); both read its output the same way.

Input (stdin, then flags)
  * stdin: first one line of JSON with the secrets, `{"aiKey", "githubToken",
    "prometheusUrl"}` (the Prometheus URL may carry `user:pass@`), then the prompt. Neither
    is in argv (world-readable) nor in this process's environment (readable by every
    process of the same user through /proc/<pid>/environ); the process makes itself
    non-dumpable first, so that no other process of its user reads its memory or environ.
    Secrets never appear in what this program prints, nor in the MCP servers' argv; the
    servers that need one get it in their own environment (the Prometheus MCP server
    started here is non-dumpable too);
  * settings as flags (`--help`).

Output protocol (stdout; read by the service in src/runner/python.rs)
  log lines, then a line `#####`, then the final answer: the model's text (the service
  pulls the JSON report out of it), or `{"error": {"kind": ..., "message": ...}}` with a
  non-zero exit status when the diagnosis could not be made. A log line
  `DD-USAGE {json}` (tokens, steps, tool calls) comes before `#####`, on failure too.

Requests follow each provider's documented rules, as the service's native runner does:
the service resolves the provider profile and passes it as flags (`--protocol`,
`--max-tokens`, `--max-tokens-field`, `--extra-body`); tools stay declared while the
conversation holds tool calls and the last step forbids them with `tool_choice`; no
message is sent with empty content; an answer cut at the token limit gets one follow-up
asking for the report within it; 429, 5xx and 529 are retried, honouring `Retry-After`
(seconds or an HTTP date), never past `--deadline`.

Exit status: 0 answer printed, 2 diagnosis failed (error JSON printed), 64 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import email.utils
import json
import math
import os
import shlex
import shutil
import signal
import sys
import time
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import unquote, urlsplit

try:  # mcp 2.x ships httpx2; mcp 1.x used httpx. Both have the same API for what we use.
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

import lenient
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

SPLIT = "#####"
_STARTED = time.monotonic()
_SECRETS: list[str] = []

# What the model is told; the native runner (src/runner/native/mod.rs) says the same.
LAST_STEP_NOTE = "工具调用次数已用完。请基于已获得的信息，立即按要求的 JSON 格式输出最终诊断报告。"
# The follow-up to an answer that holds no readable report (src/runner/native/mod.rs says
# the same, FORMAT_NOTE).
FORMAT_NOTE = (
    "你的回答无法读取为要求的 JSON 报告（{why}）。请不要再调用工具，只输出一个 JSON 对象："
    '{"promQL": ["PromQL 查询"], "content": "【问题概述】…【根因分析】…【影响范围】…【解决方案】…"}，'
    '字符串中的换行写作 \\n，引号写作 \\"，不要代码块标记和其他文字。'
)
CUT_OFF_NOTE = (
    "你的回答超出了长度上限，被截断了。请不要再调用工具，直接输出要求的 JSON 诊断报告"
    "（promQL 与 content），内容精简，确保完整。"
)
# No provider accepts empty content; an empty tool output is sent as this.
NO_OUTPUT = "(no output)"
# What stands in for a tool output removed to fit the model's context (src/runner/context.rs
# says the same, TRIMMED_NOTE).
TRIMMED_NOTE = "[removed by deploy-diagnosis to fit the model's context (AI.ContextTokens): an earlier tool output; call the tool again if you still need it]"
# The tool the final answer is submitted through on Anthropic (src/runner/provider.rs).
SUBMIT_TOOL = "submit_report"
# Tokens each message costs besides its text, and the phrases of the servers' errors for a
# request longer than their context (src/runner/context.rs: the same estimate and phrases).
PER_MESSAGE = 4
CONTEXT_ERRORS = (
    "context_length_exceeded",
    "maximum context length",
    "exceed_context_size",
    "exceeds the available context size",
    "exceeds the maximum allowed length",
    "prompt is too long",
    "range of input length",
)
MAX_ATTEMPTS = 5


def estimate(text: str) -> int:
    """Tokens a text is estimated to take: a non-ASCII character or a digit as one, other
    ASCII as one per three characters (src/runner/context.rs)."""
    ascii_chars = sum(1 for c in text if ord(c) < 128 and not c.isdigit())
    return (len(text) - ascii_chars) + -(-ascii_chars // 3)


def fits(estimated: int, budget: int) -> bool:
    """Whether a conversation estimated at `estimated` fits `budget`, a tenth kept for the
    chat template (src/runner/context.rs, fits)."""
    return estimated + estimated // 10 <= budget


def context_advice(context_tokens: int, max_tokens: int) -> str:
    return (
        f"AI.ContextTokens is {context_tokens} with AI.MaxTokens {max_tokens} kept for the answer; "
        "set AI.ContextTokens to the context the server has (llama.cpp --ctx-size per slot, "
        "vLLM/SGLang --max-model-len / --context-length, Ollama OLLAMA_CONTEXT_LENGTH), raise the "
        "server's, or lower AI.MaxTokens"
    )


def _block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return estimate(block)
    kind = block.get("type")
    if kind == "text":
        return estimate(block.get("text") or "")
    if kind == "tool_use":
        return estimate(block.get("name") or "") + estimate(json.dumps(block.get("input"), separators=(",", ":")))
    if kind == "tool_result":
        return PER_MESSAGE + estimate(block.get("content") or "")
    return estimate(json.dumps(block, ensure_ascii=False))


def message_tokens(message: dict[str, Any]) -> int:
    """Tokens a message of either wire format is estimated to take."""
    content = message.get("content")
    blocks = content if isinstance(content, list) else [content or ""]
    total = PER_MESSAGE + sum(_block_tokens(b) for b in blocks)
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        total += estimate(function.get("name") or "") + estimate(function.get("arguments") or "")
    return total


def fit_context(messages: list[dict[str, Any]], tools: list[dict[str, Any]], budget: int) -> list[str]:
    """Fits the conversation into `budget` tokens by replacing tool outputs with a note,
    oldest first; the ids of the calls whose output was removed. Raises when nothing is
    left to remove (src/runner/native/mod.rs, fit_context, does the same)."""
    total = sum(estimate(json.dumps(t, ensure_ascii=False, separators=(",", ":"))) for t in tools)
    total += sum(message_tokens(m) for m in messages)
    removed: list[str] = []
    note = estimate(TRIMMED_NOTE)
    outputs: list[tuple[dict[str, Any], str]] = []  # (the dict holding "content", the call id)
    for m in messages:
        if m.get("role") == "tool":
            outputs.append((m, m.get("tool_call_id", "")))
        elif isinstance(m.get("content"), list):
            outputs.extend((b, b.get("tool_use_id", "")) for b in m["content"] if b.get("type") == "tool_result")
    for holder, call_id in outputs:
        if fits(total, budget):
            break
        size = estimate(holder.get("content") or "")
        if holder.get("content") == TRIMMED_NOTE or size <= note:
            continue
        holder["content"] = TRIMMED_NOTE
        total -= size - note
        removed.append(call_id)
    if not fits(total, budget):
        raise ContextExceeded(total + total // 10)
    return removed


class ContextExceeded(Exception):
    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


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


PR_SET_DUMPABLE = 4


def make_private() -> None:
    """Non-dumpable: /proc/<pid>/environ, mem and fds become root's, so other processes of
    the same user (another diagnosis, an MCP server) cannot read this one's secrets. Kept
    across fork, reset by exec. Linux only; elsewhere nothing happens."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


# Started in place of `prometheus-mcp-server`: the same server, run in this non-dumpable
# process (no exec, which would make it dumpable again), so its PROMETHEUS_URL is private.
PRIVATE_PROMETHEUS_MCP = (
    "import ctypes, runpy, sys\n"
    "ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\n"
    "sys.argv = ['prometheus-mcp-server']\n"
    "runpy.run_module('prometheus_mcp_server.main', run_name='__main__')\n"
)


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.3f}s] {redact(message)}", flush=True)


class Usage:
    """Tokens, steps and tool calls of this diagnosis, reported on failure too."""

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.steps = 0
        self.tool_calls = 0
        self.cached_tool_calls = 0
        self.refused_tool_calls = 0
        self.withheld_tool_results = 0

    def report(self) -> None:
        usage = {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "steps": self.steps,
            "toolCalls": self.tool_calls,
            "cachedToolCalls": self.cached_tool_calls,
            "refusedToolCalls": self.refused_tool_calls,
            "withheldToolResults": self.withheld_tool_results,
        }
        log(f"DD-USAGE {json.dumps(usage)}")


def unreadable(text: str) -> str | None:
    """Why the text holds no report the service can read (as written or leniently), or
    None when it holds one: the service's extraction (src/runner/extract.rs) decides the
    same way."""
    text = lenient.without_reasoning(text)
    if not text.strip():
        return "the model's answer is empty"
    if holds_report(text):
        return None
    trimmed = text.rstrip()
    trimmed = trimmed[:-3].rstrip() if trimmed.endswith("```") else trimmed
    start, candidates, first_problem = trimmed.find("{"), 0, None
    while start != -1 and candidates < 8:
        candidates += 1
        read = lenient.read_object(trimmed[start:])
        if read:
            problem = shape_problem(read[0])
            if problem is None:
                return None
            first_problem = first_problem or problem
        start = trimmed.find("{", start + 1)
    if first_problem:
        return f"the model's answer has JSON but not a report: {first_problem}"
    return "the model's answer has no JSON object"


SECTIONS = ("【问题概述】", "【根因分析】", "【影响范围】", "【解决方案】")


def shape_problem(value: Any) -> str | None:
    """What keeps `value` from being the report `{"promQL": [str], "content": str of the
    four sections}`, in the words of src/runner/extract.rs; None when it is one."""
    if not isinstance(value, dict):
        return "not an object"
    queries, content = value.get("promQL"), value.get("content")
    if "promQL" not in value:
        return 'no "promQL" field'
    if not isinstance(queries, list):
        return "promQL is not an array"
    if not all(isinstance(q, str) for q in queries):
        return "promQL has a non-string item"
    if "content" not in value:
        return 'no "content" field'
    if isinstance(content, dict):
        content, problem = written_out(content)
        if problem:
            return problem
    if not isinstance(content, str):
        return "content is not a string"
    if not content.strip():
        return "content is empty"
    missing = [section for section in SECTIONS if section not in content]
    if missing:
        return f"content lacks the sections {''.join(missing)}"
    empty = empty_sections(content)
    if empty:
        return f"the sections {''.join(empty)} say nothing (the format's placeholder)"
    return None


def written_out(sections: dict[str, Any]) -> tuple[str, str | None]:
    """The design's content string from the sections as the report's schema asks for them
    (`{"【问题概述】": "…", …}`), in the design's order; or what is wrong with them
    (src/runner/extract.rs writes them out the same way)."""
    parts = []
    for heading in SECTIONS:
        if heading not in sections:
            continue
        text = sections[heading]
        if not isinstance(text, str):
            return "", f"content's {heading} is not a string"
        text = text.strip()
        text = text[len(heading):].lstrip() if text.startswith(heading) else text
        parts.append(f"{heading}\n{text}")
    if not parts:
        return "", "content has none of the sections as keys"
    return "\n".join(parts), None


def empty_sections(content: str) -> list[str]:
    """The sections whose text holds no letter, digit or ideograph: a small model copies the
    format's `【根因分析】…` and has written no report (src/runner/extract.rs)."""
    empty = []
    for section in SECTIONS:
        at = content.find(section)
        if at < 0:
            continue
        body = content[at + len(section):]
        ends = [i for i in (body.find(s) for s in SECTIONS) if i >= 0]
        if not any(c.isalnum() for c in body[: min(ends, default=len(body))]):
            empty.append(section)
    return empty


def report_shape(value: Any) -> bool:
    """Whether `value` is the report (see shape_problem)."""
    return shape_problem(value) is None


def holds_report(text: str) -> bool:
    """Whether the text holds the report object (`{"promQL": [str], "content": str}`)
    anywhere, as the service's extraction would find it."""
    decoder = json.JSONDecoder()
    start, attempts = text.find("{"), 0
    while start != -1 and attempts < 2000:
        attempts += 1
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            if report_shape(value):
                return True
            start = text.find("{", end)
        else:
            start = text.find("{", start + 1)
    return False


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """The server's `Retry-After` (delay-seconds or an HTTP date), at most 60 s, else
    exponential backoff from 0.5 s, at most 8 s."""
    if retry_after:
        value = retry_after.strip()
        try:
            seconds = float(value)
            if seconds >= 0 and seconds == seconds and seconds != float("inf"):
                return min(seconds, 60.0)
        except ValueError:
            try:
                at = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                at = None
            if at is not None:
                return max(0.0, min(at.timestamp() - time.time(), 60.0))
    return 0.5 * (2 ** min(attempt, 4))


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


class Turn:
    """One model answer: the message to keep in the conversation (None when it has no
    content to send back), its text, its tool calls, and whether it was cut off."""

    def __init__(self, message: dict[str, Any] | None, text: str, calls: list, cut_off: bool) -> None:
        self.message = message
        self.text = text
        self.calls = calls
        self.cut_off = cut_off


def merge_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic: consecutive messages of one role become one (as the API itself would
    merge them), with string content as a text block; so a note sent after tool results
    comes after the `tool_result` blocks, in the same user message."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"].extend(blocks)
        else:
            merged.append({"role": message["role"], "content": blocks})
    return merged


class LLM:
    """One chat turn at a time, in either wire format, with the provider profile's token
    limit and extra fields."""

    def __init__(self, args: argparse.Namespace, api_key: str, usage: Usage) -> None:
        self.protocol = detect_protocol(args.base_url, args.protocol)
        self.url = endpoint(args.base_url, self.protocol)
        self.where = f"{urlsplit(self.url).scheme}://{urlsplit(self.url).netloc}{urlsplit(self.url).path}"
        self.model = args.model
        self.max_tokens = args.max_tokens
        self.max_tokens_field = "max_tokens" if self.protocol == "anthropic" else args.max_tokens_field
        self.extra = args.extra_body
        self.structured = args.structured
        self.report_schema = args.report_schema
        self.omit_forbidden_tools = args.omit_forbidden_tools
        self.context_tokens = args.context_tokens
        self.request_timeout = args.request_timeout
        self.deadline = _STARTED + args.deadline
        headers = {"content-type": "application/json"}
        if self.protocol == "anthropic":
            headers["x-api-key"] = api_key
            headers["anthropic-version"] = "2023-06-01"
        else:
            headers["authorization"] = f"Bearer {api_key}"
        self.client = httpx.AsyncClient(headers=headers, timeout=args.request_timeout)
        self.usage = usage

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

    def body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], forbid_tools: bool) -> dict:
        anthropic = self.protocol == "anthropic"
        body: dict[str, Any] = {"model": self.model, "messages": merge_turns(messages) if anthropic else messages}
        if tools:
            # Tools stay declared: Anthropic rejects a conversation holding tool blocks
            # without them. The last step forbids their use instead.
            body["tools"] = tools
            if forbid_tools:
                body["tool_choice"] = {"type": "none"} if anthropic else "none"
        if forbid_tools:
            self.final_answer_form(body)
        body[self.max_tokens_field] = self.max_tokens
        for key, value in self.extra.items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    def final_answer_form(self, body: dict[str, Any]) -> None:
        """A turn that must answer asks for the report in the provider's structured form,
        and a server that ignores tool_choice is not offered the tools at all (the native
        runner's final_answer_form)."""
        if self.omit_forbidden_tools:
            body.pop("tools", None)
            body.pop("tool_choice", None)
        if self.structured == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "diagnosis_report", "strict": True, "schema": self.report_schema},
            }
        elif self.structured == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif self.structured == "submit_tool":
            submit = {
                "name": SUBMIT_TOOL,
                "description": "Submit the diagnosis report: the PromQL of the anomalous metrics and the four-section content.",
                "input_schema": self.report_schema,
            }
            body["tools"] = [*body.get("tools", []), submit]
            body["tool_choice"] = {"type": "tool", "name": SUBMIT_TOOL}

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sends one request, retrying 429, 5xx (529 included), timeouts and connection
        errors with backoff, never past the deadline."""
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                response = await self.client.post(self.url, json=body)
            except httpx.TimeoutException as exc:
                error = DiagnosisError("llm_timeout", f"AI call to {self.where} timed out ({type(exc).__name__})")
            except httpx.HTTPError as exc:
                error = DiagnosisError("llm_unreachable", f"AI endpoint {self.where} unreachable: {exc}")
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise DiagnosisError("llm_bad_response", f"AI endpoint {self.where} answered non-JSON") from exc
                detail = " ".join(redact(response.text).split())[:300]
                if 400 <= response.status_code < 500 and any(p in response.text.lower() for p in CONTEXT_ERRORS):
                    raise DiagnosisError(
                        "context_exceeded",
                        f"the request is longer than the AI server's context (status {response.status_code} at "
                        f"{self.where}: {detail}); {context_advice(self.context_tokens, self.max_tokens)}",
                    )
                error = DiagnosisError(
                    "llm_status", f"AI call failed with status {response.status_code} at {self.where}: {detail}"
                )
                if response.status_code != 429 and response.status_code < 500:
                    raise error
                retry_after = response.headers.get("retry-after")
            wait = retry_delay(attempt, retry_after)
            # A request that timed out will likely time out again: retry it only if a
            # whole request fits before the deadline, so the reason stays "timed out".
            needed = wait + (self.request_timeout if error.kind == "llm_timeout" else 0)
            if attempt >= MAX_ATTEMPTS or time.monotonic() + needed >= self.deadline:
                raise error
            log(f"retrying the AI call in {wait:.1f}s (attempt {attempt}): {error.message}")
            await asyncio.sleep(wait)

    async def turn(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], forbid_tools: bool) -> Turn:
        data = await self.post(self.body(messages, tools, forbid_tools))
        self.usage.steps += 1
        if self.protocol == "anthropic":
            return self._anthropic_turn(data)
        return self._openai_turn(data)

    def _anthropic_turn(self, data: dict[str, Any]) -> Turn:
        usage = data.get("usage") or {}
        self.usage.input_tokens += int(usage.get("input_tokens") or 0)
        self.usage.output_tokens += int(usage.get("output_tokens") or 0)
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise DiagnosisError("llm_bad_response", "AI answer has no content blocks")
        cut_off = data.get("stop_reason") == "max_tokens"
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        # The report, submitted through the tool the last step forces.
        submitted = [b for b in blocks if b.get("type") == "tool_use" and b.get("name") == SUBMIT_TOOL]
        if submitted:
            text = json.dumps(submitted[0].get("input"), ensure_ascii=False)
            blocks = [{"type": "text", "text": text}]
        calls = [] if cut_off else [
            (b.get("id", ""), b.get("name", ""), b.get("input") or {}) for b in blocks if b.get("type") == "tool_use"
        ]
        # Empty text blocks are rejected when sent back; the tool calls of a cut answer
        # may be cut too, so only its text is kept.
        kept = [
            b
            for b in blocks
            if not (b.get("type") == "text" and not (b.get("text") or "").strip())
            and not (cut_off and b.get("type") == "tool_use")
        ]
        return Turn({"role": "assistant", "content": kept} if kept else None, text, calls, cut_off)

    def _openai_turn(self, data: dict[str, Any]) -> Turn:
        usage = data.get("usage") or {}
        self.usage.input_tokens += int(usage.get("prompt_tokens") or 0)
        self.usage.output_tokens += int(usage.get("completion_tokens") or 0)
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise DiagnosisError("llm_bad_response", "AI answer has no choices[0].message") from exc
        cut_off = choice.get("finish_reason") == "length"
        # Reasoning is the model's own: never in the answer nor in the next prompt.
        text = lenient.without_reasoning(message.get("content") or "")
        tool_calls = [] if cut_off else (message.get("tool_calls") or [])
        calls = []
        for call in tool_calls:
            function = call.get("function") or {}
            raw = function.get("arguments") or "{}"
            # Arguments that are no object, even read leniently, stay as written: the loop
            # answers the call with an error instead of running it.
            arguments: Any = raw
            if isinstance(raw, dict):
                arguments = raw
            elif isinstance(raw, str):
                try:
                    arguments = json.loads(raw)
                except ValueError:
                    read = lenient.read_object(raw.strip())
                    arguments = read[0] if read else raw
            calls.append((call.get("id", ""), function.get("name", ""), arguments))
        if not text.strip() and not tool_calls:
            return Turn(None, text, calls, cut_off)
        # An assistant message's tool calls are its content: no text is sent as null.
        assistant: dict[str, Any] = {"role": "assistant", "content": text if text.strip() else None}
        if tool_calls:
            assistant["tool_calls"] = tool_calls
        return Turn(assistant, text, calls, cut_off)

    def calls_message(self, calls: list[tuple[str, str, dict]]) -> dict[str, Any]:
        """The assistant message of tool calls the model wrote as text, as the API carries
        calls, so that the next turn sees its calls answered."""
        if self.protocol == "anthropic":
            return {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in calls],
            }
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a, ensure_ascii=False)}}
                for i, n, a in calls
            ],
        }

    def tool_results(self, results: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
        """Messages that carry the results of one turn's tool calls back to the model."""
        if self.protocol == "anthropic":
            return [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": call_id,
                            "content": text if text.strip() else NO_OUTPUT,
                            "is_error": is_error,
                        }
                        for call_id, text, is_error in results
                    ],
                }
            ]
        return [
            {"role": "tool", "tool_call_id": call_id, "content": text if text.strip() else NO_OUTPUT}
            for call_id, text, _ in results
        ]


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


RANGE_TOOL = "execute_range_query"


def _number(x: float) -> str:
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _time(unix: float) -> str:
    return datetime.datetime.fromtimestamp(math.floor(unix), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _labels(metric: dict) -> str:
    name = metric.get("__name__")
    pairs = sorted(
        (k, v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))
        for k, v in metric.items()
        if k != "__name__"
    )
    return (name if isinstance(name, str) else "") + "{" + ", ".join(f'{k}="{v}"' for k, v in pairs) + "}"


def _series_line(series: Any) -> str | None:
    if not isinstance(series, dict):
        return None
    metric, points = series.get("metric"), series.get("values")
    if not isinstance(metric, dict) or not isinstance(points, list):
        return None
    parsed = []
    for p in points:
        if not isinstance(p, list) or len(p) < 2:
            continue
        t, v = p[0], p[1]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not isinstance(v, str):
            continue
        try:
            value = float(v)
        except ValueError:
            value = None
        parsed.append((float(t), value if value is not None and math.isfinite(value) else None))
    line = f"- {_labels(metric)}: {len(parsed)} points"
    if parsed:
        line += f" {_time(parsed[0][0])}..{_time(parsed[-1][0])}"
    finite = [(t, v) for t, v in parsed if v is not None]
    if finite:
        values = [v for _, v in finite]
        total = 0.0
        for v in values:  # in order, as the native runner adds them
            total += v
        line += (
            f"; min {_number(min(values))} mean {_number(total / len(values))} "
            f"max {_number(max(values))} last {_number(values[-1])}"
        )
    largest = None
    for (_, before), (at, after) in zip(finite, finite[1:]):
        change = after - before
        if largest is None or abs(change) > abs(largest[0]):
            largest = (change, at)
    if largest is None:
        line += "; largest change none"
    else:
        sign = "+" if largest[0] > 0 else ""
        line += f"; largest change {sign}{_number(largest[0])} at {_time(largest[1])}"
    return line


def summarise_range(text: str) -> str | None:
    """A range query result as one line per series; the specification is the service's
    (src/runner/summary.rs), and both must print the same text for the same input."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("resultType") != "matrix" or not isinstance(value.get("result"), list):
        return None
    result = value["result"]
    points = sum(len(s["values"]) for s in result if isinstance(s, dict) and isinstance(s.get("values"), list))
    lines = [f"range query summarised by deploy-diagnosis: {len(result)} series, {points} points (raw values omitted)"]
    lines.extend(line for line in map(_series_line, result) if line is not None)
    return "\n".join(lines)


class Tools:
    """The MCP sessions of one diagnosis and a router from tool name to session."""

    def __init__(self, stack: AsyncExitStack, result_cap: int) -> None:
        self.stack = stack
        self.result_cap = result_cap
        self.routes: dict[str, ClientSession] = {}
        self.tools: list[Any] = []
        # Tools that read one repository, and the repositories this run admits.
        self.repo_scoped: set[str] = set()
        self.repos: set[str] = set()

    async def add_stdio(
        self,
        label: str,
        command: list[str],
        env: dict[str, str],
        allowed: set[str] | None = None,
        repo_scoped: bool = False,
    ) -> None:
        params = StdioServerParameters(command=command[0], args=command[1:], env=env)
        read, write = await self.stack.enter_async_context(stdio_client(params))
        await self._add(label, read, write, allowed, repo_scoped)

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

    async def _add(
        self, label: str, read: Any, write: Any, allowed: set[str] | None = None, repo_scoped: bool = False
    ) -> None:
        session = await self.stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        listed = await session.list_tools()
        withheld = [t.name for t in listed.tools if allowed is not None and t.name not in allowed]
        if withheld:
            log(f"{label}: {len(withheld)} tools withheld (not in the read-only allowlist)")
        for tool in listed.tools:
            if tool.name in withheld:
                continue
            if repo_scoped:
                self.repo_scoped.add(tool.name)
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
        if name in self.repo_scoped:
            asked = f"{arguments.get('owner', '')}/{arguments.get('repo', '')}".lower()
            if asked not in self.repos:
                log(f"GitHub tool call {name} refused: repository not admitted")
                if not self.repos:
                    return "refused: no repository may be read through GitHub tools in this diagnosis", True
                return (
                    f"refused: GitHub tools may only read {', '.join(sorted(self.repos))} in this "
                    f"diagnosis, not {asked!r}",
                    True,
                )
        try:
            result = await session.call_tool(name, arguments)
        except Exception as exc:  # a failed tool call is reported to the model, not fatal
            return f"tool {name} failed: {type(exc).__name__}: {exc}", True
        text, is_error = result_text(result), bool(getattr(result, "is_error", False))
        if name == RANGE_TOOL and not is_error:
            text = summarise_range(text) or text
        return cap(text, self.result_cap), is_error


def prometheus_mcp_command(configured: str) -> list[str]:
    if configured:
        return shlex.split(configured)
    # The server installed beside this interpreter (the runner's virtualenv), run in a
    # private process of that interpreter.
    return [sys.executable, "-c", PRIVATE_PROMETHEUS_MCP]


async def check_prometheus(url: str) -> None:
    """Fail fast, with the reason, when Prometheus cannot be reached at all."""
    parts = urlsplit(url)
    auth = None
    if parts.username is not None:
        # httpx takes the credentials apart from the URL; the URL it is given has none.
        auth = (unquote(parts.username), unquote(parts.password or ""))
        url = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
    probe = url.rstrip("/") + "/api/v1/status/buildinfo"
    try:
        async with httpx.AsyncClient(timeout=5.0, auth=auth) as client:
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


async def open_tools(args: argparse.Namespace, secrets: Secrets, stack: AsyncExitStack) -> Tools:
    tools = Tools(stack, args.tool_result_max_chars)
    await check_prometheus(secrets.prometheus_url)
    if args.prometheus_mcp_url:
        try:
            await tools.add_http("prometheus-mcp", args.prometheus_mcp_url)
        except Exception as exc:
            raise DiagnosisError(
                "mcp_failed", f"Prometheus MCP server at {args.prometheus_mcp_url} unreachable: {exc}"
            ) from exc
    else:
        env = {
            "PROMETHEUS_URL": secrets.prometheus_url,
            "PROMETHEUS_MCP_SERVER_TRANSPORT": "stdio",
            **run_labels(),
        }
        try:
            await tools.add_stdio("prometheus-mcp", prometheus_mcp_command(args.prometheus_mcp_command), env)
        except Exception as exc:
            raise DiagnosisError("mcp_failed", f"Prometheus MCP server could not start: {exc}") from exc

    token = secrets.github_token
    if token:
        command = shlex.split(args.github_mcp_command)
        if not command or shutil.which(command[0]) is None:
            log(f"GitHub MCP server {args.github_mcp_command!r} not found; GitHub analysis disabled")
        else:
            env = {
                "GITHUB_PERSONAL_ACCESS_TOKEN": token,
                "GITHUB_TOOLSETS": args.github_toolsets,
                # The server's read-only mode, and our own allowlist of read tools: the
                # model reads alert text and PR bodies, so it never gets a tool that writes.
                "GITHUB_READ_ONLY": "1",
                **run_labels(),
            }
            allowed = {t for t in args.github_tools.split(",") if t}
            tools.repos = {r.lower() for r in args.github_repos.split(",") if r}
            try:
                await tools.add_stdio("github-mcp", command, env, allowed=allowed, repo_scoped=True)
            except Exception as exc:  # GitHub is optional: go on with Prometheus alone
                log(f"GitHub MCP server failed to start ({type(exc).__name__}); GitHub analysis disabled")
    return tools


# ---------------------------------------------------------------------------------------
# The agent loop


async def diagnose(args: argparse.Namespace, secrets: Secrets, prompt: str, usage: Usage) -> str:
    llm = LLM(args, secrets.ai_key, usage)
    extra = " ".join(f"{k}={json.dumps(v)}" for k, v in llm.extra.items())
    log(
        f"model {args.model} via {llm.protocol} at {urlsplit(llm.url).netloc}, "
        f"{llm.max_tokens_field} {llm.max_tokens}" + (f", extra {extra}" if extra else "")
    )
    async with AsyncExitStack() as stack:
        stack.push_async_callback(llm.aclose)
        tools = await open_tools(args, secrets, stack)
        specs = llm.tool_specs(tools.tools)
        messages: list[dict[str, Any]] = [llm.user_message(prompt)]
        answered: set[str] = set()  # the calls run so far, by name and arguments
        call_keys: dict[str, str] = {}  # which call each output answered, for fit_context
        followed_up = False
        asked_for_format = False  # whether an answer with no readable report got its follow-up
        spent = 0  # characters of tool output shown so far
        step = 0
        while True:
            step += 1
            # The last step, and a follow-up (to a cut-off answer, or to one with no readable
            # report), must answer in text.
            last = step >= args.max_turns or followed_up or asked_for_format
            try:
                removed = fit_context(messages, specs, max(0, args.context_tokens - args.max_tokens))
            except ContextExceeded as exc:
                raise DiagnosisError(
                    "context_exceeded",
                    f"the conversation needs about {exc.needed} tokens with no tool output left to remove, more than "
                    f"the {max(0, args.context_tokens - args.max_tokens)} the context leaves beside the answer; "
                    f"{context_advice(args.context_tokens, args.max_tokens)}",
                ) from None
            if removed:
                log(f"step {step}: {len(removed)} earlier tool output(s) removed to fit AI.ContextTokens ({args.context_tokens})")
                for call_id in removed:
                    answered.discard(call_keys.pop(call_id, ""))
            turn = await llm.turn(messages, specs, forbid_tools=last)
            if turn.cut_off:
                if holds_report(turn.text):
                    log(f"answer after {step} step(s), past the token limit but whole")
                    return turn.text
                if followed_up:
                    # Cut again, but every section is there: the report is kept, closed where
                    # it was cut (the service says so on it), rather than lost.
                    if unreadable(turn.text) is None:
                        log(
                            f"answer after {step} step(s) cut off again at AI.MaxTokens ({args.max_tokens}), "
                            "but it reads as a report with its four sections: kept"
                        )
                        return turn.text
                    raise DiagnosisError(
                        "answer_cut_off",
                        f"answer cut off at AI.MaxTokens ({args.max_tokens}), also when asked for a shorter one; raise it",
                    )
                log(f"step {step}: answer cut off at AI.MaxTokens ({args.max_tokens}); asking for the report within the limit")
                followed_up = True
                if turn.message is not None:
                    messages.append(turn.message)
                messages.append(llm.user_message(CUT_OFF_NOTE))
                continue
            if not turn.calls and not last:
                written = lenient.written_calls(turn.text, set(tools.routes))
                if written and not holds_report(turn.text):
                    log(f"step {step}: {len(written)} tool call(s) written as text, run as calls")
                    turn.calls = [(f"text_{step}_{i}", name, arguments) for i, (name, arguments) in enumerate(written)]
                    turn.message = llm.calls_message(turn.calls)
            if not turn.calls:
                why = unreadable(turn.text)
                if why and not asked_for_format:
                    log(f"step {step}: the answer holds no readable report ({why}); asking once for the JSON object alone")
                    asked_for_format = True
                    messages.append({"role": "assistant", "content": turn.text or NO_OUTPUT})
                    messages.append(llm.user_message(FORMAT_NOTE.replace("{why}", why)))
                    continue
                log(f"answer after {step} step(s)")
                return turn.text
            if last:
                if holds_report(turn.text):
                    log(f"answer after {step} step(s); the model also asked for tools, ignored")
                    return turn.text
                raise DiagnosisError(
                    "tools_at_step_limit",
                    f"the model asked for more tools on its last step (AI.MaxTurns = {args.max_turns}) instead of "
                    "answering, although tool use was switched off for that step; raise AI.MaxTurns, or use a "
                    'model or server that honours tool_choice "none"',
                )
            messages.append(turn.message)
            results = []
            ran = 0
            this_turn: dict[str, tuple[str, bool]] = {}
            for call_id, name, arguments in turn.calls:
                key = f"{name}\0{json.dumps(arguments, sort_keys=True, ensure_ascii=False)}"
                if key in this_turn:
                    # The same call twice in one turn: it runs once and both get its result.
                    usage.cached_tool_calls += 1
                    results.append((call_id, *this_turn[key]))
                    continue
                # What a real model gets wrong is answered, not run: a call it made before
                # (small models loop on one), a tool it was not given, arguments that are
                # no JSON object.
                problem = call_problem(name, arguments, key in answered, tools)
                if problem:
                    log(f"step {step}: tool {name} not run: {problem}")
                    this_turn[key] = (problem, True)
                    results.append((call_id, problem, True))
                    continue
                # Every call needs an answer; past the per-turn cap it is "not run".
                if ran >= args.max_tool_calls_per_turn:
                    usage.refused_tool_calls += 1
                    results.append((
                        call_id,
                        f"not run: at most {args.max_tool_calls_per_turn} tool calls a turn "
                        "(AI.MaxToolCallsPerTurn); ask again for the ones that matter most",
                        True,
                    ))
                    continue
                ran += 1
                log(f"step {step}: tool {name} {json.dumps(arguments, ensure_ascii=False)[:200]}")
                output, is_error = await tools.call(name, arguments)
                usage.tool_calls += 1
                if is_error:
                    log(f"step {step}: tool {name} returned an error: {output[:200]}")
                if spent + len(output) > args.tool_result_budget_chars:
                    usage.withheld_tool_results += 1
                    output = (
                        "not shown: this diagnosis's tool output budget (AI.ToolResultBudgetChars = "
                        f"{args.tool_result_budget_chars}) is spent; answer with what you have"
                    )
                else:
                    spent += len(output)
                answered.add(key)
                call_keys[call_id] = key
                this_turn[key] = (output, is_error)
                results.append((call_id, output, is_error))
            if usage.refused_tool_calls:
                log(f"step {step}: tool calls past AI.MaxToolCallsPerTurn not run")
            messages.extend(llm.tool_results(results))
            if step + 1 == args.max_turns:
                messages.append(llm.user_message(LAST_STEP_NOTE))


def call_problem(name: str, arguments: Any, answered_before: bool, tools: Tools) -> str | None:
    """Why a call is answered with an error instead of being run; None: run it."""
    if answered_before:
        return (
            f"already answered above: you called {name} with these arguments in an earlier step; "
            "use that result, call another tool or other arguments, or write the report"
        )
    if name not in tools.routes:
        return f"no tool named {json.dumps(name)}; the tools are: {', '.join(t.name for t in tools.tools)}"
    if not isinstance(arguments, dict):
        shown = json.dumps(arguments, ensure_ascii=False)[:200]
        return (
            f"the arguments are not a JSON object ({shown}); call {name} again with an object that "
            "matches its input schema"
        )
    return None


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("not a JSON object")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True, help="AI API base URL (e.g. https://api.openai.com/v1)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--protocol", default="auto", choices=["auto", "anthropic", "openai"])
    parser.add_argument("--prometheus-mcp-command", default="", help="default: prometheus-mcp-server")
    parser.add_argument("--prometheus-mcp-url", default="", help="a running server's streamable-HTTP URL")
    parser.add_argument("--github-mcp-command", default="github-mcp-server stdio")
    parser.add_argument("--github-toolsets", default="repos,issues,pull_requests,releases")
    parser.add_argument(
        "--github-tools",
        default="get_release_by_tag,get_latest_release,pull_request_read",
        help="the GitHub MCP tools offered to the model (read tools only)",
    )
    parser.add_argument("--github-repos", default="", help="owner/name the GitHub tools may read in this run")
    parser.add_argument("--max-turns", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument(
        "--max-tokens-field",
        default="max_tokens",
        choices=["max_tokens", "max_completion_tokens"],
        help="the name of the token limit (OpenAI-compatible; Anthropic always uses max_tokens)",
    )
    parser.add_argument(
        "--extra-body",
        type=json_object,
        default={},
        help="a JSON object merged last into every request body; a null value removes a key",
    )
    parser.add_argument(
        "--structured",
        default="instruction",
        choices=["instruction", "json_schema", "json_object", "submit_tool"],
        help="how the final answer is asked for (the provider profile's)",
    )
    parser.add_argument("--report-schema", type=json_object, default={}, help="the report's JSON schema")
    parser.add_argument(
        "--omit-forbidden-tools", action="store_true", help="forbid tools by leaving them out (tool_choice ignored)"
    )
    parser.add_argument("--context-tokens", type=int, default=32768, help="tokens of context the AI server has")
    parser.add_argument("--tool-result-max-chars", type=int, default=8000)
    parser.add_argument("--max-tool-calls-per-turn", type=int, default=8)
    parser.add_argument("--tool-result-budget-chars", type=int, default=120000)
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds per AI request")
    parser.add_argument(
        "--deadline", type=float, default=0.0, help="seconds for the whole diagnosis (default: 2 x --request-timeout)"
    )
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process dies")
    parser.add_argument("--run-id", default="", help="marks this run's process, for kill_run.py")
    parser.add_argument(
        "--prompt-bytes",
        type=int,
        default=-1,
        help="read exactly this many bytes of prompt from stdin (when stdin is not closed, as over docker exec)",
    )
    args = parser.parse_args(argv)
    if args.max_turns < 1:
        parser.error("--max-turns must be at least 1")
    if args.deadline <= 0:
        args.deadline = 2 * args.request_timeout
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


class Secrets:
    """What the service sends on stdin's first line."""

    def __init__(self, line: bytes) -> None:
        try:
            given = json.loads(line)
        except ValueError:
            given = None
        if not isinstance(given, dict) or not isinstance(given.get("prometheusUrl"), str):
            raise ValueError("stdin's first line is not the secrets object")
        self.ai_key = str(given.get("aiKey") or "")
        self.github_token = str(given.get("githubToken") or "")
        self.prometheus_url = given["prometheusUrl"]
        parts = urlsplit(self.prometheus_url)
        userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
        _SECRETS.extend(s for s in (self.ai_key, self.github_token, userinfo, parts.password) if s)


def main() -> int:
    make_private()
    args = parse_args(sys.argv[1:])
    try:
        secrets = Secrets(sys.stdin.buffer.readline())
    except ValueError as exc:
        print(SPLIT)
        print(json.dumps({"error": {"kind": "bad_input", "message": str(exc)}}))
        return 2
    if args.prompt_bytes >= 0:
        prompt = read_exactly(sys.stdin.buffer, args.prompt_bytes).decode("utf-8", errors="replace")
    else:
        prompt = sys.stdin.read()
    if not prompt.strip():
        print(SPLIT)
        print(json.dumps({"error": {"kind": "bad_input", "message": "empty prompt on stdin"}}))
        return 2

    usage = Usage()
    loop = asyncio.new_event_loop()
    task = loop.create_task(diagnose(args, secrets, prompt, usage))
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
        usage.report()
        return report_failure(unwrap(raised))
    finally:
        watcher.cancel()
        loop.run_until_complete(asyncio.gather(watcher, return_exceptions=True))
        loop.close()
    usage.report()
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
