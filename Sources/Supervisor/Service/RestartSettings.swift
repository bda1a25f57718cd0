// The settings a reload cannot change (they shape sockets and processes); a reload names those it ignores.
import Shared

struct RestartSettings: Equatable, Sendable {
    var listenAddr: [String]
    var listenPort: Int
    var unixSocketDir: String
    var unixSocketMode: Int
    var unixSocketGroup = ""
    var soReuseport = false
    var listenBacklog: Int
    var workers: Int
    var workerBinary: String?
    var pidfile: String?
    /// In every cancel key handed out (PeerCancelKey): workers get it on their command line.
    var peerID = 0
}

extension RestartSettings {
    init(_ c: Config) {
        self.init(listenAddr: c.listenAddr, listenPort: c.listenPort, unixSocketDir: c.unixSocketDir,
                  unixSocketMode: c.unixSocketMode, unixSocketGroup: c.unixSocketGroup, soReuseport: c.soReuseport,
                  listenBacklog: c.listenBacklog, workers: c.workers,
                  workerBinary: c.workerBinary, pidfile: c.pidfile, peerID: c.peerID)
    }

    /// Config keys whose value differs in `new`: they take effect only after a restart.
    func changedKeys(in new: RestartSettings) -> [String] {
        var keys: [String] = []
        if listenAddr != new.listenAddr { keys.append("listen_addr") }
        if listenPort != new.listenPort { keys.append("listen_port") }
        if unixSocketDir != new.unixSocketDir { keys.append("unix_socket_dir") }
        if unixSocketMode != new.unixSocketMode { keys.append("unix_socket_mode") }
        if unixSocketGroup != new.unixSocketGroup { keys.append("unix_socket_group") }
        if soReuseport != new.soReuseport { keys.append("so_reuseport") }
        if listenBacklog != new.listenBacklog { keys.append("listen_backlog") }
        if workers != new.workers { keys.append("workers") }
        if workerBinary != new.workerBinary { keys.append("worker_binary") }
        if pidfile != new.pidfile { keys.append("pidfile") }
        if peerID != new.peerID { keys.append("peer_id") }
        return keys
    }
}
