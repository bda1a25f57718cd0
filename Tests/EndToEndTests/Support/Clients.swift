// psql and pgbench as clients of pgswift (or of PostgreSQL directly), over TCP on 127.0.0.1.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where and as whom a client connects.
struct ClientTarget {
    var port: Int
    var user: String
    var database: String
    var password: String?
    /// An IPv4 address: pgswift's `listen_addr` (a network namespace's address in FleetTests).
    var host = "127.0.0.1"

    /// libpq connection string; TLS and GSS off (pgswift's foundation speaks neither).
    var connectionString: String {
        "host=\(host) port=\(port) dbname=\(database) user=\(user) sslmode=disable gssencmode=disable connect_timeout=20"
    }

    var environment: [String: String] {
        var env = childEnvironment()
        if let password { env["PGPASSWORD"] = password }
        return env
    }
}

enum Psql {
    /// `psql -XAtq` running `sql` (several -c when given several); (status, stdout, stderr).
    static func run(_ target: ClientTarget, _ sql: String..., verbose: Bool = false,
                    timeout: Double = 60) throws -> CommandResult {
        try runCommand(try argv(target, sql, verbose: verbose), environment: target.environment, timeout: timeout)
    }

    /// Starts psql without waiting, output to files in `dir` named after `tag`, for many at once.
    static func spawn(_ target: ClientTarget, _ sql: String, dir: String, tag: String) throws -> ChildProcess {
        try ChildProcess.spawn(try argv(target, [sql], verbose: false), environment: target.environment,
                               stdoutPath: "\(dir)/\(tag).out", stderrPath: "\(dir)/\(tag).err")
    }

    static func argv(_ target: ClientTarget, _ sql: [String], verbose: Bool) throws -> [String] {
        var argv = [try PostgresTools.path("psql"), target.connectionString, "-XAtq", "-v", "ON_ERROR_STOP=1"]
        if verbose { argv += ["-v", "VERBOSITY=verbose"] }
        for s in sql { argv += ["-c", s] }
        return argv
    }
}

/// pgbench's closing figures.
struct PgbenchSummary {
    var transactions: Int?
    var failedTransactions: Int?
    var tps: Double?
}

enum Pgbench {
    /// Runs pgbench against `target` with `args` (e.g. ["-S", "-c", "50", "-T", "10"]); the database
    /// name goes last. Returns the raw result and the parsed summary.
    static func run(_ target: ClientTarget, _ args: [String], timeout: Double = 120) throws
        -> (result: CommandResult, summary: PgbenchSummary) {
        let argv = [try PostgresTools.path("pgbench"), "-h", target.host, "-p", String(target.port),
                    "-U", target.user] + args + [target.database]
        let r = try runCommand(argv, environment: target.environment, timeout: timeout)
        return (r, parse(r.stdout))
    }

    static func parse(_ output: String) -> PgbenchSummary {
        var s = PgbenchSummary()
        for line in output.split(separator: "\n") {
            let text = String(line)
            if text.hasPrefix("number of transactions actually processed:") {
                s.transactions = Int(value(after: ":", in: text).split(separator: "/").first ?? "")
            } else if text.hasPrefix("number of failed transactions:") {
                s.failedTransactions = Int(value(after: ":", in: text).split(separator: " ").first ?? "")
            } else if text.hasPrefix("tps = ") {
                s.tps = Double(value(after: "=", in: text).split(separator: " ").first ?? "")
            }
        }
        return s
    }

    private static func value(after separator: Character, in line: String) -> String {
        guard let i = line.firstIndex(of: separator) else { return "" }
        return line[line.index(after: i)...].trimmingCharacters(in: .whitespaces)
    }
}

/// One HTTP GET to 127.0.0.1:`port` (pgswift's metrics_listen): the whole response, headers included.
func httpGet(port: Int, path: String, timeout: Double = 10) throws -> String {
    let socket = try TestSocket(port: port, timeout: timeout)
    defer { socket.close() }
    try socket.send(Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
    return String(decoding: socket.readUntilClosed(timeout: timeout).data, as: UTF8.self)
}
