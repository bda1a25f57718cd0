// TCP options set once on the listening sockets, which accepted sockets inherit: no setsockopt per connection.
import Shared
import Glibc

extension Worker {
    /// Linux copies TCP_NODELAY and SO_KEEPALIVE (with its timer) from a listening socket to every
    /// socket accept() returns, so setting them here saves two setsockopt calls per new client.
    /// The listeners are shared by all workers; each sets the same values (again on reload, as
    /// tcp_keepalive may change). If any call fails, accepted sockets are tuned one by one as before.
    func tuneListeners() {
        var ok = true
        for fd in listenFDs {
            do throws(SyscallError) {
                try Sockets.setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
                try Sockets.setIntOption(fd, SOL_SOCKET, SO_KEEPALIVE, config.tcpKeepalive ? 1 : 0)
            } catch {
                log.warning("could not set TCP options on a listening socket (\(error)); setting them per connection")
                ok = false
            }
        }
        listenersTuned = ok
    }
}
