"""Slow and idle clients: timeouts for each part of a request, and a cap on connections.

uvicorn already closes a kept-alive connection that stays idle
(``timeout_keep_alive``), answers 503 once too many connections or requests are
open (``limit_concurrency``) and refuses request headers larger than
``h11_max_incomplete_event_size``. What it does not do is give up on a client
that connects and then sends nothing, or half a header, or a body one byte a
second: each holds a connection (and a slot under the cap) for as long as it
likes. :class:`TimedH11Protocol` adds two deadlines to uvicorn's h11 protocol:

* the **header timeout**: from the connection (or its first byte after a
  kept-alive answer) to the end of the request's headers;
* the **body timeout**: from the end of the headers to the end of the body.

A client that misses one gets ``408 Request Timeout`` and its connection is
closed; nobody else notices. The time the model takes to answer is not
counted: only the time the client takes to send.
"""

from __future__ import annotations

import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from serving.limits import BODY_TIMEOUT as DEFAULT_BODY_TIMEOUT
from serving.limits import HEADER_TIMEOUT as DEFAULT_HEADER_TIMEOUT
from serving.limits import KEEP_ALIVE_TIMEOUT as DEFAULT_KEEP_ALIVE_TIMEOUT
from serving.limits import MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS
from serving.limits import MAX_HEADER_BYTES as DEFAULT_MAX_HEADER_BYTES

log = logging.getLogger("serving")


def timeout_answer(what: str, seconds: float) -> bytes:
    body = f'{{"detail":"the request {what} did not arrive within {seconds:g} s"}}'.encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a body deadline."""

    header_timeout = DEFAULT_HEADER_TIMEOUT
    body_timeout = DEFAULT_BODY_TIMEOUT

    _deadline = None   # the armed timer handle
    _waiting_for = None  # "headers" or "body"

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self._waiting_for = None

    def _arm(self) -> None:
        """Set the deadline that matches what the client is sending now."""
        if self.transport is None or self.transport.is_closing():
            return self._disarm()
        state = self.conn.their_state
        if state is h11.IDLE and self.timeout_keep_alive_task is None:
            waiting_for, seconds = "headers", self.header_timeout
        elif state is h11.SEND_BODY:
            waiting_for, seconds = "body", self.body_timeout
        else:  # between requests (the keep-alive timer runs), or the client has sent everything
            return self._disarm()
        if waiting_for != self._waiting_for:
            self._disarm()
            self._waiting_for = waiting_for
            self._deadline = self.loop.call_later(seconds, self._expired, waiting_for, seconds)

    def _expired(self, what: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        started = self.cycle is not None and self.cycle.response_started and what == "body"
        if not started:
            self.transport.write(timeout_answer(what, seconds))
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("closed the connection from %s: the request %s did not arrive within %g s",
                    client, what, seconds)
        self.transport.close()


def protocol(header_timeout: float, body_timeout: float) -> type:
    """A :class:`TimedH11Protocol` subclass with these deadlines, for uvicorn's ``http=``."""
    return type("TimedH11Protocol", (TimedH11Protocol,),
                {"header_timeout": header_timeout, "body_timeout": body_timeout})


def uvicorn_config(app, host: str, port: int, *, header_timeout: float = DEFAULT_HEADER_TIMEOUT,
                   body_timeout: float = DEFAULT_BODY_TIMEOUT,
                   keep_alive_timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT,
                   max_connections: int = DEFAULT_MAX_CONNECTIONS, log_level: str = "info",
                   access_log: bool = True):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, http=protocol(header_timeout, body_timeout),
                          timeout_keep_alive=keep_alive_timeout, limit_concurrency=max_connections,
                          h11_max_incomplete_event_size=DEFAULT_MAX_HEADER_BYTES,
                          log_level=log_level, access_log=access_log)
