# A minimal PostgreSQL v3 client (startup, trust/cleartext/md5/SCRAM login, simple queries), blocking and asyncio.
"""Just enough of the PostgreSQL frontend protocol for the benchmark: checking that a pooler
answers and proxies to the right server, holding thousands of idle logged-in connections, and
driving the micro-benchmark.  Standard library only."""

import asyncio
import base64
import hashlib
import hmac
import os
import socket
import struct

PROTOCOL_3 = 196608


class PgError(Exception):
    """An ErrorResponse from the server, or a protocol surprise; str() is the server's message."""

    def __init__(self, message, fields=None):
        super().__init__(message)
        self.fields = fields or {}


# ---------------------------------------------------------------------------
# encoding

def message(kind, payload=b""):
    return kind + struct.pack("!I", len(payload) + 4) + payload


def cstr(s):
    return s.encode() + b"\0"


def startup_packet(user, database, params=None):
    body = struct.pack("!I", PROTOCOL_3) + cstr("user") + cstr(user) + cstr("database") + cstr(database)
    for k, v in (params or {}).items():
        body += cstr(k) + cstr(v)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query_message(sql):
    return message(b"Q", cstr(sql))


def error_fields(payload):
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def error_text(fields):
    return f"{fields.get('S', 'ERROR')}: {fields.get('M', '?')}" + (f" ({fields['C']})" if "C" in fields else "")


# ---------------------------------------------------------------------------
# authentication

def scram_secret(password, iterations, salt=None):
    """The SCRAM-SHA-256 verifier PostgreSQL stores in pg_authid for `password`."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


class ScramClient:
    """Client side of SCRAM-SHA-256 without channel binding.  `keys` is a dict shared between
    connections: the salted password for a (password, salt, iterations) is derived once."""

    def __init__(self, password, keys=None):
        self.password = password
        self.keys = keys if keys is not None else {}
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_key = None
        self.auth_message = None

    def initial(self):
        """SASLInitialResponse payload."""
        data = ("n,," + self.first_bare).encode()
        return cstr("SCRAM-SHA-256") + struct.pack("!i", len(data)) + data

    def respond(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise PgError("SCRAM: server nonce does not extend ours")
        salt, iters = base64.b64decode(attrs["s"]), int(attrs["i"])
        key = (self.password, salt, iters)
        salted = self.keys.get(key)
        if salted is None:
            salted = self.keys[key] = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iters)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored = hashlib.sha256(client_key).digest()
        final_bare = f"c=biws,r={attrs['r']}"
        self.auth_message = f"{self.first_bare},{server_first},{final_bare}".encode()
        sig = hmac.new(stored, self.auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        self.server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        return f"{final_bare},p={base64.b64encode(proof).decode()}".encode()

    def check(self, server_final):
        attrs = dict(kv.split("=", 1) for kv in server_final.split(","))
        want = hmac.new(self.server_key, self.auth_message, "sha256").digest()
        if "v" not in attrs or base64.b64decode(attrs["v"]) != want:
            raise PgError("SCRAM: wrong server signature")


def md5_response(user, password, salt):
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()


class LoginSteps:
    """The authentication dialogue as a pure state machine shared by the blocking and the asyncio
    client: feed it each backend message during login, send what it returns.  `done` once
    ReadyForQuery arrived."""

    def __init__(self, user, password, keys=None):
        self.user, self.password, self.keys = user, password, keys
        self.scram = None
        self.done = False
        self.params = {}
        self.backend_key = None

    def feed(self, kind, payload):
        """Returns bytes to send (possibly empty); raises PgError on a login failure."""
        if kind == b"R":
            code = struct.unpack_from("!i", payload)[0]
            if code == 0:
                return b""
            if code == 3:
                return message(b"p", cstr(self.password or ""))
            if code == 5:
                return message(b"p", md5_response(self.user, self.password or "", payload[4:8]) + b"\0")
            if code == 10:
                mechs = payload[4:].split(b"\0")
                if b"SCRAM-SHA-256" not in mechs:
                    raise PgError(f"no supported SASL mechanism in {mechs}")
                self.scram = ScramClient(self.password or "", self.keys)
                return message(b"p", self.scram.initial())
            if code == 11:
                return message(b"p", self.scram.respond(payload[4:].decode()))
            if code == 12:
                self.scram.check(payload[4:].decode())
                return b""
            raise PgError(f"unsupported authentication request {code}")
        if kind == b"E":
            raise PgError(error_text(error_fields(payload)), error_fields(payload))
        if kind == b"S":
            parts = payload.split(b"\0")
            self.params[parts[0].decode()] = parts[1].decode() if len(parts) > 1 else ""
        elif kind == b"K":
            self.backend_key = struct.unpack("!ii", payload[:8])
        elif kind == b"Z":
            self.done = True
        return b""


class QueryResult:
    """What the answer to one simple Query collected: rows as lists of str/None, command tags."""

    def __init__(self):
        self.rows, self.tags, self.error = [], [], None

    def feed(self, kind, payload):
        """True once ReadyForQuery ended the answer."""
        if kind == b"D":
            n = struct.unpack_from("!h", payload)[0]
            pos, row = 2, []
            for _ in range(n):
                ln = struct.unpack_from("!i", payload, pos)[0]
                pos += 4
                if ln < 0:
                    row.append(None)
                else:
                    row.append(payload[pos:pos + ln].decode("utf-8", "replace"))
                    pos += ln
            self.rows.append(row)
        elif kind == b"C":
            self.tags.append(payload.rstrip(b"\0").decode())
        elif kind == b"E":
            self.error = error_fields(payload)
        return kind == b"Z"


# ---------------------------------------------------------------------------
# blocking client

class Conn:
    """A blocking connection.  `Conn.connect(...)` logs in; `query(sql)` returns rows."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    @classmethod
    def connect(cls, host, port, user, database, password=None, timeout=10.0, params=None, keys=None):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = cls(sock)
        try:
            sock.sendall(startup_packet(user, database, params))
            steps = LoginSteps(user, password, keys)
            while not steps.done:
                kind, payload = c.read_message()
                out = steps.feed(kind, payload)
                if out:
                    sock.sendall(out)
            c.params, c.backend_key = steps.params, steps.backend_key
        except BaseException:
            sock.close()
            raise
        return c

    def read_message(self):
        while True:
            if len(self.buf) >= 5:
                ln = struct.unpack_from("!I", self.buf, 1)[0]
                if len(self.buf) >= ln + 1:
                    kind, payload = bytes(self.buf[:1]), bytes(self.buf[5:ln + 1])
                    del self.buf[:ln + 1]
                    return kind, payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise PgError("server closed the connection")
            self.buf += chunk

    def query(self, sql):
        self.sock.sendall(query_message(sql))
        res = QueryResult()
        while not res.feed(*self.read_message()):
            pass
        if res.error:
            raise PgError(error_text(res.error), res.error)
        return res.rows

    def close(self):
        try:
            self.sock.sendall(message(b"X"))
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------------------
# asyncio client

async def read_message_async(reader):
    head = await reader.readexactly(5)
    ln = struct.unpack_from("!I", head, 1)[0]
    return head[:1], await reader.readexactly(ln - 4)


async def login_async(host, port, user, database, password=None, keys=None, params=None):
    """Opens and logs in one connection; returns (reader, writer)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(startup_packet(user, database, params))
        steps = LoginSteps(user, password, keys)
        while not steps.done:
            kind, payload = await read_message_async(reader)
            out = steps.feed(kind, payload)
            if out:
                writer.write(out)
        await writer.drain()
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def query_async(reader, writer, sql):
    writer.write(query_message(sql))
    res = QueryResult()
    while not res.feed(*await read_message_async(reader)):
        pass
    if res.error:
        raise PgError(error_text(res.error), res.error)
    return res.rows
