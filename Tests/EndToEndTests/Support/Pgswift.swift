// Starting the real pgswift supervisor for a test: config + userlist in a temp dir, stderr captured.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A pgswift configuration with sane test defaults, rendered to pgbouncer.ini format.
/// Defaults: 2 workers, client auth trust, session pooling, pool size 20, databases `testdb` and
/// `bench` on the test PostgreSQL (no forced user), a userlist with every test role's plain password.
struct PgswiftSettings {
    var workers = 2
    var authType = "trust"
    var poolMode = "session"
    var defaultPoolSize = 20
    var maxClientConn = 500
    /// `[databases]` entries in order: name and connection string.
    var databases: [(name: String, connection: String)]
    /// `userlist.txt` entries in order: user and password (plain, `md5…` or `SCRAM-SHA-256$…`).
    var users: [(user: String, secret: String)]
    /// More `[pgbouncer]` lines, e.g. ("client_login_timeout", "2").
    var settings: [(key: String, value: String)] = []
    /// `[users]` entries, e.g. ("u_trust", "query_timeout=1").
    var userSettings: [(user: String, settings: String)] = []
    /// More `[pgswift]` lines.
    var pgswiftSettings: [(key: String, value: String)] = []
    /// `[peers]` entries, e.g. (2, "host=127.0.0.1 port=6433").
    var peers: [(id: Int, connection: String)] = []
    /// The listen port (nil: a fresh free one), e.g. one a peer's `[peers]` already names.
    var port: Int? = nil
    /// `listen_addr`: one IPv4 address, where the readiness check and `target` connect (a network
    /// namespace's own address when `commandPrefix` runs pgswift in one: FleetTests).
    var listenAddr = "127.0.0.1"
    /// Pass `-v` to the supervisor.
    var verbose = false
    /// Run the supervisor through this command (e.g. `unshare -m ...`); it must exec the rest of its arguments.
    var commandPrefix: [String] = []
    /// Who the readiness check (`SELECT 1` through pgswift) logs in as.
    var probe: ClientTarget? = ClientTarget(port: 0, user: "u_trust", database: "testdb",
                                           password: PostgresServer.passwords["u_trust"])

    init(postgres: PostgresServer) {
        databases = [
            ("testdb", postgres.connectionString(dbname: "testdb")),
            ("bench", postgres.connectionString(dbname: "bench")),
        ]
        users = PostgresServer.passwords.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// The ini text; `port`, `dir` are the listen port and the instance's directory.
    func render(port: Int, dir: String) -> String {
        var lines = ["[databases]"]
        lines += databases.map { "\($0.name) = \($0.connection)" }
        lines += [
            "",
            "[pgbouncer]",
            "listen_addr = \(listenAddr)",
            "listen_port = \(port)",
            "unix_socket_dir = \(dir)",
            "auth_type = \(authType)",
            "auth_file = \(dir)/userlist.txt",
            "pool_mode = \(poolMode)",
            "default_pool_size = \(defaultPoolSize)",
            "max_client_conn = \(maxClientConn)",
        ]
        lines += settings.map { "\($0.key) = \($0.value)" }
        if !userSettings.isEmpty {
            lines += ["", "[users]"] + userSettings.map { "\($0.user) = \($0.settings)" }
        }
        if !peers.isEmpty {
            lines += ["", "[peers]"] + peers.map { "\($0.id) = \($0.connection)" }
        }
        lines += ["", "[pgswift]", "workers = \(workers)"]
        lines += pgswiftSettings.map { "\($0.key) = \($0.value)" }
        return lines.joined(separator: "\n") + "\n"
    }

    func renderUserlist() -> String {
        users.map { "\"\($0.user)\" \"\($0.secret)\"\n" }.joined()
    }
}

/// A running (or failed) pgswift supervisor and its workers.
final class Pgswift: @unchecked Sendable {
    let dir: String
    /// The address it listens on (`PgswiftSettings.listenAddr`).
    let host: String
    let port: Int
    let configPath: String
    let process: ChildProcess
    let expectedWorkers: Int?
    private var watchdog: Watchdog?
    private var stopped = false
    /// False once `relaunch` handed the directory to the next supervisor.
    private var ownsDirectory = true

    var supervisorPid: pid_t { process.pid }
    let logPath: String

    // MARK: starting

    /// Writes the config from `settings`, starts pgswift and waits until it serves `SELECT 1`
    /// and all its workers are up.
    static func start(_ settings: PgswiftSettings, timeout: Double = 60, environment: [String: String] = [:],
                      binary: String? = nil) throws -> Pgswift {
        let dir = try makeTempDirectory(prefix: "px")
        let port = try settings.port ?? freePort()
        let px = try launch(ini: settings.render(port: port, dir: dir), userlist: settings.renderUserlist(),
                            dir: dir, port: port, workers: settings.workers, verbose: settings.verbose,
                            commandPrefix: settings.commandPrefix, environment: environment, binary: binary,
                            host: settings.listenAddr)
        do {
            var probe = settings.probe
            probe?.port = port
            probe?.host = settings.listenAddr
            try px.waitUntilReady(probe: probe, timeout: timeout)
        } catch {
            px.stop()
            throw error
        }
        return px
    }

    /// Starts pgswift on a config given as text, with placeholders `{{PORT}}` (the listen port),
    /// `{{DIR}}` (the instance's directory, also where `userlist.txt` is written) and `{{PGPORT}}`.
    /// Does not wait: follow with `waitUntilReady` or `waitForExit`.
    /// `environment` is added to the supervisor's; `binary` replaces the built supervisor (a copy elsewhere).
    /// `port` replaces the fresh free port (a second instance on the port of another).
    static func launch(ini template: String, userlist: String = "", workers: Int? = nil,
                       verbose: Bool = false, environment: [String: String] = [:],
                       binary: String? = nil, port fixedPort: Int? = nil) throws -> Pgswift {
        let dir = try makeTempDirectory(prefix: "px")
        let port = try fixedPort ?? freePort()
        let pgPort = template.contains("{{PGPORT}}") ? try PostgresServer.shared().port : 0
        let ini = template.replacingOccurrences(of: "{{PORT}}", with: String(port))
            .replacingOccurrences(of: "{{DIR}}", with: dir)
            .replacingOccurrences(of: "{{PGPORT}}", with: String(pgPort))
        return try launch(ini: ini, userlist: userlist, dir: dir, port: port, workers: workers, verbose: verbose,
                          environment: environment, binary: binary)
    }

    private static func launch(ini: String, userlist: String, dir: String, port: Int, workers: Int?,
                               verbose: Bool, commandPrefix: [String] = [], environment: [String: String] = [:],
                               binary: String? = nil, host: String = "127.0.0.1") throws -> Pgswift {
        let configPath = dir + "/pgswift.ini"
        try ini.write(toFile: configPath, atomically: false, encoding: .utf8)
        try userlist.write(toFile: dir + "/userlist.txt", atomically: false, encoding: .utf8)
        let argv = commandPrefix + [try binary ?? PgswiftBinaries.supervisor()] + (verbose ? ["-v"] : []) + [configPath]
        let child = try ChildProcess.spawn(argv, environment: pgswiftEnvironment(environment),
                                           stdoutPath: dir + "/pgswift.stdout",
                                           stderrPath: dir + "/pgswift.stderr")
        return Pgswift(dir: dir, host: host, port: port, configPath: configPath, process: child,
                       expectedWorkers: workers, logPath: dir + "/pgswift.stderr")
    }

    /// Starts another supervisor on this instance's config (same port, same directory), as systemd's
    /// Restart= would after this one was killed, and waits until it serves `probe`. Its stderr goes to
    /// a file of its own (the old workers may still write to `pgswift.stderr`); the new object owns
    /// the directory from now on.
    /// With `wait` false it returns at once: follow with `waitUntilReady`.
    func relaunch(probe: ClientTarget?, timeout: Double = 60, wait: Bool = true) throws -> Pgswift {
        let stderrPath = dir + "/pgswift.next\(monotonicNow()).stderr"
        let child = try ChildProcess.spawn([try PgswiftBinaries.supervisor(), configPath],
                                           environment: pgswiftEnvironment(),
                                           stdoutPath: dir + "/pgswift.next.stdout", stderrPath: stderrPath)
        ownsDirectory = false
        let next = Pgswift(dir: dir, host: host, port: port, configPath: configPath, process: child,
                           expectedWorkers: expectedWorkers, logPath: stderrPath)
        if !wait { return next }
        do {
            try next.waitUntilReady(probe: probe, timeout: timeout)
        } catch {
            next.stop()
            throw error
        }
        return next
    }

    private init(dir: String, host: String, port: Int, configPath: String, process: ChildProcess,
                 expectedWorkers: Int?, logPath: String) {
        self.dir = dir
        self.host = host
        self.port = port
        self.configPath = configPath
        self.process = process
        self.expectedWorkers = expectedWorkers
        self.logPath = logPath
        // If the test process dies, take the workers, then the supervisor, down with it.
        watchdog = try? Watchdog(cleanup: """
            kill -9 $(cat /proc/\(process.pid)/task/*/children 2>/dev/null) 2>/dev/null
            kill -9 \(process.pid) 2>/dev/null
            rm -rf '\(dir)'
            """)
    }

    deinit { stop() }

    /// Polls until the port accepts, `SELECT 1` works through it (when `probe` is given), and the
    /// expected number of workers runs. Throws with the log if pgswift exits or the deadline passes.
    func waitUntilReady(probe: ClientTarget?, timeout: Double = 60) throws {
        var lastProbe = "port not accepting yet"
        let ready = waitUntil(timeout: timeout, poll: 0.1) {
            guard process.isRunning else { return true }
            guard TestSocket.canConnect(host: host, port: port) else { return false }
            if let probe {
                guard let r = try? Psql.run(probe, "select 1", timeout: 15) else { return false }
                guard r.succeeded, r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1" else {
                    lastProbe = "probe: \(r)"
                    return false
                }
            }
            if let n = expectedWorkers, workerPids().count < n { lastProbe = "workers: \(workerPids())"; return false }
            return true
        }
        if let status = process.poll() {
            throw E2EError("pgswift exited with status \(status) before it was ready; its log:\n\(log())")
        }
        guard ready else {
            throw E2EError("pgswift not ready within \(timeout) s (\(lastProbe)); its log:\n\(log())")
        }
    }

    // MARK: observing

    /// What pgswift wrote to stderr so far.
    func log() -> String { readTextFile(logPath) }

    /// Log lines containing all of `fragments`.
    func logLines(containing fragments: String...) -> [String] {
        log().split(separator: "\n").map(String.init).filter { line in fragments.allSatisfy(line.contains) }
    }

    /// PIDs of the supervisor's live children (its workers).
    func workerPids() -> [pid_t] { ProcFS.children(of: process.pid) }

    var isRunning: Bool { process.isRunning }

    /// A client of this instance.
    func target(user: String, database: String, password: String? = nil) -> ClientTarget {
        ClientTarget(port: port, user: user, database: database, password: password, host: host)
    }

    // MARK: stopping

    func signal(_ sig: Int32) { process.signal(sig) }

    /// Exit status once the supervisor exits within `timeout`, else nil.
    func waitForExit(timeout: Double) -> Int32? { process.wait(timeout: timeout) }

    /// SIGTERM; SIGKILL after `grace` seconds; then makes sure no worker outlives it.
    func stop(grace: Double = 10) {
        if stopped { return }
        stopped = true
        var workers = Set(workerPids())
        if process.isRunning {
            process.signal(SIGTERM)
            let deadline = monotonicNow() + grace
            while process.isRunning && monotonicNow() < deadline {
                workers.formUnion(workerPids())
                sleepSeconds(0.02)
            }
            if process.isRunning {
                workers.formUnion(workerPids())
                process.terminate(SIGKILL, grace: 0)
            }
        }
        let leftover = workers.filter(ProcFS.isAlive)
        if !waitUntil(timeout: 5, { !leftover.contains(where: ProcFS.isAlive) }) {
            leftover.filter(ProcFS.isAlive).forEach { _ = kill($0, SIGKILL) }
        }
        watchdog?.cancel()
        if ownsDirectory && ProcessInfo.processInfo.environment["PGSWIFT_E2E_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    // MARK: command line

    /// Runs the supervisor binary with `args` (e.g. ["--check-config", path]) to completion.
    static func runCLI(_ args: [String], environment: [String: String] = [:], timeout: Double = 30) throws -> CommandResult {
        try runCommand([try PgswiftBinaries.supervisor()] + args, environment: pgswiftEnvironment(environment),
                       timeout: timeout)
    }
}

/// The environment of a pgswift process a test starts: `childEnvironment` without the `PGSWIFT_`
/// variables the test run itself has (PGSWIFT_BIN_DIR, PGSWIFT_PYTHON...: pgswift would read them as
/// `PGSWIFT_<KEY>` settings and warn), plus the test's own, which may be settings.
func pgswiftEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
    var env = childEnvironment().filter { !$0.key.hasPrefix("PGSWIFT_") }
    for (k, v) in extra { env[k] = v }
    return env
}
