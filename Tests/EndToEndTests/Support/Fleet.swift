// Several "hosts" on one machine for FleetTests: network namespaces on a bridge, and HAProxy in front.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `count` network namespaces, each with a veth pair whose outer end is a port of a bridge of this
/// run's own. The bridge (root namespace) has the first address of a private /24 (`gateway`: where the
/// test PostgreSQL listens, and where HAProxy's connections come from); namespace i has the address
/// `addresses[i]` and a loopback. The namespaces reach each other through the bridge (layer 2: no IP
/// forwarding is switched on), and the root namespace reaches them all. Names and subnet are fresh per
/// run; `remove()` deletes everything, and a watchdog does it if the test process dies first.
final class FleetNetwork: @unchecked Sendable {
    /// Why the machine cannot make namespaces (not root, no CAP_NET_ADMIN, no `ip`): the test skips.
    struct Refused: Error, CustomStringConvertible { let description: String }

    let namespaces: [String]
    let addresses: [String]
    let gateway: String
    /// The /24 in CIDR notation, e.g. "10.123.45.0/24".
    let subnet: String
    private let bridge: String
    private let outerLinks: [String]
    private let innerLinks: [String]
    private let ip: String
    private var watchdog: Watchdog?
    private let lock = NSLock()
    private var removed = false

    static func ipTool() -> String? {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Makes the network. Throws `Refused` when the first namespace cannot be made (the machine does
    /// not allow it), any other error when a later step fails (after removing what was made).
    static func create(count: Int) throws -> FleetNetwork {
        guard let ip = ipTool() else { throw Refused(description: "no `ip` command (install iproute2)") }
        let tag = String((0..<5).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! })
        // A /24 no route of this machine covers yet.
        let routes = (try? runCommand([ip, "-4", "route", "show", "table", "all"]).stdout) ?? ""
        var prefix = ""
        for _ in 0..<50 {
            let candidate = "10.\(Int.random(in: 100..<250)).\(Int.random(in: 0..<256))"
            if !routes.contains(candidate + ".") { prefix = candidate; break }
        }
        guard !prefix.isEmpty else { throw E2EError("no free 10.x.y.0/24 subnet found") }
        let network = FleetNetwork(ip: ip, tag: tag, prefix: prefix, count: count)
        do {
            try network.build()
        } catch let refused as Refused {
            network.remove()
            throw refused
        } catch {
            network.remove()
            throw error
        }
        return network
    }

    private init(ip: String, tag: String, prefix: String, count: Int) {
        self.ip = ip
        namespaces = (1...count).map { "pgswift-fleet-\(tag)-\($0)" }
        // Interface names have at most 15 characters.
        outerLinks = (1...count).map { "pf\(tag)h\($0)" }
        innerLinks = (1...count).map { "pf\(tag)n\($0)" }
        bridge = "pf\(tag)br"
        gateway = "\(prefix).1"
        addresses = (1...count).map { "\(prefix).\($0 + 1)" }
        subnet = "\(prefix).0/24"
    }

    private func run(_ args: String...) throws {
        let r = try runCommand([ip] + args, timeout: 30)
        guard r.succeeded else { throw E2EError("ip \(args.joined(separator: " ")): \(r)") }
    }

    private func build() throws {
        let first = try runCommand([ip, "netns", "add", namespaces[0]], timeout: 30)
        guard first.succeeded else {
            throw Refused(description: "this machine cannot create a network namespace (`ip netns add` as uid "
                          + "\(geteuid())): \(first.stderr.trimmed)")
        }
        watchdog = try? Watchdog(cleanup: cleanupScript())
        try run("link", "add", bridge, "type", "bridge")
        try run("addr", "add", gateway + "/24", "dev", bridge)
        try run("link", "set", bridge, "up")
        for (i, ns) in namespaces.enumerated() {
            if i > 0 { try run("netns", "add", ns) }
            let inner = innerLinks[i]
            try run("link", "add", outerLinks[i], "type", "veth", "peer", "name", inner)
            try run("link", "set", outerLinks[i], "master", bridge, "up")
            try run("link", "set", inner, "netns", ns)
            try run("-n", ns, "addr", "add", addresses[i] + "/24", "dev", inner)
            try run("-n", ns, "link", "set", inner, "up")
            try run("-n", ns, "link", "set", "lo", "up")
        }
    }

    private func cleanupScript() -> String {
        (outerLinks.map { "\(ip) link del \($0) 2>/dev/null" } + namespaces.map { "\(ip) netns del \($0) 2>/dev/null" }
         + ["\(ip) link del \(bridge) 2>/dev/null", "true"]).joined(separator: "\n")
    }

    /// The argv prefix that runs a command inside namespace `index`.
    func exec(_ index: Int) -> [String] { [ip, "netns", "exec", namespaces[index]] }

    /// Deletes the links, the namespaces and the bridge (each deletion that fails is ignored: it may
    /// not have been made). Idempotent.
    func remove() {
        lock.lock()
        defer { lock.unlock() }
        if removed { return }
        removed = true
        _ = try? runCommand(["/bin/sh", "-c", cleanupScript()], timeout: 60)
        watchdog?.cancel()
    }

    /// Whether any of this run's namespaces or links still exists (for the test's own check).
    func leftovers() -> [String] {
        let netns = (try? runCommand([ip, "netns", "list"]).stdout) ?? ""
        let links = (try? runCommand([ip, "-o", "link", "show"]).stdout) ?? ""
        return namespaces.filter { netns.contains($0) } + (outerLinks + [bridge]).filter { links.contains($0 + ":") || links.contains($0 + "@") }
    }

    deinit { remove() }
}

/// Debian's HAProxy in front of the fleet: TCP mode, round robin, an HTTP check of `/health` on each
/// server's `check port`, with a stats page (CSV) on another port for the test to read server states.
final class HAProxy: @unchecked Sendable {
    static let binary = "/usr/sbin/haproxy"

    struct Server {
        let name: String
        let address: String
        let port: Int
        let checkPort: Int
    }

    let port: Int
    let statsPort: Int
    let dir: String
    let configPath: String
    private let process: ChildProcess
    private var watchdog: Watchdog?
    private var stopped = false

    /// The configuration docs/DEPLOYMENT.md shows, with a short check interval (every 300 ms, out after
    /// 2 failures, back after 2 successes) so the test does not wait long.
    static func config(port: Int, statsPort: Int, servers: [Server]) -> String {
        """
        global
            log stderr format raw local0 info
            maxconn 4000

        defaults
            log global
            mode tcp
            timeout connect 5s
            timeout client 1h
            timeout server 1h

        frontend postgres
            bind 127.0.0.1:\(port)
            default_backend pgswift

        backend pgswift
            mode tcp
            balance roundrobin
            option httpchk GET /health
            http-check expect status 200
            default-server check inter 300ms fall 2 rise 2
        \(servers.map { "    server \($0.name) \($0.address):\($0.port) port \($0.checkPort)" }.joined(separator: "\n"))

        listen stats
            bind 127.0.0.1:\(statsPort)
            mode http
            timeout client 10s
            stats enable
            stats uri /stats

        """
    }

    /// Writes the config, checks it with `haproxy -c`, starts HAProxy in the foreground and waits
    /// until its stats port answers.
    static func start(servers: [Server]) throws -> HAProxy {
        let dir = try makeTempDirectory(prefix: "haproxy")
        let port = try freePort(), statsPort = try freePort()
        let configPath = dir + "/haproxy.cfg"
        try config(port: port, statsPort: statsPort, servers: servers).write(toFile: configPath, atomically: false,
                                                                              encoding: .utf8)
        let check = try runCommand([binary, "-c", "-f", configPath], timeout: 30)
        guard check.succeeded else { throw E2EError("haproxy -c refused the config: \(check)") }
        let child = try ChildProcess.spawn([binary, "-db", "-f", configPath], stdoutPath: dir + "/haproxy.stdout",
                                           stderrPath: dir + "/haproxy.log")
        let proxy = HAProxy(port: port, statsPort: statsPort, dir: dir, configPath: configPath, process: child)
        guard waitUntil(timeout: 30, { !child.isRunning || TestSocket.canConnect(port: statsPort) }), child.isRunning else {
            let log = proxy.log()
            proxy.stop()
            throw E2EError("haproxy did not start: \(log)")
        }
        return proxy
    }

    private init(port: Int, statsPort: Int, dir: String, configPath: String, process: ChildProcess) {
        self.port = port
        self.statsPort = statsPort
        self.dir = dir
        self.configPath = configPath
        self.process = process
        watchdog = try? Watchdog(cleanup: "kill -9 \(process.pid) 2>/dev/null; rm -rf '\(dir)'")
    }

    deinit { stop() }

    func log() -> String { readTextFile(dir + "/haproxy.log") }

    var isRunning: Bool { process.isRunning }

    /// The backend's servers as the stats page shows them now: name → (status, e.g. "UP", "DOWN",
    /// "UP 1/2"; total sessions sent there). Empty if the page could not be read.
    func servers() -> [String: (status: String, sessions: Int)] {
        guard let socket = try? TestSocket(port: statsPort, timeout: 5) else { return [:] }
        defer { socket.close() }
        let request = "GET /stats;csv HTTP/1.0\r\n\r\n"  // closed after the answer
        guard (try? socket.send(Array(request.utf8))) != nil else { return [:] }
        let text = String(decoding: socket.readUntilClosed(timeout: 5).data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return [:] }
        let head = text[..<split.lowerBound].lowercased()
        var body = String(text[split.upperBound...])
        if head.contains("transfer-encoding: chunked") { body = Self.dechunk(body) }
        let lines = body.split(separator: "\n").map(String.init)
        guard let header = lines.first(where: { $0.hasPrefix("# ") }) else { return [:] }
        let columns = header.dropFirst(2).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let px = columns.firstIndex(of: "pxname"), let sv = columns.firstIndex(of: "svname"),
              let st = columns.firstIndex(of: "status"), let stot = columns.firstIndex(of: "stot") else { return [:] }
        var out: [String: (status: String, sessions: Int)] = [:]
        for line in lines where !line.hasPrefix("#") {
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard f.count > max(px, sv, st, stot), f[px] == "pgswift", f[sv] != "BACKEND" else { continue }
            out[f[sv]] = (f[st], Int(f[stot]) ?? 0)
        }
        return out
    }

    /// The payload of a chunked HTTP body (HAProxy 2.6 sends its stats page chunked, even to HTTP/1.0).
    static func dechunk(_ body: String) -> String {
        var bytes = Array(body.utf8)[...]
        var out: [UInt8] = []
        while let eol = bytes.firstIndex(of: UInt8(ascii: "\r")) {
            let sizeText = String(decoding: bytes[bytes.startIndex..<eol], as: UTF8.self)
            guard let size = Int(sizeText.split(separator: ";").first ?? "", radix: 16), size > 0,
                  eol + 2 + size <= bytes.endIndex else { break }
            out += bytes[(eol + 2)..<(eol + 2 + size)]
            bytes = bytes[min(bytes.endIndex, eol + 2 + size + 2)...]
        }
        return String(decoding: out, as: UTF8.self)
    }

    func stop() {
        if stopped { return }
        stopped = true
        process.terminate(SIGTERM, grace: 10)
        watchdog?.cancel()
        if ProcessInfo.processInfo.environment["PGSWIFT_E2E_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}
