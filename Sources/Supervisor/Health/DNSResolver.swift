// Host-name lookups off the supervisor's loop: each lookup runs getaddrinfo on its own short-lived thread.
import Shared
import Synchronization

/// What one lookup found (or why it failed).
struct ResolveResult: Sendable {
    var key: String
    var addresses: [SocketAddress]
    var error: String?
}

/// Results waiting for the loop, and the pipe that wakes it.
final class ResolverMailbox: Sendable {
    let results = Mutex<[ResolveResult]>([])
    let wakeWrite: Int32

    init(wakeWrite: Int32) { self.wakeWrite = wakeWrite }

    func post(_ r: ResolveResult) {
        results.withLock { $0.append(r) }
        var b: UInt8 = 1
        _ = try? Posix.write(wakeWrite, &b, 1)
    }
}

/// One lookup's input, handed to its thread.
final class ResolveJob: Sendable {
    let key: String
    let host: String
    let port: Int
    let mailbox: ResolverMailbox

    init(key: String, host: String, port: Int, mailbox: ResolverMailbox) {
        self.key = key
        self.host = host
        self.port = port
        self.mailbox = mailbox
    }

    func run() {
        do throws(SyscallError) {
            var seen = Set<String>()
            var list: [SocketAddress] = []
            for a in try SocketAddress.resolve(host: host, port: port) where seen.insert(a.description).inserted {
                list.append(a)
            }
            mailbox.post(ResolveResult(key: key, addresses: list, error: list.isEmpty ? "no address" : nil))
        } catch {
            mailbox.post(ResolveResult(key: key, addresses: [], error: error.description))
        }
    }
}

/// The supervisor's resolver: `start` never blocks; results come back through `wakeRead` (in epoll).
/// A thread per lookup (at most one per host name at a time, every dns_max_ttl) keeps one slow name
/// from delaying the others; the supervisor is not on the data path, so threads here cost nothing there.
final class DNSResolver {
    let wakeRead: Int32
    let mailbox: ResolverMailbox
    private(set) var inFlight = Set<String>()

    init() throws(SyscallError) {
        let (r, w) = try Posix.pipe()
        try Posix.setNonBlocking(r)
        try Posix.setNonBlocking(w)
        wakeRead = r
        mailbox = ResolverMailbox(wakeWrite: w)
    }

    /// Starts a lookup unless one for `key` is already running. Returns false when no thread could start.
    @discardableResult
    func start(key: String, host: String, port: Int) -> Bool {
        if inFlight.contains(key) { return true }
        let job = ResolveJob(key: key, host: host, port: port, mailbox: mailbox)
        guard Threads.startDetached({ job.run() }) else { return false }
        inFlight.insert(key)
        return true
    }

    /// Results that arrived since the last call (drains the wake-up pipe).
    func collect() -> [ResolveResult] {
        var buf = [UInt8](repeating: 0, count: 64)
        while true {
            let r = buf.withUnsafeMutableBytes { try? Posix.read(wakeRead, $0.baseAddress!, 64) }
            guard case .processed(let n)? = r, n > 0 else { break }
        }
        let results = mailbox.results.withLock { r -> [ResolveResult] in
            let out = r
            r = []
            return out
        }
        for r in results { inFlight.remove(r.key) }
        return results
    }
}
