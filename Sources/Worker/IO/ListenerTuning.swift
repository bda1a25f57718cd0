// TCP options set once on the listening sockets, which accepted sockets inherit: no setsockopt per connection.
import Shared
import Glibc

extension Worker {
    /// Linux copies TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE/KEEPINTVL/KEEPCNT and TCP_USER_TIMEOUT from
    /// a listening socket to every socket accept() returns (checked by `SocketOptionsTests`), so
    /// setting PgBouncer's tcp_keepalive ... tcp_user_timeout here saves those calls per new client.
    /// The listeners are shared by all workers; each sets the same values (again on reload, as the
    /// settings may change). A listener outlives reloads: a field set before and 0 now goes back to
    /// the system's default value (setsockopt has no "unset"). If any call fails, accepted sockets are
    /// tuned one by one (`adoptAcceptedClient`).
    func tuneListeners() {
        var keepalive = config.tcpKeepaliveSettings
        if let before = listenerKeepalive,
           (keepalive.idle == 0 && before.idle != 0) || (keepalive.interval == 0 && before.interval != 0)
            || (keepalive.count == 0 && before.count != 0) {
            keepalive = Sockets.withSystemDefaults(keepalive)
        }
        var ok = true
        for fd in listenFDs {
            do throws(SyscallError) {
                try Sockets.setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
                try Sockets.setKeepalive(fd, keepalive)
            } catch {
                log.warning("could not set TCP options on a listening socket (\(error)); setting them per connection")
                ok = false
            }
        }
        listenerKeepalive = keepalive
        listenersTuned = ok
    }
}
