// One length policy for every PostgreSQL message header the worker reads (client and server, login
// and data path, admin console, auth_query replies): `frameHeader` over `Wire.peekHeader`. The cap
// depends only on how the message is held:
//   forwarded  streamed through piecemeal (queries, results, both directions): up to
//              max_packet_size, as in PgBouncer ("one query or one result set row");
//   held       read whole into the connection's 32 KiB input buffer before it is handled (startup
//              replies, passwords, server login, admin console, auth_query replies): up to what
//              the buffer holds — a larger one could never be read.
// The startup packet (no type byte) has its own reader, StartupPacket.peekLength, capped at
// PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
import Shared

enum FrameUse {
    case forwarded
    case held
}

extension Worker {
    @inline(__always)
    func frameLimit(_ use: FrameUse) -> Int {
        use == .forwarded ? maxPacket : buffers.size - 1
    }

    @inline(__always)
    func frameHeader(_ p: UnsafeRawPointer, available: Int, _ use: FrameUse) -> FrameResult {
        Wire.peekHeader(p, available: available, maxLength: frameLimit(use))
    }
}

/// What one read did for a loop over messages held whole in the input buffer (`readHeld`).
enum HeldRead {
    /// Bytes came: look at the buffer again.
    case more
    /// Nothing to read now: wait for the next event.
    case wait
    /// `readHeld` failed or closed the connection: stop.
    case stopped
}

extension Worker {
    /// One read for a loop that handles only whole messages held in a client's buffer (login, the
    /// admin console), made once the buffer holds no complete one. A full buffer is a message that can
    /// never be read whole (held frames are capped below the buffer size): the client gets `tooLarge`.
    func readHeld(client ci: Int32, tooLarge: (code: String, message: String), closed reason: String) -> HeldRead {
        guard clients[ci].io.readable else { return .wait }
        switch readInto(client: ci) {
        case .data: return .more
        case .wouldBlock: return .wait
        case .full:
            failClient(ci, code: tooLarge.code, message: tooLarge.message)
            return .stopped
        case .closed:
            closeClient(ci, reason: reason, notify: false)
            return .stopped
        }
    }

    /// The same for a server (login, its TLS answer, an auth_query reply). A full buffer closes the
    /// server with `tooLarge`; nil: it is waited on like an empty socket (the caller's own checks
    /// refuse what cannot fit).
    func readHeld(server si: Int32, tooLarge: String? = nil, onClosed: () -> Void) -> HeldRead {
        guard servers[si].io.readable else { return .wait }
        switch readInto(server: si) {
        case .data: return .more
        case .wouldBlock: return .wait
        case .full:
            guard let tooLarge else { return .wait }
            closeServer(si, reason: tooLarge)
            return .stopped
        case .closed:
            onClosed()
            return .stopped
        }
    }

    /// The next whole message at the front of the input of a server pgswift talks to itself (its login,
    /// an auth_query reply, a pool's listening connection), reading when none is held yet; the held
    /// length policy (`frameLimit(.held)`). Nil: more bytes are needed, or the connection failed and
    /// `invalid` (a length out of bounds) or `onClosed` ran. The message stays in the input: the
    /// caller consumes it (`io.consume(Wire.headerSize + body.count, buffers)`), before or after
    /// handling it as its protocol needs.
    func nextHeldMessage(server si: Int32, tooLarge: String? = nil, invalid: (MessageHeader) -> Void,
                         onClosed: () -> Void) -> (type: UInt8, body: UnsafeRawBufferPointer)? {
        while true {
            switch servers[si].io.heldMessage(maxLength: frameLimit(.held)) {
            case .message(let type, let body):
                return (type, body)
            case .invalid(let h):
                invalid(h)
                return nil
            case .none:
                if readHeld(server: si, tooLarge: tooLarge, onClosed: onClosed) != .more { return nil }
            }
        }
    }
}
