// Which worker binary to run and with which arguments: pure functions, unit-tested.
import Shared

enum WorkerLaunch {
    static let binaryName = "pgswift-worker"
    static let installedBinary = "/usr/lib/pgswift/pgswift-worker"

    /// `worker_binary` from the config if set; else `pgswift-worker` next to the supervisor's own
    /// executable (a build directory, /usr/bin); else the packaged location.
    static func locateBinary(configured: String?, executablePath: String?,
                             isExecutable: (String) -> Bool) -> String {
        if let configured, !configured.isEmpty { return configured }
        if let exe = executablePath, let slash = exe.lastIndex(of: "/") {
            let candidate = String(exe[..<slash]) + "/" + binaryName
            if isExecutable(candidate) { return candidate }
        }
        return installedBinary
    }

    /// `path` made absolute against `currentDirectory` (workers may be started from anywhere).
    static func absolutePath(_ path: String, currentDirectory: String) -> String {
        if path.hasPrefix("/") { return path }
        var rel = Substring(path)
        while rel.hasPrefix("./") { rel = rel.dropFirst(2) }
        let base = currentDirectory.hasSuffix("/") ? String(currentDirectory.dropLast()) : currentDirectory
        return base + "/" + rel
    }

    /// The worker's arguments. Its descriptors arrive in the order Posix.spawn maps them to 3, 4, 5...:
    /// the slot's TCP listeners, then the shared Unix listener (if any), then the control socket.
    static func arguments(configPath: String, slot: Int, tcpCount: Int, hasUnix: Bool, verbosity: Int,
                          respawned: Bool = false, clientsFD: Bool = false, clientsWord: Int? = nil,
                          overrides: [ConfigOverride] = [], peerID: Int = 0) -> [String] {
        var next: Int32 = 3
        var tcp: [String] = []
        for _ in 0..<tcpCount {
            tcp.append(String(next))
            next += 1
        }
        var unix = ""
        if hasUnix {
            unix = String(next)
            next += 1
        }
        var args = ["--config", configPath, "--slot", String(slot),
                    "--tcp-fds", tcp.joined(separator: ","), "--unix-fds", unix,
                    "--control-fd", String(next)]
        for _ in 0..<max(0, verbosity) { args.append("-v") }
        // A replacement process must not assume the even share of a pool: the supervisor may have
        // moved some of this slot's share elsewhere while it was gone; it waits to be told.
        if respawned { args.append("--respawned") }
        // The shared client count (ClientCounter) follows the control socket.
        if clientsFD {
            args += ["--clients-fd", String(next + 1)]
            if let w = clientsWord { args += ["--clients-word", String(w)] }
        }
        // The admin console's SET values since the last RELOAD: a new process loads what the others
        // run. Only present when there are some, so a worker binary older than SET still starts.
        for o in overrides { args += ["--set", o.key + "=" + o.value] }
        // The peer id the service started with (a reload cannot change it: the cancel keys already
        // handed out carry it), so a worker respawned after the file changed keeps making the same keys.
        if peerID > 0 { args += ["--peer-id", String(peerID)] }
        return args
    }
}
