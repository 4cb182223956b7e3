#!/usr/bin/env python3
"""An agentbus worker agent in Python (standard library only).

    python3 agent.py --socket PATH [--name py-worker] [--topic progress.py-worker] [--subscribe PATTERN]...

It registers NAME and prints one line, "ready". Then, for each delivery:

- a request: it publishes {"task": TASK, "state": "working"} on TOPIC, then responds
  with {"task": TASK, "result": 1+2+...+n, "by": NAME} for a payload {"task": TASK, "n": n}
  (n defaults to 0; a payload without a non-negative integer n gets
  {"task": TASK, "error": "...", "by": NAME} instead);
- any other message (direct, or published on a --subscribe pattern): it prints the
  message as one JSON line on stdout, and acks it if it requires an ack.

Exit status: 0 on SIGTERM or SIGINT; 1 if the daemon closes the connection or
refuses the agent; 3 if the daemon cannot be reached.
"""

import argparse
import json
import os
import signal
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the example's directory
from agentbus_client import AgentBusError, Client, ConnectionClosed, FlushError


def default_socket():
    """$AGENTBUS_SOCKET, else $XDG_RUNTIME_DIR/agentbus.sock, else
    ${TMPDIR:-/tmp}/agentbus-$UID/agentbus.sock: the daemon's own default."""
    if os.environ.get("AGENTBUS_SOCKET"):
        return os.environ["AGENTBUS_SOCKET"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "agentbus.sock")
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", "agentbus-%d" % os.getuid(), "agentbus.sock")


def answer(payload, name):
    """The response to a request's payload: deterministic, see the module doc."""
    task = payload.get("task") if isinstance(payload, dict) else None
    n = payload.get("n", 0) if isinstance(payload, dict) else None
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return {"task": task, "error": "payload must be an object with a non-negative integer n", "by": name}
    return {"task": task, "result": n * (n + 1) // 2, "by": name}


class Stop(Exception):
    """Raised in the main thread by SIGTERM and SIGINT."""


def on_signal(signum, _frame):
    raise Stop(signum)


def main():
    p = argparse.ArgumentParser(description="An agentbus worker agent in Python.")
    p.add_argument("--socket", default=default_socket(), help="the daemon's Unix socket (default: %(default)s)")
    p.add_argument("--name", default="py-worker", help="the agent name to register (default: %(default)s)")
    p.add_argument("--topic", help="where to publish progress (default: progress.NAME)")
    p.add_argument("--subscribe", action="append", default=[], metavar="PATTERN",
                   help="also subscribe to PATTERN and print what is published there (repeatable)")
    p.add_argument("--stream-to", metavar="AGENT",
                   help="once ready, send --count messages to AGENT with send_async, one more to nobody, flush, "
                        "and print what flush reported")
    p.add_argument("--count", type=int, default=100, help="messages --stream-to sends (default: %(default)s)")
    args = p.parse_args()
    topic = args.topic or "progress." + args.name

    out = threading.Lock()  # one line at a time on stdout
    ready = threading.Event()  # "ready" is printed before anything else

    def emit(line):
        with out:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def report_refusal(pending):
        if pending.error is not None and not isinstance(pending.error, ConnectionClosed):
            print("agent.py: respond: %s (%s)" % (pending.error, pending.error.code), file=sys.stderr)

    def handle(agent, msg):
        ready.wait()
        if msg.get("type") == "request":
            payload = msg.get("payload")
            task = payload.get("task") if isinstance(payload, dict) else None
            try:
                client.publish(topic, {"task": task, "state": "working"}, sender=agent)
            except ConnectionClosed:
                return  # shutting down; the requester learns it from the daemon
            except AgentBusError as e:  # progress is best effort: answer anyway
                print("agent.py: publish progress: %s (%s)" % (e, e.code), file=sys.stderr)
            # Answered without a round trip: the handler is free for the next
            # delivery at once, and a refusal is reported when it comes.
            try:
                client.respond_async(msg, answer(payload, args.name)).add_done_callback(report_refusal)
            except ConnectionClosed:
                pass  # shutting down; the requester learns it from the daemon
            return
        emit(json.dumps(msg, separators=(",", ":"), sort_keys=True))
        if msg.get("requires_ack"):
            client.ack(msg, agent=agent)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    client = None
    try:
        try:
            client = Client(args.socket, handler=handle, name="agent.py")
        except OSError as e:
            print("agent.py: cannot reach the agentbus daemon at %s (is `agentbus serve` running?): %s"
                  % (args.socket, e), file=sys.stderr)
            return 3
        except AgentBusError as e:
            print("agent.py: the daemon at %s refused the connection: %s (%s)" % (args.socket, e, e.code),
                  file=sys.stderr)
            return 1
        try:
            client.register(args.name)
            for pattern in args.subscribe:
                client.subscribe(pattern, agent=args.name)
        except AgentBusError as e:
            print("agent.py: %s: %s (%s)" % (args.name, e, e.code), file=sys.stderr)
            return 1
        emit("ready")
        ready.set()
        if args.stream_to:
            for i in range(args.count):
                client.send_async(args.stream_to, {"n": i}, sender=args.name)
            client.send_async("nobody", {"n": -1}, sender=args.name)
            try:
                client.flush()
                emit("flushed %d, refused 0" % args.count)
            except FlushError as e:
                emit("flushed %d, refused %d: %s" % (args.count, len(e.errors), ",".join(x.code for x in e.errors)))
        client.wait_closed()  # until the daemon goes away, or a signal raises Stop
        print("agent.py: %s" % (client.close_reason or "connection closed"), file=sys.stderr)
        return 1
    except Stop:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the cleanup short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ready.set()
        if client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
