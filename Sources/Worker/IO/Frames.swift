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
