// Host-name lookups off the supervisor's loop: each lookup runs getaddrinfo on its own short-lived thread.
import Shared

/// What one lookup found (or why it failed).
struct ResolveResult: Sendable {
    var key: String
    var addresses: [SocketAddress]
    var error: String?
}

/// The supervisor's resolver: `start` never blocks; results come back through `mailbox` (its
/// `wakeRead` in epoll).
/// A thread per lookup (at most one per host name at a time, every dns_max_ttl) keeps one slow name
/// from delaying the others; the supervisor is not on the data path, so threads here cost nothing there.
final class DNSResolver {
    let mailbox: ThreadMailbox<ResolveResult>
    private(set) var inFlight = Set<String>()

    init() throws(SyscallError) {
        mailbox = try ThreadMailbox()
    }

    /// Starts a lookup unless one for `key` is already running. Returns false when no thread could start.
    @discardableResult
    func start(key: String, host: String, port: Int) -> Bool {
        if inFlight.contains(key) { return true }
        let mailbox = self.mailbox
        guard Threads.startDetached({ mailbox.post(Self.lookUp(key: key, host: host, port: port)) }) else { return false }
        inFlight.insert(key)
        return true
    }

    /// One lookup, on its own thread: the distinct addresses of `host`.
    private static func lookUp(key: String, host: String, port: Int) -> ResolveResult {
        do throws(SyscallError) {
            var seen = Set<String>()
            var list: [SocketAddress] = []
            for a in try SocketAddress.resolve(host: host, port: port) where seen.insert(a.description).inserted {
                list.append(a)
            }
            return ResolveResult(key: key, addresses: list, error: list.isEmpty ? "no address" : nil)
        } catch {
            return ResolveResult(key: key, addresses: [], error: error.description)
        }
    }

    /// Results that arrived since the last call (drains the wake-up pipe).
    func collect() -> [ResolveResult] {
        let results = mailbox.collect()
        for r in results { inFlight.remove(r.key) }
        return results
    }
}
