"""Serve the fake upstream on its own, e.g. as the instant upstream of a benchmark:

python -m tests.fakes --port 8001 --answer "A short answer." --no-record
"""

from __future__ import annotations

import argparse
import contextlib
import threading

from tests.fakes.upstream import FakeUpstream


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=8001, help="loopback port (0: any free one)")
    parser.add_argument("--base-model", default="base-model", help="the model /v1/models lists")
    parser.add_argument("--answer", help="what every generation answers")
    parser.add_argument("--no-record", action="store_true", help="keep no request history")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="wait this long before every answer (a model server's latency)")
    args = parser.parse_args(argv)
    with FakeUpstream(base_model=args.base_model, port=args.port) as upstream:
        if args.answer is not None:
            upstream.policy_answer = args.answer
        upstream.record_requests = not args.no_record
        upstream.delay_s = args.delay_ms / 1000.0
        print(f"fake upstream at {upstream.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
