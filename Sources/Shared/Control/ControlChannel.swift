// One end of a supervisor↔worker SOCK_SEQPACKET socket pair: sends and receives whole ControlMessages.

/// What one non-blocking receive produced.
public enum ControlReceive: Equatable, Sendable {
    case message(ControlMessage)
    /// Nothing queued: wait for the fd to become readable.
    case wouldBlock
    /// The peer closed its end (or the socket failed): stop using the channel.
    case closed
    /// A datagram arrived that is not a valid message (it has been consumed; the channel stays usable).
    case invalid(String)
}

/// Owns the descriptor (closed in deinit) and a receive buffer allocated once.
public struct ControlChannel: ~Copyable {
    public let fd: Int32
    private let buffer: UnsafeMutableRawPointer
    /// The descriptor the last datagram carried (SCM_RIGHTS; -1: none): a `moveServer`'s socket.
    private let passed: UnsafeMutablePointer<Int32>
    /// One byte more than the largest valid message, so an oversized datagram is detected, not cut.
    private var bufferSize: Int { ControlMessage.maximumSize + 1 }

    /// Takes ownership of `fd`, a non-blocking SOCK_SEQPACKET socket (Posix.socketPair()).
    public init(fd: Int32) {
        self.fd = fd
        self.buffer = .allocate(byteCount: ControlMessage.maximumSize + 1, alignment: 8)
        self.passed = .allocate(capacity: 1)
        passed.pointee = -1
    }

    deinit {
        if passed.pointee >= 0 { Posix.close(passed.pointee) }
        passed.deallocate()
        buffer.deallocate()
        Posix.close(fd)
    }

    /// Sends one message. False if the peer is gone or the socket buffer is full (the message is dropped).
    @discardableResult
    public func send(_ message: ControlMessage) -> Bool {
        let bytes = message.encode()
        if bytes.count > ControlMessage.maximumSize { return false }
        let result = bytes.withUnsafeBytes { raw -> IOResult? in
            do throws(SyscallError) {
                return try Posix.send(fd, raw.baseAddress!, raw.count)
            } catch {
                return nil  // EPIPE, ECONNRESET: the worker is gone
            }
        }
        if case .processed(let n)? = result { return n == bytes.count }
        return false
    }

    /// The descriptor that came with the message `receive` returned last (-1: none); the caller owns it
    /// now. One not taken is closed at the next `receive`.
    public func takePassedFD() -> Int32 {
        let f = passed.pointee
        passed.pointee = -1
        return f
    }

    /// Receives one message without blocking (recvmsg: a `moveServer` carries a socket).
    public func receive() -> ControlReceive {
        if passed.pointee >= 0 {
            Posix.close(passed.pointee)
            passed.pointee = -1
        }
        let result: IOResult
        var count: Int32 = 0
        do throws(SyscallError) {
            result = try Posix.receive(fd, buffer, bufferSize, fds: passed, maxFDs: 1, received: &count)
            if count == 0 { passed.pointee = -1 }
        } catch {
            // ECONNRESET and friends: the peer is gone; nothing else is recoverable on this socket either.
            return .closed
        }
        switch result {
        case .wouldBlock:
            return .wouldBlock
        case .processed(0):
            // Every message has at least its kind byte, so an empty read is end of stream.
            return .closed
        case .processed(let n):
            if n > ControlMessage.maximumSize {
                return .invalid("control message longer than \(ControlMessage.maximumSize) bytes")
            }
            do throws(ControlDecodeError) {
                return .message(try ControlMessage.decode(UnsafeRawBufferPointer(start: buffer, count: n)))
            } catch {
                return .invalid(error.description)
            }
        }
    }
}
