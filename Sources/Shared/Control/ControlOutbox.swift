// Control messages that did not fit the socket yet, kept in order and sent when it drains (EPOLLOUT).
import Glibc

/// A SOCK_SEQPACKET socket refuses a datagram when its buffer is full; a stats blob of many chunks
/// (SHOW CLIENTS with thousands of rows) easily fills it. Everything queued here goes out in order,
/// in both directions (supervisor → worker and worker → supervisor).
public struct ControlOutbox {
    private var queue: [[UInt8]] = []
    /// The descriptor each queued datagram carries (SCM_RIGHTS; -1: none), owned by the outbox until
    /// sent (then closed here: the peer has its own copy) or dropped (closed).
    private var fds: [Int32] = []
    private var head = 0
    /// True while the control fd is registered for EPOLLOUT.
    public var watchingOutput = false

    public init() {}
    /// Bound on queued datagrams: a supervisor that stopped reading must not make a worker grow forever.
    public static let maximumQueued = 4096

    public var isEmpty: Bool { head == queue.count }
    public var count: Int { queue.count - head }

    /// Queues `bytes` behind what waits (the caller then calls `drain`). False when the queue is full.
    /// `fd` (>= 0) goes with the datagram and belongs to the outbox from now on, queued or not: it is
    /// closed here once sent, or at once when the queue is full.
    public mutating func enqueue(_ bytes: [UInt8], fd: Int32 = -1) -> Bool {
        if count >= Self.maximumQueued {
            if fd >= 0 { Posix.close(fd) }
            return false
        }
        queue.append(bytes)
        fds.append(fd)
        return true
    }

    /// Drops everything queued (the peer is gone), closing the descriptors that were to go with it.
    public mutating func discard() {
        for f in fds[head...] where f >= 0 { Posix.close(f) }
        self = ControlOutbox()
    }

    /// Sends what it can. Returns false when the peer is gone.
    public mutating func drain(fd: Int32) -> Bool {
        while head < queue.count {
            let passing = fds[head]
            let sent: Bool? = queue[head].withUnsafeBytes { raw -> Bool? in
                do throws(SyscallError) {
                    let result = passing >= 0 ? try Posix.sendWithFDs(fd, raw, fds: [passing])
                                              : try Posix.send(fd, raw.baseAddress!, raw.count)
                    switch result {
                    case .processed: return true
                    case .wouldBlock: return false
                    }
                } catch {
                    return nil
                }
            }
            guard let sent else {
                for f in fds[head...] where f >= 0 { Posix.close(f) }
                queue.removeAll()
                fds.removeAll()
                head = 0
                return false
            }
            if !sent { break }
            if passing >= 0 { Posix.close(passing) }
            head += 1
        }
        if head == queue.count {
            queue.removeAll(keepingCapacity: queue.count < 64)
            fds.removeAll(keepingCapacity: fds.count < 64)
            head = 0
        } else if head > 1024 {
            queue.removeFirst(head)
            fds.removeFirst(head)
            head = 0
        }
        return true
    }
}

