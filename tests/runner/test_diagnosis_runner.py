"""Unit tests of the Python runner's pure parts (run by scripts/test with the runner's venv).

The runner as a whole (MCP, Prometheus, both wire formats) is exercised by the Rust
integration tests in tests/api/.
"""

import asyncio
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "docker", "runner"))

import diagnosis_runner as runner  # noqa: E402


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
