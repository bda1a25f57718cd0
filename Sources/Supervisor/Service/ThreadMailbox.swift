// What the supervisor's short-lived helper threads (DNS lookups, cancel forwarding to peers) report to
// its loop: a locked list, and a pipe whose read end, in the loop's epoll set, wakes the loop.
import Shared
import Synchronization

final class ThreadMailbox<Item: Sendable>: Sendable {
    private let items = Mutex<[Item]>([])
    let wakeRead: Int32
    let wakeWrite: Int32

    init() throws(SyscallError) {
        let (r, w) = try Posix.pipe()  // non-blocking, close-on-exec
        wakeRead = r
        wakeWrite = w
    }

    /// From any thread: adds `item` and wakes the loop.
    func post(_ item: Item) {
        items.withLock { $0.append(item) }
        var b: UInt8 = 1
        _ = try? Posix.write(wakeWrite, &b, 1)
    }

    /// On the loop: what was posted since the last call (drains the wake-up pipe).
    func collect() -> [Item] {
        var buf = [UInt8](repeating: 0, count: 64)
        while true {
            let r = buf.withUnsafeMutableBytes { try? Posix.read(wakeRead, $0.baseAddress!, 64) }
            guard case .processed(let n)? = r, n > 0 else { break }
        }
        return items.withLock { list in
            let out = list
            list = []
            return out
        }
    }
}
