"""A small agentbus client: Python 3 standard library only.

It speaks the newline-delimited JSON protocol of PROTOCOL.md (version 1) over
the daemon's Unix socket. One reader thread reads every frame: answers are
matched to their operation by id, and `deliver` frames go to one dispatcher
thread that calls handler(agent, message) for each, in order. Messages are
plain dicts in the protocol's JSON form. An error frame is raised as
AgentBusError, whose `code` is the frame's stable code (e.g. "no_recipient").

    with Client("/tmp/agentbus.sock", handler=lambda agent, msg: print(msg)) as c:
        c.register("py")
        c.publish("progress.py", {"done": 50})
        print(c.request("worker", {"task": "lint"}, timeout=5)["payload"])

Flow control: each agent is registered with a window (default 256): the
daemon has at most that many deliveries to it in flight, and the client
credits each one once its handler is done (see PROTOCOL.md). Keep the sum of
the windows within `max_queue`, and the reader never waits for the handler,
so a handler may call the daemon freely. Deliveries the client never handled
(it closed, or crashed) are dead-lettered by the daemon, not lost. A handler
that raises has its delivery refused (nack): a request then fails at once for
its requester, and anything else is redelivered or dead-lettered.

Pipelining: send_async, publish_async and respond_async write a message and
return a Pending at once, without waiting for the daemon's answer (a Pending
can call back when answered: add_done_callback); at most `window` of them
(default 256) are unconfirmed at a time, and the next one waits for room (the
client's backpressure). flush() waits until every one sent before it is
answered, and raises FlushError listing every refusal not yet reported. The
daemon carries out one connection's sends in the order they were written.
"""

import itertools
import json
import logging
import queue
import socket
import threading
import time

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 10 * 1024 * 1024 + 64 * 1024  # the daemon's default; welcome says the real one
log = logging.getLogger("agentbus")


class AgentBusError(Exception):
    """An operation failed; `code` is the protocol's stable error code."""

    def __init__(self, code, message=""):
        super().__init__(message or code)
        self.code = code


class FlushError(AgentBusError):
    """flush() found refusals; `errors` lists them (AgentBusError each, oldest first)."""

    def __init__(self, errors):
        super().__init__(errors[0].code, "%d sends refused, the first: %s" % (len(errors), errors[0]))
        self.errors = errors


class Pending:
    """A send in flight (see send_async). wait() returns the message id, or raises
    the AgentBusError the daemon refused it with."""

    def __init__(self):
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks = []
        self.message_id = None
        self.error = None

    def done(self):
        return self._done.is_set()

    def add_done_callback(self, fn):
        """Call fn(pending) once it is answered: at once if it already is,
        else on the client's reader thread (so fn must not wait for the daemon).
        An exception fn raises is logged."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        _run_callback(fn, self)

    def _finish(self):
        with self._lock:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            _run_callback(fn, self)

    def wait(self, timeout=None):
        if not self._done.wait(timeout):
            raise AgentBusError("timeout", "no answer within %ss" % timeout)
        if self.error is not None:
            raise self.error
        return self.message_id


class ConnectionClosed(AgentBusError):
    """The connection ended (closed by the daemon, or by close())."""

    def __init__(self, message="connection closed"):
        super().__init__("transport_closed", message)


class Client:
    def __init__(self, path, handler=None, name="agentbus-python", timeout=10.0, max_queue=1024, on_close=None,
                 window=256):
        """Connect to the daemon at path and say hello. Raises OSError if the
        socket cannot be reached, AgentBusError if the daemon refuses."""
        self.handler, self.timeout, self.on_close = handler, timeout, on_close
        self.max_frame = DEFAULT_MAX_FRAME
        self.close_reason = None  # why the connection ended; None if close() ended it
        self._ids = itertools.count(1)
        self._pending = {}  # id -> [threading.Event, answer frame]
        self._lock = threading.Lock()  # guards _pending and _closed
        self._wlock = threading.Lock()  # one writer at a time
        self._closed = False  # no new operations
        self._closing = False  # close() was called
        self._done = threading.Event()  # set when the reader has finished
        self._queue = queue.Queue(max_queue)
        self._windows = {}  # agent -> its window (0: none)
        self._uncredited = {}  # agent -> deliveries handled, not yet credited
        self._window = threading.Semaphore(window)  # a token per unconfirmed async send
        self._async = {}  # id -> (seq, Pending): async sends not yet answered
        self._aseq = 0  # the next async send's sequence number
        self._failures = []  # (seq, AgentBusError) not yet reported by flush; at most 1024 kept
        self._lost_failures = 0
        self._settled = threading.Condition(self._lock)  # notified when an async send is answered
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
            self._sock.settimeout(None)
        except OSError:
            self._sock.close()
            raise
        self._reader = threading.Thread(target=self._read_loop, name="agentbus-reader", daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="agentbus-dispatch", daemon=True)
        self._reader.start()
        self._dispatcher.start()
        try:
            w = self._call({"op": "hello", "version": PROTOCOL_VERSION, "client": name})
        except BaseException:
            self.close()
            raise
        self.server, self.version = w.get("server", ""), w.get("version", PROTOCOL_VERSION)

    # -- operations ----------------------------------------------------------

    def register(self, agent, window=256):
        """Register agent; at most `window` deliveries to it are in flight
        (0: no limit, and no credit is sent)."""
        self._call(_drop_none({"op": "register", "agent": agent, "window": window or None}))
        with self._lock:
            self._windows[agent] = window

    def unregister(self, agent=None):
        self._call(_drop_none({"op": "unregister", "agent": agent}))

    def subscribe(self, topic, agent=None):
        self._call(_drop_none({"op": "subscribe", "agent": agent, "topic": topic}))

    def unsubscribe(self, topic, agent=None):
        self._call(_drop_none({"op": "unsubscribe", "agent": agent, "topic": topic}))

    def send(self, recipient, payload, **fields):
        """Send a direct message (fields: sender, priority, requires_ack, ttl_ms,
        type, ...); returns its id once the bus accepted it."""
        msg = dict(fields, recipient=recipient, payload=payload)
        return self._call({"op": "send", "message": msg}).get("message_id")

    def publish(self, topic, payload, **fields):
        msg = dict(fields, topic=topic, payload=payload)
        return self._call({"op": "publish", "message": msg}).get("message_id")

    def send_async(self, recipient, payload, **fields):
        """Send a direct message without waiting for the daemon's answer; returns a
        Pending. Blocks while `window` sends are unconfirmed (up to the client's
        timeout, then raises AgentBusError "timeout")."""
        msg = dict(fields, recipient=recipient, payload=payload)
        return self._call_async({"op": "send", "message": msg})

    def publish_async(self, topic, payload, **fields):
        msg = dict(fields, topic=topic, payload=payload)
        return self._call_async({"op": "publish", "message": msg})

    def flush(self, timeout=None):
        """Wait until every send_async/publish_async before this call is answered.
        Raises FlushError with the refusals not yet reported by an earlier flush,
        ConnectionClosed if the connection ended, or AgentBusError "timeout"."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._lock:
            target = self._aseq
            while any(seq < target for seq, _ in self._async.values()):  # the reader settles all as it ends
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AgentBusError("timeout", "flush: sends still unanswered")
                self._settled.wait(left)
            errors = [e for seq, e in self._failures if seq < target]
            self._failures = [(seq, e) for seq, e in self._failures if seq >= target]
            if self._lost_failures:
                errors.append(AgentBusError("internal", "and %d more refusals" % self._lost_failures))
                self._lost_failures = 0
        if errors:
            raise FlushError(errors)

    def request(self, recipient, payload, timeout=30.0, **fields):
        """Ask recipient and return the response message (a dict). The daemon
        enforces the timeout (code "request_timeout")."""
        msg = dict(fields, recipient=recipient, payload=payload)
        frame = {"op": "request", "timeout_ms": max(1, int(timeout * 1000)), "message": msg}
        return self._call(frame, timeout + 5.0)["message"]  # local wait: a safety net only

    def respond(self, request, payload, **fields):
        """Answer a delivered request; returns the response's id once the daemon
        took it."""
        return self._call(_response_frame(request, payload, fields)).get("message_id")

    def respond_async(self, request, payload, **fields):
        """Answer a delivered request without waiting for the daemon; returns a
        Pending, in the same window of unconfirmed sends as send_async, and
        flush() reports a refusal as it does theirs. A handler that answers this
        way is free for its next delivery at once."""
        return self._call_async(_response_frame(request, payload, fields))

    def ack(self, message, agent=None):
        """Acknowledge a delivered requires_ack message (a message dict or its id)."""
        mid = message["id"] if isinstance(message, dict) else message
        self._call(_drop_none({"op": "ack", "message_id": mid, "agent": agent}))

    def nack(self, message, error="", agent=None):
        mid = message["id"] if isinstance(message, dict) else message
        self._call(_drop_none({"op": "nack", "message_id": mid, "agent": agent, "error": error or None}))

    def ping(self):
        """Return the round-trip time to the daemon, in seconds."""
        start = time.monotonic()
        self._call({"op": "ping"})
        return time.monotonic() - start

    # -- lifecycle -----------------------------------------------------------

    def close(self):
        """Close the connection and wait for the reader and dispatcher threads
        (unless called from one of them). Deliveries not yet handled are left
        uncredited, so the daemon dead-letters them. Safe to call more than
        once."""
        with self._lock:
            closed = self._closed
            self._closed = self._closing = True
            owed = {a: n for a, n in self._uncredited.items() if n}
            self._uncredited.clear()
        if not closed:
            for agent, n in owed.items():  # handled: say so before the connection ends
                self._send_nowait({"op": "credit", "agent": agent, "n": n})
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader with EOF
        except OSError:
            pass
        _drain(self._queue)  # frees a reader blocked on a full queue; what was queued is dropped
        try:
            self._queue.put_nowait(None)  # the drain may have taken the reader's; if full, the reader adds one
        except queue.Full:
            pass
        for t in (self._reader, self._dispatcher):
            if t is not threading.current_thread() and t.is_alive():
                t.join()
        self._sock.close()

    def wait_closed(self, timeout=None):
        """Block until the connection ends; returns whether it has."""
        return self._done.wait(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals -----------------------------------------------------------

    def _call(self, frame, timeout=None):
        fid = str(next(self._ids))
        frame["id"] = fid
        data = json.dumps(frame, separators=(",", ":")).encode() + b"\n"
        if len(data) - 1 > self.max_frame:
            raise AgentBusError("frame_too_large", "frame of %d bytes > max_frame %d" % (len(data) - 1, self.max_frame))
        slot = [threading.Event(), None]
        with self._lock:
            if self._closed:
                raise ConnectionClosed(self.close_reason or "connection closed")
            self._pending[fid] = slot
        try:
            with self._wlock:
                self._sock.sendall(data)
            if not slot[0].wait(self.timeout if timeout is None else timeout):
                raise AgentBusError("timeout", "no answer to %s within %ss" % (frame["op"], timeout or self.timeout))
        except OSError as e:
            raise ConnectionClosed("send failed: %s" % e) from e
        finally:
            with self._lock:
                self._pending.pop(fid, None)
        answer = slot[1]
        if answer is None:
            raise ConnectionClosed(self.close_reason or "connection closed")
        if answer.get("op") == "error":
            raise AgentBusError(answer.get("code", "internal"), answer.get("error", ""))
        return answer

    def _call_async(self, frame):
        if not self._window.acquire(timeout=self.timeout):
            raise AgentBusError("timeout", "the window of unconfirmed sends stayed full for %ss" % self.timeout)
        fid = "a%d" % next(self._ids)
        frame["id"] = fid
        data = json.dumps(frame, separators=(",", ":")).encode() + b"\n"
        if len(data) - 1 > self.max_frame:
            self._window.release()
            raise AgentBusError("frame_too_large", "frame of %d bytes > max_frame %d" % (len(data) - 1, self.max_frame))
        pending = Pending()
        with self._lock:
            if self._closed:
                self._window.release()
                raise ConnectionClosed(self.close_reason or "connection closed")
            self._async[fid] = (self._aseq, pending)
            self._aseq += 1
        try:
            with self._wlock:
                self._sock.sendall(data)
        except OSError as e:
            self._settle(fid, None, ConnectionClosed("send failed: %s" % e))
        return pending

    def _settle(self, fid, answer, error=None):
        """Settle async send fid with its answer (or error); returns whether it was one."""
        with self._lock:
            entry = self._async.pop(fid, None)
            if entry is None:
                return False
            seq, pending = entry
            if error is None and answer.get("op") == "error":
                error = AgentBusError(answer.get("code", "internal"), answer.get("error", ""))
            if error is not None:
                if len(self._failures) < 1024:
                    self._failures.append((seq, error))
                else:
                    self._lost_failures += 1
            else:
                pending.message_id = answer.get("message_id")
            pending.error = error
            self._settled.notify_all()
        self._window.release()
        pending._finish()
        return True

    def _read_loop(self):
        buf, skipping, reason = bytearray(), False, None
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    reason = "the daemon closed the connection"
                    break
                start = 0
                while True:
                    nl = chunk.find(b"\n", start)
                    piece = chunk[start:] if nl < 0 else chunk[start:nl]
                    if not skipping:
                        buf += piece
                        if len(buf) > self.max_frame + 1:  # +1: a trailing '\r'
                            log.warning("agentbus: skipping a frame longer than %d bytes", self.max_frame)
                            skipping = True
                            buf.clear()
                    if nl < 0:
                        break
                    if not skipping:
                        self._handle_line(bytes(buf))
                    buf.clear()
                    skipping, start = False, nl + 1
        except OSError as e:
            reason = "connection error: %s" % e
        finally:
            with self._lock:
                self._closed = True
                if not self._closing and self.close_reason is None:
                    self.close_reason = reason
                pending = list(self._pending.values())
            for slot in pending:  # their callers raise ConnectionClosed
                slot[0].set()
            with self._lock:
                unanswered = list(self._async)
            for fid in unanswered:  # whether the daemon carried them out is unknown
                self._settle(fid, None, ConnectionClosed(self.close_reason or "connection closed"))
            while True:  # stop the dispatcher; what it has not run yet is dropped
                try:
                    self._queue.put_nowait(None)
                    break
                except queue.Full:
                    _drain(self._queue)
            self._done.set()
            if self.on_close:
                self.on_close(self.close_reason)

    def _handle_line(self, line):
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        try:
            frame = json.loads(line.decode("utf-8"))
        except ValueError as e:
            log.warning("agentbus: skipping a bad frame: %s", e)
            return
        if not isinstance(frame, dict):
            return
        if frame.get("op") == "welcome" and isinstance(frame.get("max_frame"), int) and frame["max_frame"] > 0:
            self.max_frame = frame["max_frame"]  # here, so that the very next line is checked against it
        if frame.get("op") == "deliver":
            if not self._closing:
                self._queue.put(frame)  # blocks while full: backpressure
            return
        if str(frame.get("id", "")).startswith("a") and self._settle(frame["id"], frame):
            return
        with self._lock:
            slot = self._pending.get(frame.get("id"))
        if slot is not None:
            slot[1] = frame
            slot[0].set()
        elif frame.get("op") == "error":
            log.warning("agentbus: daemon error %s: %s", frame.get("code"), frame.get("error"))

    def _dispatch_loop(self):
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            if self.handler is None or self._closed:
                continue  # not handled, not credited: the daemon dead-letters it
            agent, msg = frame.get("agent"), frame.get("message") or {}
            try:
                self.handler(agent, msg)
            except Exception as e:
                if self._closed:  # the connection ended under the handler
                    continue
                log.exception("agentbus: handler failed")
                try:
                    self.nack(msg, "%s: %s" % (type(e).__name__, e), agent=agent)
                except AgentBusError as ne:
                    log.warning("agentbus: nack failed: %s", ne)
            self._credit(agent, flush=self._queue.empty())

    def _credit(self, agent, flush=False):
        """Count one finished delivery of agent; tell the daemon every quarter
        window, and whenever the queue runs empty (flush)."""
        with self._lock:
            window = self._windows.get(agent, 0)
            if not window:
                return
            n = self._uncredited.get(agent, 0) + 1
            if n < max(1, window // 4) and not flush:
                self._uncredited[agent] = n
                return
            self._uncredited[agent] = 0
        self._send_nowait({"op": "credit", "agent": agent, "n": n})

    def _send_nowait(self, frame):
        """Write a frame that is not answered (credit)."""
        data = json.dumps(frame, separators=(",", ":")).encode() + b"\n"
        try:
            with self._wlock:
                self._sock.sendall(data)
        except OSError:
            pass  # the connection is ending: what is uncredited is dead-lettered


def _drain(q):
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def _response_frame(request, payload, fields):
    """The respond frame answering request (a delivered message dict)."""
    msg = dict(fields, request_id=request.get("request_id") or request["id"], payload=payload)
    msg.setdefault("sender", request.get("recipient"))
    msg.setdefault("recipient", request.get("sender"))
    msg.setdefault("priority", request.get("priority", 50))
    msg.setdefault("correlation_id", request.get("correlation_id"))
    trace = {k: v for k, v in (request.get("metadata") or {}).items() if k in ("traceparent", "tracestate")}
    if trace:
        msg.setdefault("metadata", trace)
    return {"op": "respond", "message": _drop_none(msg)}


def _run_callback(fn, pending):
    try:
        fn(pending)
    except Exception:  # a callback's failure must not stop the reader
        log.exception("agentbus: a Pending's done callback raised")


def _drop_none(d):
    return {k: v for k, v in d.items() if v is not None}
