// One side of a proxied connection, client or server — the role PgBouncer's sbuf plays: the socket,
// its generation, the input buffer and pgswift's own pending output, readiness flags and TLS. Reading,
// sending, flushing and giving the buffer back are written here once for both sides; what differs
// per side (byte counters, which error ends the connection, log prefixes) stays with the caller in
// Forwarding.swift and TLS.swift.
import Shared

struct Endpoint {
    var fd: Int32 = -1
    /// Bumped when the record is reused; epoll tokens carry it (`Token`), so a stale event is dropped.
    var gen: UInt32 = 0
    var input = IOBuf()
    var out = PendingOut()
    /// TLS state (TLSConnection.swift); nil for plaintext, the only test the plaintext path pays.
    var tls: TLSConn? = nil
    // The flags come last: Client puts its own 4-byte fields right after them instead of padding to 8.
    /// Edge-triggered readiness as last seen: read until EAGAIN (or a short read), write until blocked.
    var readable = false
    var writable: Bool
    var eof = false
    /// epoll reported RDHUP/HUP/ERR: read until EOF, never stop at a short read.
    var hangup = false

    init(writable: Bool) {
        self.writable = writable
    }

    /// One read into the input buffer (taking a pooled buffer first if it has none). `bytes` gets the
    /// count read. A failed TLS read ends the stream (`.closed`) and leaves OpenSSL's reason in the TLS
    /// state (`tlsReadFailure`). Under TLS, `readable` stays set while OpenSSL may hold decrypted or
    /// read-ahead bytes, which no epoll edge would announce.
    @inline(__always)
    mutating func read(_ buffers: BufferPool, bytes: inout Int) -> ReadOutcome {
        if input.base == nil {
            input.base = buffers.take()
        } else if input.end == buffers.size {
            input.compact()
            if input.end == buffers.size { return .full }
        }
        let b = input.base!
        let end = input.end
        if let t = tls {
            switch TLSIO.read(t, b + end, buffers.size - end) {
            case .data(let n, let drained):
                input.end = end &+ n
                bytes = n
                if drained && !hangup { readable = false }
                return .data
            case .wouldBlock:
                readable = false
                releaseIfEmpty(buffers)
                return .wouldBlock
            case .closed:
                return ended()
            case .failed(let reason):
                t.pointee.readFailure = reason
                return ended()
            }
        }
        do {
            switch try Posix.recv(fd, b + end, buffers.size - end) {
            case .processed(0):
                return ended()
            case .processed(let n):
                input.end = end &+ n
                bytes = n
                // A short read emptied the socket; with edge-triggered epoll new bytes bring a new
                // event, so skip the read that would only say EAGAIN.
                if n < buffers.size &- end && !hangup { readable = false }
                return .data
            case .wouldBlock:
                readable = false
                releaseIfEmpty(buffers)
                return .wouldBlock
            }
        } catch {
            return ended()
        }
    }

    /// Why the TLS read that ended the stream failed (nil: plaintext, or a clean close).
    var tlsReadFailure: String? { tls?.pointee.readFailure }

    @inline(__always)
    private mutating func ended() -> ReadOutcome {
        eof = true
        readable = false
        return .closed
    }

    /// Gives the input buffer back once everything in it has gone (idle connections hold none).
    @inline(__always)
    mutating func releaseIfEmpty(_ buffers: BufferPool) {
        if let b = input.base, input.start == input.end, input.partial == 0 {
            buffers.give(b)
            input = IOBuf()
        }
    }

    /// Drops `n` bytes from the front of the input (messages pgswift handled itself).
    mutating func consume(_ n: Int, _ buffers: BufferPool) {
        input.start += n
        if input.scan < input.start { input.scan = input.start }
        releaseIfEmpty(buffers)
    }

    /// Drops everything read so far (a connection whose answers nobody wants).
    mutating func discardInput(_ buffers: BufferPool) {
        input.start = input.end
        input.scan = input.end
        input.partial = 0
        releaseIfEmpty(buffers)
    }

    enum HeldMessage {
        /// No whole message yet (or no header).
        case none
        /// The length word is out of bounds.
        case invalid(MessageHeader)
        /// A whole message at the front of the input; `body` is valid until the input is consumed.
        case message(type: UInt8, body: UnsafeRawBufferPointer)
    }

    /// The next whole message at the front of the input, for the readers that handle one message at a
    /// time (logins, the admin console, auth_query replies); `maxLength` is `Worker.frameLimit(.held)`.
    func heldMessage(maxLength: Int) -> HeldMessage {
        guard let base = input.base else { return .none }
        let avail = input.end - input.start
        switch Wire.peekHeader(base + input.start, available: avail, maxLength: maxLength) {
        case .incomplete:
            return .none
        case .invalid(let h):
            return .invalid(h)
        case .header(let h):
            if avail < h.frameLength { return .none }
            return .message(type: h.type, body: UnsafeRawBufferPointer(start: base + input.start + Wire.headerSize,
                                                                        count: h.bodyLength))
        }
    }

    /// One send of `count` bytes, through TLS when the connection has it.
    @inline(__always)
    func send(_ p: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        if let t = tls { return try TLSIO.send(t, p, count) }
        return try Posix.send(fd, p, count)
    }

    /// Plain sockets only (`tls` nil): pgswift's queued bytes (`out`), then `count` bytes at `p`, in one
    /// sendmsg. Flushing the queue first would cost a second system call, and a transaction whose
    /// prepared-statement Bind pgswift rewrote has that Bind queued ahead of the client's Execute and
    /// Sync. The queue goes first: the result is how many of `p`'s bytes went (0 when the socket took
    /// less than the queue). `writable` is false when the socket took less than all. On a failure the
    /// queued bytes are dropped, as `flushOut` drops them; the caller ends the connection.
    mutating func sendQueued(then p: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> Int {
        let queued = out.end - out.start
        let r: IOResult
        do {
            r = try Posix.send(fd, out.base! + out.start, queued, then: p, count)
        } catch {
            out.release()
            throw error
        }
        guard case .processed(let n) = r else {
            writable = false
            return 0
        }
        if n < queued {
            out.consumed(n)
            writable = false
            return 0
        }
        out.consumed(queued)
        if n &- queued < count { writable = false }
        return n &- queued
    }

    enum FlushOutcome {
        /// Nothing of pgswift's own is left to write.
        case done
        /// The socket took less than all: wait for the EPOLLOUT edge (`writable` is now false).
        case blocked
        /// The write failed; the pending bytes are dropped, the caller ends the connection.
        case failed(SyscallError)
    }

    /// Writes pgswift's own queued bytes (`out`).
    mutating func flushOut() -> FlushOutcome {
        while !out.isEmpty {
            let o = out
            do {
                switch try self.send(o.base! + o.start, o.end - o.start) {
                case .processed(let n):
                    out.consumed(n)
                    if !out.isEmpty {
                        writable = false
                        return .blocked
                    }
                case .wouldBlock:
                    writable = false
                    return .blocked
                }
            } catch {
                out.release()
                return .failed(error)
            }
        }
        return .done
    }

    /// On EPOLLOUT under TLS: ciphertext left from an earlier write goes first.
    mutating func flushTLS(_ t: TLSConn) throws(SyscallError) {
        try TLSIO.flush(t)
        if !t.pointee.out.isEmpty { writable = false }
    }

    /// Ciphertext still waiting in the TLS layer (a final error must be out before the socket closes).
    var tlsPending: Bool {
        if let t = tls { return !t.pointee.out.isEmpty }
        return false
    }
}
