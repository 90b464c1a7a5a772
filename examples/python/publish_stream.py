"""Publish events to Hookyard over one gRPC stream (Events.PublishStream)
with grpcio, and print each event's result as a JSON line.

The stubs are generated from the repository's proto files on first run
(grpcio-tools, into examples/python/.stubs), so nothing is checked in:

    pip install grpcio grpcio-tools
    python examples/python/publish_stream.py --addr 127.0.0.1:8080 \
        --key hy_test_key_0123456789abcdef --name lead.created --count 100

Each result arrives only after its event is committed, in the order the
events were sent; the daemon reads at most 256 events ahead of their answers,
so a fast generator is paced by HTTP/2 flow control, not refused.
"""

import argparse
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto"
STUBS = HERE / ".stubs"


def load_stubs():
    """Generates the Python stubs from proto/ once, then imports them."""
    if not (STUBS / "hookyard" / "v1" / "events_pb2_grpc.py").exists():
        from grpc_tools import protoc
        import importlib.resources

        STUBS.mkdir(exist_ok=True)
        well_known = str(importlib.resources.files("grpc_tools") / "_proto")
        files = [str(p) for p in sorted((PROTO / "hookyard" / "v1").glob("*.proto"))]
        code = protoc.main(
            ["protoc", f"-I{PROTO}", f"-I{well_known}",
             f"--python_out={STUBS}", f"--grpc_python_out={STUBS}", *files]
        )
        if code != 0:
            sys.exit(f"protoc failed ({code})")
        for package in (STUBS / "hookyard", STUBS / "hookyard" / "v1"):
            (package / "__init__.py").touch()
    sys.path.insert(0, str(STUBS))
    from hookyard.v1 import events_pb2, events_pb2_grpc

    return events_pb2, events_pb2_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:8080")
    parser.add_argument("--key", required=True, help="an API key (hy_...)")
    parser.add_argument("--name", default="lead.created", help="the events' name")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--id-prefix", default="", help="ids <prefix><n>; empty: the daemon picks")
    args = parser.parse_args()

    import grpc

    events_pb2, events_pb2_grpc = load_stubs()

    def requests():
        for n in range(args.count):
            payload = json.dumps({"n": n}).encode()
            event = events_pb2.Event(
                id=f"{args.id_prefix}{n}" if args.id_prefix else "",
                name=args.name,
                source="python-example",
                payload=payload,
            )
            yield events_pb2.PublishRequest(event=event)

    with grpc.insecure_channel(args.addr) as channel:
        stub = events_pb2_grpc.EventsStub(channel)
        metadata = [("authorization", f"Bearer {args.key}")]
        failed = 0
        for result in stub.PublishStream(requests(), metadata=metadata):
            if result.HasField("ok"):
                ok = result.ok
                print(json.dumps({"id": ok.id, "seq": ok.seq, "duplicate": ok.duplicate,
                                  "matched": ok.matched}))
            else:
                failed += 1
                print(json.dumps({"error": result.error.code, "message": result.error.message}))
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
