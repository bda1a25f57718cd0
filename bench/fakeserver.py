#!/usr/bin/env python3
# A fake PostgreSQL server for the micro-benchmark: trust login, the same fixed answer to every query.
"""fakeserver: just enough of a PostgreSQL backend to put a pooler's forward path under a
profiler without a real database.

    fakeserver.py --port P [--host 127.0.0.1] [--rows N]

- Startup: SSLRequest and GSSENCRequest get 'N'; a StartupMessage gets AuthenticationOk (trust),
  a fixed set of ParameterStatus, BackendKeyData and ReadyForQuery 'I'.
- Simple protocol: every Query gets RowDescription (one int4 column), N DataRows ("1"),
  CommandComplete "SELECT N" and ReadyForQuery 'I' (SET and friends get the same answer: a pooler
  only looks at ReadyForQuery and errors).
- Extended protocol: Parse -> ParseComplete, Bind -> BindComplete, Describe -> (ParameterDescription
  for a statement) RowDescription, Execute -> DataRows + CommandComplete, Close -> CloseComplete,
  Sync -> ReadyForQuery 'I', Flush -> nothing, Terminate -> close.
- CancelRequest: the connection is closed.

Prints "ready PORT" on stdout once it listens.  Runs until SIGTERM/SIGINT.
"""

import argparse
import asyncio
import signal
import socket
import struct
import sys

SSL_REQUEST, GSS_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102


def msg(kind, payload=b""):
    return kind + struct.pack("!I", len(payload) + 4) + payload


def answers(rows):
    params = b"".join(msg(b"S", k + b"\0" + v + b"\0") for k, v in (
        (b"server_version", b"15.0 (fakeserver)"), (b"server_encoding", b"UTF8"), (b"client_encoding", b"UTF8"),
        (b"DateStyle", b"ISO, MDY"), (b"TimeZone", b"UTC"), (b"integer_datetimes", b"on"),
        (b"IntervalStyle", b"postgres"), (b"is_superuser", b"off"), (b"standard_conforming_strings", b"on"),
        (b"application_name", b"")))
    ready = msg(b"Z", b"I")
    login = msg(b"R", struct.pack("!i", 0)) + params + msg(b"K", struct.pack("!ii", 4242, 123456)) + ready
    # one int4 column named "?column?"
    rowdesc = msg(b"T", struct.pack("!h", 1) + b"?column?\0" + struct.pack("!ihihih", 0, 0, 23, 4, -1, 0))
    datarows = msg(b"D", struct.pack("!hi", 1, 1) + b"1") * rows
    complete = msg(b"C", f"SELECT {rows}".encode() + b"\0")
    return {
        "login": login,
        "Q": rowdesc + datarows + complete + ready,
        "P": msg(b"1"), "B": msg(b"2"), "C": msg(b"3"),
        "D_portal": rowdesc, "D_statement": msg(b"t", struct.pack("!h", 0)) + rowdesc,
        "E": datarows + complete,
        "S": ready,
    }


class Backend(asyncio.Protocol):
    def __init__(self, reply):
        self.reply = reply
        self.buf = bytearray()
        self.started = False
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        buf, reply = self.buf, self.reply
        buf += data
        out = bytearray()
        pos = 0
        while True:
            if not self.started:
                if len(buf) - pos < 8:
                    break
                ln, code = struct.unpack_from("!ii", buf, pos)
                if len(buf) - pos < ln:
                    break
                pos += ln
                if code in (SSL_REQUEST, GSS_REQUEST):
                    out += b"N"
                elif code == CANCEL_REQUEST:
                    self.transport.close()
                    return
                else:
                    out += reply["login"]
                    self.started = True
                continue
            if len(buf) - pos < 5:
                break
            kind = buf[pos]
            ln = struct.unpack_from("!I", buf, pos + 1)[0]
            if len(buf) - pos < ln + 1:
                break
            if kind == 0x51:      # Q
                out += reply["Q"]
            elif kind == 0x50:    # P
                out += reply["P"]
            elif kind == 0x42:    # B
                out += reply["B"]
            elif kind == 0x44:    # D
                out += reply["D_statement"] if buf[pos + 5] == 0x53 else reply["D_portal"]
            elif kind == 0x45:    # E
                out += reply["E"]
            elif kind == 0x53:    # S
                out += reply["S"]
            elif kind == 0x43:    # C
                out += reply["C"]
            elif kind == 0x58:    # X
                self.transport.close()
                return
            pos += ln + 1
        del buf[:pos]
        if out:
            self.transport.write(bytes(out))


async def serve(a):
    reply = answers(a.rows)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Backend(reply), a.host, a.port, reuse_address=True, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    server.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--rows", type=int, default=1, help="DataRows per answer")
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
