// Control messages that did not fit the socket yet, kept in order and sent when it drains (EPOLLOUT).
import Glibc

/// A SOCK_SEQPACKET socket refuses a datagram when its buffer is full; a stats blob of many chunks
/// (SHOW CLIENTS with thousands of rows) easily fills it. Everything queued here goes out in order,
/// in both directions (supervisor → worker and worker → supervisor).
public struct ControlOutbox {
    private var queue: [[UInt8]] = []
    private var head = 0
    /// True while the control fd is registered for EPOLLOUT.
    public var watchingOutput = false

    public init() {}
    /// Bound on queued datagrams: a supervisor that stopped reading must not make a worker grow forever.
    public static let maximumQueued = 4096

    public var isEmpty: Bool { head == queue.count }
    public var count: Int { queue.count - head }

    /// Queues `bytes` behind what waits (the caller then calls `drain`). False when the queue is full.
    public mutating func enqueue(_ bytes: [UInt8]) -> Bool {
        if count >= Self.maximumQueued { return false }
        queue.append(bytes)
        return true
    }

    /// Sends what it can. Returns false when the peer is gone.
    public mutating func drain(fd: Int32) -> Bool {
        while head < queue.count {
            let sent: Bool? = queue[head].withUnsafeBytes { raw -> Bool? in
                do throws(SyscallError) {
                    switch try Posix.send(fd, raw.baseAddress!, raw.count) {
                    case .processed: return true
                    case .wouldBlock: return false
                    }
                } catch {
                    return nil
                }
            }
            guard let sent else {
                queue.removeAll()
                head = 0
                return false
            }
            if !sent { break }
            head += 1
        }
        if head == queue.count {
            queue.removeAll(keepingCapacity: queue.count < 64)
            head = 0
        } else if head > 1024 {
            queue.removeFirst(head)
            head = 0
        }
        return true
    }
}

