"""Unit tests of the Python runner's pure parts (run by scripts/test with the runner's venv).

The runner as a whole (MCP, Prometheus, both wire formats) is exercised by the Rust
integration tests in tests/api/.
"""

import asyncio
import email.utils
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "docker", "runner"))

import diagnosis_runner as runner  # noqa: E402
import lenient  # noqa: E402


class ProtocolAndEndpoint(unittest.TestCase):
    def test_the_designs_providers_map_to_their_endpoints(self):
        cases = [
            ("https://api.openai.com/v1", "openai", "https://api.openai.com/v1/chat/completions"),
            ("https://api.anthropic.com/v1", "anthropic", "https://api.anthropic.com/v1/messages"),
            ("https://api.anthropic.com", "anthropic", "https://api.anthropic.com/v1/messages"),
            (
                "https://dashscope.aliyuncs.com/compatible-mode/v1",
                "openai",
                "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions",
            ),
            ("https://api-inference.modelscope.cn", "openai", "https://api-inference.modelscope.cn/v1/chat/completions"),
            ("http://localhost:11434/v1/", "openai", "http://localhost:11434/v1/chat/completions"),
        ]
        for base, protocol, url in cases:
            with self.subTest(base=base):
                self.assertEqual(runner.detect_protocol(base, "auto"), protocol)
                self.assertEqual(runner.endpoint(base, protocol), url)

    def test_configuration_overrides_detection(self):
        self.assertEqual(runner.detect_protocol("https://proxy.example/v1", "anthropic"), "anthropic")
        self.assertEqual(runner.detect_protocol("https://api.anthropic.com/v1", "openai"), "openai")


def llm(protocol, **flags):
    args = runner.parse_args(
        ["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--protocol", protocol]
        + [item for k, v in flags.items() for item in (f"--{k.replace('_', '-')}", v)]
    )
    return runner.LLM(args, "key", runner.Usage())


class Lenient(unittest.TestCase):
    """The same cases as src/runner/lenient.rs and src/runner/calls.rs."""

    def test_what_real_models_write_is_read_as_meant(self):
        text = (
            '{\n  "promQL": [\n    "rate(node_cpu_seconds_total{mode="idle",instance="web-1"}[5m])",\n    "up",\n  ],\n'
            '  "content": "【问题概述】\nCPU 饱和\n【根因分析】\nx"\n}'
        )
        value, repairs = lenient.read_object(text)
        self.assertEqual(
            value,
            {
                "promQL": ['rate(node_cpu_seconds_total{mode="idle",instance="web-1"}[5m])', "up"],
                "content": "【问题概述】\nCPU 饱和\n【根因分析】\nx",
            },
        )
        self.assertEqual(repairs, ["control_character", "inner_quote", "trailing_comma"])
        value, repairs = lenient.read_object('{"promQL": ["up"], "content": "cut')
        self.assertEqual(value, {"promQL": ["up"], "content": "cut"})
        self.assertEqual(repairs, ["unclosed"])
        self.assertIsNone(lenient.read_object("{promQL: []}"))
        self.assertIsNone(lenient.read_object("[" * 200))

    def test_a_fenced_call_as_qwen_wrote_it_through_llama_cpp_is_a_call(self):
        text = (
            '```json\n{\n  "name": "execute_query",\n  "arguments": {\n'
            '    "query": "rate(node_cpu_seconds{job="node",instance="web-1"}[5m]) > 0.1"\n  }\n}\n```'
        )
        self.assertEqual(
            lenient.written_calls(text, {"execute_query"}),
            [("execute_query", {"query": 'rate(node_cpu_seconds{job="node",instance="web-1"}[5m]) > 0.1'})],
        )
        tags = (
            '<tool_call>\n{"name": "execute_query", "arguments": {"query": "up"}}\n</tool_call>\n'
            '<tool_call>\n{"function": {"name": "execute_query", "arguments": "{\\"query\\": \\"node_load1\\"}"}}\n</tool_call>'
        )
        self.assertEqual(
            lenient.written_calls(tags, {"execute_query"}),
            [("execute_query", {"query": "up"}), ("execute_query", {"query": "node_load1"})],
        )
        self.assertEqual(lenient.written_calls('{"promQL": ["up"], "content": "x"}', {"execute_query"}), [])
        self.assertEqual(lenient.written_calls('{"name": "rm_rf", "arguments": {}}', {"execute_query"}), [])
        self.assertEqual(
            lenient.written_calls('<think>{"name": "execute_query", "arguments": {}}</think>x', {"execute_query"}), []
        )

    def test_reasoning_is_left_out(self):
        self.assertEqual(lenient.without_reasoning("<think>plan</think>answer"), "answer")
        self.assertEqual(lenient.without_reasoning("plan...</think>\nanswer"), "\nanswer")
        self.assertEqual(lenient.without_reasoning("a<think>b</think>c<think>d"), "ac")


class Secrets(unittest.TestCase):
    def test_the_first_line_carries_the_secrets_and_the_urls_credentials_are_redacted(self):
        line = b'{"aiKey": "sk-123456789", "githubToken": "", "prometheusUrl": "http://u:pw-0123@p:9090"}\n'
        secrets = runner.Secrets(line)
        self.assertEqual((secrets.ai_key, secrets.prometheus_url), ("sk-123456789", "http://u:pw-0123@p:9090"))
        self.assertEqual(
            runner.redact("key sk-123456789 at http://u:pw-0123@p:9090"), "key [REDACTED] at http://[REDACTED]@p:9090"
        )
        with self.assertRaises(ValueError):
            runner.Secrets(b"the prompt itself\n")

    def test_the_runner_and_its_prometheus_server_are_not_dumpable(self):
        """Non-dumpable: other processes of the same user cannot read their environ or
        memory. The Prometheus server's stand-in reports what the real one would run with."""
        import subprocess
        import tempfile

        probe = "import ctypes; print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
        here = os.path.join(os.path.dirname(__file__), "..", "..", "docker", "runner")
        made = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {here!r}); import diagnosis_runner as r; r.make_private(); {probe}"],
            capture_output=True, text=True, check=True,
        )
        self.assertEqual(made.stdout.strip(), "0")
        with tempfile.TemporaryDirectory() as stand_in:
            os.makedirs(os.path.join(stand_in, "prometheus_mcp_server"))
            open(os.path.join(stand_in, "prometheus_mcp_server", "__init__.py"), "w").close()
            with open(os.path.join(stand_in, "prometheus_mcp_server", "main.py"), "w") as f:
                f.write(probe + "\n")
            started = subprocess.run(
                runner.prometheus_mcp_command(""), capture_output=True, text=True, check=True,
                env={**os.environ, "PYTHONPATH": stand_in},
            )
        self.assertEqual(started.stdout.strip(), "0")


class RequestBodies(unittest.TestCase):
    """The same rules the native runner's request bodies follow (src/runner/native/llm.rs)."""

    def test_the_last_step_keeps_the_tools_and_forbids_their_use(self):
        tools = [{"name": "execute_query"}]
        a = llm("anthropic").body([{"role": "user", "content": "hi"}], tools, forbid_tools=True)
        self.assertEqual(a["tool_choice"], {"type": "none"})
        self.assertEqual(a["tools"], tools)
        o = llm("openai").body([{"role": "user", "content": "hi"}], tools, forbid_tools=True)
        self.assertEqual(o["tool_choice"], "none")
        self.assertNotIn("tool_choice", llm("openai").body([], tools, forbid_tools=False))
        self.assertNotIn("tool_choice", llm("openai").body([], [], forbid_tools=True), "only with tools")

    def test_the_final_answer_is_asked_for_in_the_profiles_form(self):
        tools = [{"name": "execute_query"}]
        schema = '{"type": "object", "required": ["promQL", "content"]}'
        o = llm("openai", structured="json_schema", report_schema=schema).body([], tools, forbid_tools=True)
        self.assertEqual(o["response_format"]["json_schema"]["schema"]["required"], ["promQL", "content"])
        self.assertTrue(o["response_format"]["json_schema"]["strict"])
        free = llm("openai", structured="json_schema", report_schema=schema).body([], tools, forbid_tools=False)
        self.assertNotIn("response_format", free, "a step that may call tools is free")
        d = llm("openai", structured="json_object").body([], tools, forbid_tools=True)
        self.assertEqual(d["response_format"], {"type": "json_object"})
        a = llm("anthropic", structured="submit_tool", report_schema=schema).body([], tools, forbid_tools=True)
        self.assertEqual(a["tool_choice"], {"type": "tool", "name": "submit_report"})
        self.assertEqual([t["name"] for t in a["tools"]], ["execute_query", "submit_report"])
        args = runner.parse_args(
            ["--base-url", "http://127.0.0.1:11434/v1", "--model", "m", "--structured", "json_schema",
             "--omit-forbidden-tools"]
        )
        ollama = runner.LLM(args, "key", runner.Usage()).body([], tools, forbid_tools=True)
        self.assertNotIn("tools", ollama)
        self.assertNotIn("tool_choice", ollama)
        self.assertEqual(ollama["response_format"]["type"], "json_schema")

    def test_a_report_submitted_through_the_tool_is_the_answer(self):
        turn = llm("anthropic")._anthropic_turn(
            {"content": [{"type": "tool_use", "id": "t", "name": "submit_report",
                          "input": {"promQL": ["up"], "content": "【问题概述】x"}}],
             "stop_reason": "tool_use"}
        )
        self.assertEqual(turn.calls, [])
        self.assertEqual(json.loads(turn.text)["promQL"], ["up"])

    def test_the_oldest_tool_output_goes_first_and_a_prompt_too_long_is_refused(self):
        messages = [
            {"role": "user", "content": "提示" * 100},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "a", "function": {"name": "q", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": "x" * 3000},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "b", "function": {"name": "q", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "b", "content": "y" * 3000},
        ]
        total = sum(runner.message_tokens(m) for m in messages)
        total += total // 10
        self.assertEqual(runner.fit_context(messages, [], total), [])
        self.assertEqual(runner.fit_context(messages, [], total - 900), ["a"])
        self.assertEqual(messages[2]["content"], runner.TRIMMED_NOTE)
        self.assertTrue(messages[4]["content"].startswith("y"))
        self.assertEqual(runner.fit_context(messages, [], total - 1900), ["b"])
        with self.assertRaises(runner.ContextExceeded):
            runner.fit_context(messages, [], 100)
        self.assertEqual(runner.estimate("【根因分析】"), 6)
        self.assertEqual(runner.estimate("rate(node_cpu_seconds_total[5m])"), 12)
        self.assertEqual(runner.estimate("1733462400.123"), 14)

    def test_the_formats_placeholder_is_no_report(self):
        copied = '{"promQL": [], "content": "【问题概述】...【根因分析】...【影响范围】...【解决方案】..."}'
        self.assertIn("say nothing", runner.unreadable(copied))
        self.assertEqual(
            runner.empty_sections("【问题概述】CPU 饱和【根因分析】…… 【影响范围】web-1【解决方案】。"),
            ["【根因分析】", "【解决方案】"],
        )

    def test_the_sections_as_keys_are_a_report_and_a_missing_one_is_named(self):
        keyed = {"【问题概述】": "a", "【根因分析】": "【根因分析】b", "【影响范围】": "c", "【解决方案】": "d"}
        self.assertIsNone(runner.unreadable(json.dumps({"promQL": [], "content": keyed}, ensure_ascii=False)))
        self.assertEqual(
            runner.written_out(keyed),
            ("【问题概述】\na\n【根因分析】\nb\n【影响范围】\nc\n【解决方案】\nd", None),
        )
        del keyed["【解决方案】"]
        self.assertIn(
            "content lacks the sections 【解决方案】",
            runner.unreadable(json.dumps({"promQL": [], "content": keyed}, ensure_ascii=False)),
        )

    def test_the_profile_sets_the_token_field_and_extra_fields_with_null_removing(self):
        body = llm(
            "openai",
            max_tokens="900",
            max_tokens_field="max_completion_tokens",
            extra_body='{"enable_thinking": false, "model": null}',
        ).body([], [], forbid_tools=False)
        self.assertEqual(body["max_completion_tokens"], 900)
        self.assertNotIn("max_tokens", body)
        self.assertIs(body["enable_thinking"], False)
        self.assertNotIn("model", body)
        body = llm("anthropic", max_tokens_field="max_completion_tokens").body([], [], forbid_tools=False)
        self.assertEqual(body["max_tokens"], 4096, "Anthropic knows only max_tokens")

    def test_anthropic_notes_join_the_tool_results_message(self):
        merged = runner.merge_turns(
            [
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "1"}]},
                {"role": "user", "content": "answer now"},
            ]
        )
        self.assertEqual(len(merged), 1)
        self.assertEqual([b["type"] for b in merged[0]["content"]], ["tool_result", "text"])

    def test_no_message_with_empty_content_is_kept(self):
        a = llm("anthropic")
        turn = a._anthropic_turn({"content": [{"type": "text", "text": ""}], "stop_reason": "max_tokens"})
        self.assertIsNone(turn.message)
        self.assertTrue(turn.cut_off)
        turn = a._anthropic_turn(
            {"content": [{"type": "text", "text": " "}, {"type": "tool_use", "id": "t", "name": "q", "input": {}}]}
        )
        self.assertEqual([b["type"] for b in turn.message["content"]], ["tool_use"])
        self.assertEqual(a.tool_results([("t", "", False)])[0]["content"][0]["content"], runner.NO_OUTPUT)
        o = llm("openai")
        turn = o._openai_turn(
            {"choices": [{"message": {"content": "", "tool_calls": [{"id": "c", "function": {"name": "q"}}]}}]}
        )
        self.assertIsNone(turn.message["content"])
        self.assertIsNone(o._openai_turn({"choices": [{"message": {"content": ""}, "finish_reason": "length"}]}).message)
        self.assertEqual(o.tool_results([("c", " ", False)])[0]["content"], runner.NO_OUTPUT)


class RetryDelay(unittest.TestCase):
    def test_retry_after_in_seconds_and_as_an_http_date(self):
        self.assertEqual(runner.retry_delay(1, "2"), 2.0)
        self.assertEqual(runner.retry_delay(1, "600"), 60.0)
        in_30 = email.utils.formatdate(time.time() + 30, usegmt=True)
        self.assertTrue(27 < runner.retry_delay(1, in_30) <= 30)
        self.assertEqual(runner.retry_delay(1, "Wed, 21 Oct 2015 07:28:00 GMT"), 0.0)

    def test_backoff_without_retry_after(self):
        self.assertEqual(runner.retry_delay(1, None), 1.0)
        self.assertEqual(runner.retry_delay(9, "soon"), 8.0)


class HoldsReport(unittest.TestCase):
    def test_a_report_in_prose_is_found_and_a_cut_one_is_not(self):
        four = "【问题概述】a【根因分析】b【影响范围】c【解决方案】d"
        self.assertTrue(runner.holds_report('好的：{"promQL": ["up"], "content": "%s"} 完' % four))
        self.assertFalse(runner.holds_report('{"promQL": ["up"], "content": "【问题概述】x"}'), "one section is no report")
        self.assertFalse(runner.holds_report('{"promQL": ["up"], "content": "【问题概'))
        self.assertFalse(runner.holds_report('{"promQL": "up", "content": "x"}'))
        self.assertFalse(runner.holds_report("no json"))


class Cap(unittest.TestCase):
    def test_short_results_pass_whole(self):
        self.assertEqual(runner.cap("abc", 10), "abc")

    def test_long_results_are_cut_and_say_so(self):
        out = runner.cap("x" * 100, 10)
        self.assertTrue(out.startswith("x" * 10))
        self.assertIn("truncated", out)
        self.assertIn("10 of 100", out)


class Redaction(unittest.TestCase):
    def test_secrets_are_replaced_everywhere(self):
        runner._SECRETS[:] = ["sk-123"]
        try:
            self.assertEqual(runner.redact("key sk-123 and sk-123"), "key [REDACTED] and [REDACTED]")
        finally:
            runner._SECRETS.clear()


class Unwrap(unittest.TestCase):
    def test_a_diagnosis_error_is_found_inside_task_group_wrapping(self):
        inner = runner.DiagnosisError("prometheus_unreachable", "down")
        wrapped = BaseExceptionGroup("tg", [ExceptionGroup("inner", [ValueError("x"), inner])])
        self.assertIs(runner.unwrap(wrapped), inner)

    def test_a_diagnosis_error_in_a_later_subgroup_is_found_too(self):
        inner = runner.DiagnosisError("llm_status", "500")
        wrapped = BaseExceptionGroup("tg", [ExceptionGroup("a", [ValueError("x")]), ExceptionGroup("b", [inner])])
        self.assertIs(runner.unwrap(wrapped), inner)

    def test_cancellation_is_reported_as_such(self):
        self.assertIsInstance(runner.unwrap(asyncio.CancelledError()), asyncio.CancelledError)


if __name__ == "__main__":
    unittest.main()
