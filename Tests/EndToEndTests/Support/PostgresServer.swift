// One throwaway PostgreSQL per test process: initdb into /tmp, roles for every auth method, stopped at exit.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The test cluster. Started on first use by `PostgresServer.shared()`, stopped when the test
/// process exits (atexit), and by a watchdog if the process dies without running atexit.
///
/// Roles (LOGIN, password in `passwords`), and how pg_hba.conf lets them in over 127.0.0.1:
/// `u_trust` trust, `u_password` password, `u_md5` md5 (stored as MD5), `u_scram` scram-sha-256,
/// everyone else (`bench`) scram-sha-256. Over the Unix socket everyone is trusted (admin access).
/// Databases: `testdb` (owned by postgres, open to all) and `bench` (owned by `bench`).
final class PostgresServer: @unchecked Sendable {
    static let passwords: [String: String] = [
        "u_trust": "trust-pw",
        "u_password": "password-pw",
        "u_md5": "md5-pw",
        "u_scram": "scram-pw",
        "bench": "bench-pw",
    ]

    let baseDir: String
    var dataDir: String { baseDir + "/data" }
    /// Directory of the Unix socket (the admin connection's `host`).
    var socketDir: String { baseDir }
    let port: Int
    /// `-c name=value` settings this instance was started with (besides the defaults below).
    let extraSettings: [String]
    private var process: ChildProcess
    private var watchdog: Watchdog?
    private let lock = NSLock()
    private var pgbenchLoaded = false

    // MARK: shared instance

    private final class Holder: @unchecked Sendable {
        let lock = NSLock()
        var server: PostgresServer?
        var failure: String?
    }

    private static let holder = Holder()

    /// The process-wide instance, started on first call. A start failure is remembered, so every
    /// later test fails fast with the same reason instead of trying again.
    static func shared() throws -> PostgresServer {
        TestWatchdog.install()
        holder.lock.lock()
        defer { holder.lock.unlock() }
        if let s = holder.server { return s }
        if let f = holder.failure { throw E2EError(f) }
        do {
            let s = try PostgresServer()
            holder.server = s
            atexit { PostgresServer.stopShared() }
            return s
        } catch {
            holder.failure = "test PostgreSQL did not start: \(error)"
            throw E2EError(holder.failure!)
        }
    }

    /// Stops the shared instance if it was ever started.
    static func stopShared() {
        holder.lock.lock()
        let s = holder.server
        holder.server = nil
        holder.lock.unlock()
        s?.stop()
    }

    // MARK: lifecycle

    /// A cluster of the caller's own (not shared): for tests that stop, restart or reconfigure it.
    /// `settings` are extra `name=value` server settings (`ssl=on`...); `configure` runs on the data
    /// directory after initdb and before the first start (certificates, pg_hba.conf changes).
    /// The caller calls `stop()` when done (atexit does not).
    static func startPrivate(settings: [String] = [], configure: ((String) throws -> Void)? = nil) throws -> PostgresServer {
        try PostgresServer(settings: settings, configure: configure)
    }

    private init(settings: [String] = [], configure: ((String) throws -> Void)? = nil) throws {
        extraSettings = settings
        let bin = try PostgresTools.binDir()
        let base = try makeTempDirectory(prefix: "pg")
        baseDir = base
        try PostgresUser.chownIfRoot(base)
        let asPostgres = PostgresUser.commandPrefix()

        let initdb = try runCommand(asPostgres + [
            bin + "/initdb", "-D", base + "/data", "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        ], timeout: 180)
        guard initdb.succeeded else {
            try? FileManager.default.removeItem(atPath: base)
            throw E2EError("initdb failed: \(initdb)")
        }
        try Self.hbaConf.write(toFile: base + "/data/pg_hba.conf", atomically: false, encoding: .utf8)
        try PostgresUser.chownIfRoot(base + "/data/pg_hba.conf")
        do {
            try configure?(base + "/data")
        } catch {
            try? FileManager.default.removeItem(atPath: base)
            throw error
        }

        var lastError = ""
        var started: (ChildProcess, Int)?
        for _ in 0..<3 {  // another process may take the port between choosing and binding it
            let port = try freePort()
            let child = try Self.spawnPostgres(base: base, port: port, settings: settings)
            if Self.waitUp(child, base: base, port: port) {
                started = (child, port)
                break
            }
            child.terminate(SIGQUIT, grace: 5)
            lastError = readTextFile(base + "/postgres.log")
        }
        guard let (child, port) = started else {
            try? FileManager.default.removeItem(atPath: base)
            throw E2EError("postgres did not start: \(lastError)")
        }
        process = child
        self.port = port
        watchdog = try? Watchdog(cleanup: "kill -QUIT \(child.pid) 2>/dev/null; sleep 3; rm -rf '\(base)'")

        do {
            try setUpRolesAndDatabases()
        } catch {
            stop()
            throw error
        }
    }

    /// A streaming standby of `primary` (which must let `postgres` replicate over its Unix socket:
    /// `ReplicaSet` sets that up), made with `pg_basebackup -R` and started with `settings` on top of
    /// quick-feedback replication settings. The caller calls `stop()`.
    static func startStandby(of primary: PostgresServer, settings: [String] = []) throws -> PostgresServer {
        try PostgresServer(standbyOf: primary, settings: settings)
    }

    private init(standbyOf primary: PostgresServer, settings: [String]) throws {
        let all = ["hot_standby=on", "wal_receiver_status_interval=1s", "wal_retrieve_retry_interval=200ms",
                   "hot_standby_feedback=on"] + settings
        extraSettings = all
        let bin = try PostgresTools.binDir()
        let base = try makeTempDirectory(prefix: "pgsb")
        baseDir = base
        try PostgresUser.chownIfRoot(base)
        let backup = try runCommand(PostgresUser.commandPrefix() + [
            bin + "/pg_basebackup", "-h", primary.socketDir, "-p", String(primary.port), "-U", "postgres",
            "-D", base + "/data", "-R", "-X", "stream", "-c", "fast", "--no-sync",
        ], timeout: 180)
        guard backup.succeeded else {
            try? FileManager.default.removeItem(atPath: base)
            throw E2EError("pg_basebackup failed: \(backup)")
        }
        var lastError = ""
        var started: (ChildProcess, Int)?
        for _ in 0..<3 {
            let port = try freePort()
            let child = try Self.spawnPostgres(base: base, port: port, settings: all)
            if Self.waitUp(child, base: base, port: port) {
                started = (child, port)
                break
            }
            child.terminate(SIGQUIT, grace: 5)
            lastError = readTextFile(base + "/postgres.log")
        }
        guard let (child, port) = started else {
            try? FileManager.default.removeItem(atPath: base)
            throw E2EError("standby did not start: \(lastError)")
        }
        process = child
        self.port = port
        watchdog = try? Watchdog(cleanup: "kill -QUIT \(child.pid) 2>/dev/null; sleep 3; rm -rf '\(base)'")
    }

    private static func spawnPostgres(base: String, port: Int, settings: [String]) throws -> ChildProcess {
        var argv = PostgresUser.commandPrefix() + [
            try PostgresTools.binDir() + "/postgres", "-D", base + "/data",
            "-c", "listen_addresses=127.0.0.1", "-c", "port=\(port)",
            "-c", "unix_socket_directories=\(base)",
            "-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "log_min_messages=warning",
        ]
        for s in settings { argv += ["-c", s] }
        // Appends, so a restarted server's log keeps what the stopped one said.
        return try ChildProcess.spawn(argv, stdoutPath: base + "/postgres.out", stderrPath: base + "/postgres.log",
                                      appendOutput: true)
    }

    private static func waitUp(_ child: ChildProcess, base: String, port: Int) -> Bool {
        let up = waitUntil(timeout: 60, poll: 0.1) {
            !child.isRunning || Self.psqlAdmin(socketDir: base, port: port, sql: "select 1").succeeded
        }
        return up && child.isRunning
    }

    /// Fast shutdown (SIGINT), then the directory goes.
    func stop() {
        lock.lock()
        let p = process
        lock.unlock()
        p.terminate(SIGINT, grace: 20)
        watchdog?.cancel()
        try? FileManager.default.removeItem(atPath: baseDir)
    }

    /// Stops the server process (fast shutdown) and keeps its data: `startServer()` brings it back
    /// on the same port. For tests of a backend that goes away.
    func stopServer(signal: Int32 = SIGINT) {
        lock.lock()
        let p = process
        lock.unlock()
        p.terminate(signal, grace: 20)
    }

    /// Starts the server again after `stopServer()`, on the same port.
    func startServer() throws {
        let child = try Self.spawnPostgres(base: baseDir, port: port, settings: extraSettings)
        guard Self.waitUp(child, base: baseDir, port: port) else {
            child.terminate(SIGQUIT, grace: 5)
            throw E2EError("postgres did not restart: \(readTextFile(baseDir + "/postgres.log"))")
        }
        lock.lock()
        process = child
        lock.unlock()
        watchdog?.cancel()
        watchdog = try? Watchdog(cleanup: "kill -QUIT \(child.pid) 2>/dev/null; sleep 3; rm -rf '\(baseDir)'")
    }

    /// Whether the server process is running now.
    var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        return process.isRunning
    }

    private static let hbaConf = """
        # TYPE  DATABASE USER        ADDRESS        METHOD
        local   all      all                        trust
        host    all      u_trust     127.0.0.1/32   trust
        host    all      u_password  127.0.0.1/32   password
        host    all      u_md5       127.0.0.1/32   md5
        host    all      u_scram     127.0.0.1/32   scram-sha-256
        host    all      all         127.0.0.1/32   scram-sha-256

        """

    private func setUpRolesAndDatabases() throws {
        let p = Self.passwords
        _ = try adminQuery([
            "create role u_trust login password '\(p["u_trust"]!)'",
            "create role u_password login password '\(p["u_password"]!)'",
            "set password_encryption = 'md5'",
            "create role u_md5 login password '\(p["u_md5"]!)'",
            "reset password_encryption",
            "create role u_scram login password '\(p["u_scram"]!)'",
            "create role bench login password '\(p["bench"]!)'",
            "create database testdb",
            "create database bench owner bench",
        ])
    }

    // MARK: helpers

    private static func psqlAdmin(socketDir: String, port: Int, sql: [String], database: String = "postgres") -> CommandResult {
        guard let psql = try? PostgresTools.path("psql") else {
            return CommandResult(status: 127, stdout: "", stderr: "psql not found", timedOut: false)
        }
        var argv = [psql, "-h", socketDir, "-p", String(port), "-U", "postgres", "-d", database,
                    "-XAtq", "-v", "ON_ERROR_STOP=1"]
        for s in sql { argv += ["-c", s] }
        return (try? runCommand(argv, timeout: 120))
            ?? CommandResult(status: 127, stdout: "", stderr: "cannot run psql", timedOut: false)
    }

    private static func psqlAdmin(socketDir: String, port: Int, sql: String) -> CommandResult {
        psqlAdmin(socketDir: socketDir, port: port, sql: [sql])
    }

    /// Runs SQL as superuser over the Unix socket; returns psql's unaligned, tuples-only output.
    @discardableResult
    func adminQuery(_ sql: String, database: String = "postgres") throws -> String {
        try adminQuery([sql], database: database)
    }

    /// Several statements in one session (so SETs carry over), each in its own transaction.
    @discardableResult
    func adminQuery(_ statements: [String], database: String = "postgres") throws -> String {
        let r = Self.psqlAdmin(socketDir: socketDir, port: port, sql: statements, database: database)
        guard r.succeeded else { throw E2EError("admin query \(statements) failed: \(r)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Client backends currently connected as `user` to `db`.
    func countBackends(user: String, db: String) throws -> Int {
        let out = try adminQuery("""
            select count(*) from pg_stat_activity
            where usename = '\(user)' and datname = '\(db)' and backend_type = 'client backend'
            """)
        guard let n = Int(out) else { throw E2EError("countBackends: unexpected output '\(out)'") }
        return n
    }

    /// The role's password as stored in pg_authid (`md5…` or `SCRAM-SHA-256$…`), for userlist entries.
    func storedPassword(of role: String) throws -> String {
        try adminQuery("select rolpassword from pg_authid where rolname = '\(role)'")
    }

    /// Loads pgbench's tables (scale 1) into database `bench`, once per process.
    func ensurePgbenchData() throws {
        lock.lock()
        defer { lock.unlock() }
        if pgbenchLoaded { return }
        let r = try runCommand([try PostgresTools.path("pgbench"), "-i", "-s", "1", "-q",
                                "-h", socketDir, "-p", String(port), "-U", "bench", "bench"], timeout: 300)
        guard r.succeeded else { throw E2EError("pgbench -i failed: \(r)") }
        pgbenchLoaded = true
    }

    /// A `[databases]` connection string pointing at this server.
    func connectionString(dbname: String, extra: String = "") -> String {
        "host=127.0.0.1 port=\(port) dbname=\(dbname)" + (extra.isEmpty ? "" : " " + extra)
    }
}
