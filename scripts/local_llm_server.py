"""llama.cpp's HTTP server, in process through xllamacpp: the OpenAI-compatible
/v1/chat/completions with tool calling (the model's own Jinja chat template), on
127.0.0.1 only. Started by scripts/local-llm; stops on SIGTERM or Ctrl-C."""

import argparse
import signal
import sys
import threading

import xllamacpp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--alias", required=True, help="the model's name in answers")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--context", type=int, default=16384, help="tokens of context (n_ctx)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = args.alias
    params.n_ctx = args.context
    params.port = args.port
    params.hostnames = ["127.0.0.1"]
    # Tool calling and the model's own chat template: llama.cpp answers tools only with
    # Jinja templates (`--jinja`).
    params.use_jinja = True
    params.n_parallel = 1
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    server = xllamacpp.Server(params)
    print(f"listening on {server.listening_address}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
