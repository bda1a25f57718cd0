// The test's ends of the worker's sockets: a scripted client, and a scripted PostgreSQL backend.
import Glibc
import Shared

/// A non-blocking socket the test holds: what it sends is queued and written as the socket takes it
/// (the worker reads between turns), what arrives is kept whole and cut into messages.
final class Peer {
    private(set) var fd: Int32
    var reader = MessageReader()
    /// Every byte received, in order.
    private(set) var received: [UInt8] = []
    private var outbox: [UInt8] = []
    private var outStart = 0
    /// The other side closed (EOF or reset).
    private(set) var eof = false
    /// The worker refused a write (EPIPE, ECONNRESET): what was queued is dropped.
    private(set) var writeFailed = false
    /// The test stops reading (its socket buffer fills, the worker sees backpressure).
    var readingPaused = false

    init(fd: Int32) { self.fd = fd }

    var pendingOut: Int { outbox.count - outStart }
    var isOpen: Bool { fd >= 0 }

    func send(_ bytes: [UInt8]) {
        outbox += bytes
        pump()
    }

    /// Writes what the socket takes, reads what it holds.
    func pump() {
        guard fd >= 0 else { return }
        while outStart < outbox.count {
            let n = outbox.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + outStart, $0.count - outStart, Int32(MSG_NOSIGNAL)) }
            if n > 0 { outStart += n; continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            writeFailed = true
            outStart = outbox.count
        }
        if outStart == outbox.count && outStart > 0 {
            outbox = []
            outStart = 0
        }
        guard !eof, !readingPaused else { return }
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n > 0 {
                buf.withUnsafeBytes { reader.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                received += buf[0..<n]
                continue
            }
            if n == 0 { eof = true; return }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return }
            eof = true  // ECONNRESET: closed too
            return
        }
    }

    /// No more bytes from the test (the worker reads EOF after what was sent).
    func shutdownWrite() {
        pump()
        if fd >= 0 { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }
    }

    func close() {
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }

    deinit { close() }
}

/// One connection pgswift opened to the scripted PostgreSQL.
final class FakeServer {
    let peer: Peer
    /// Order of acceptance, from 0.
    let index: Int
    /// The StartupMessage's parameters once read (nil before, or for a cancel connection).
    private(set) var startup: [String: String]? = nil
    /// A CancelRequest connection: the process id and key it carried.
    private(set) var cancel: (pid: Int32, key: UInt32)? = nil
    /// The login was answered (AuthenticationOk ... ReadyForQuery).
    var loggedIn = false
    /// SSLRequests answered 'N' before the startup packet.
    private(set) var sslRequests = 0
    let backendPID: Int32
    let backendKey: UInt32

    init(peer: Peer, index: Int) {
        self.peer = peer
        self.index = index
        backendPID = Int32(10_000 + index)
        backendKey = UInt32(0xC0DE_0000) | UInt32(index)
    }

    var closed: Bool { peer.eof }
    func send(_ bytes: [UInt8]) { peer.send(bytes) }
    func nextMessage() -> Msg? { peer.reader.next() }

    /// Reads the startup packet (or CancelRequest) once whole. True when it was read now.
    func readStartup() -> Bool {
        guard startup == nil, cancel == nil, let p = peer.reader.nextUntyped(), p.count >= 8 else { return false }
        let code = TestWire.readInt32(p, 4)
        if code == Wire.sslRequestCode && p.count == 8 {
            // server_tls_sslmode prefer: a PostgreSQL without TLS says 'N' and the login goes on.
            sslRequests += 1
            send([UInt8(ascii: "N")])
            return readStartup()
        }
        if code == Wire.cancelRequestCode && p.count == 16 {
            cancel = (TestWire.readInt32(p, 8), UInt32(bitPattern: TestWire.readInt32(p, 12)))
            return true
        }
        var params: [String: String] = [:]
        var at = 8
        while at < p.count && p[at] != 0 {
            let (k, next) = TestWire.cString(p, from: at)
            let (v, after) = TestWire.cString(p, from: next)
            params[k] = v
            at = after
        }
        startup = params
        return true
    }

    /// PostgreSQL's answer to a trust login.
    func answerLogin(welcome: [(String, String)]) {
        var b = BE.authOk
        for (k, v) in welcome { b += BE.parameterStatus(k, v) }
        b += BE.backendKeyData(pid: backendPID, key: backendKey) + BE.ready("I")
        send(b)
        loggedIn = true
    }

    func close() { peer.close() }
}
