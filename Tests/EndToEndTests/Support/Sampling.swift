// Several pgbench runs through pgswift at once while pg_stat_activity is sampled, for limit tests.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One pgbench run: `clients` connections of `user` to `database`, `transactions` each.
struct PgbenchLoad: CustomStringConvertible {
    var user: String
    var database: String
    var clients: Int
    var transactions: Int
    var description: String { "\(user)@\(database) (\(clients) clients)" }
}

extension PostgresServer {
    /// Client backends matching each condition (SQL over pg_stat_activity's columns, e.g.
    /// `usename = 'u_md5'`). pg_stat_activity copies the backend slots one by one, not atomically: a
    /// sampler preempted mid-copy can see a backend that has already left together with its
    /// replacement. So the counts are read twice, in two separate snapshots, and the lower kept.
    func backendCounts(_ conditions: [String]) throws -> [Int] {
        let columns = conditions.map { "count(*) filter (where \($0))" }.joined(separator: ", ")
        let q = "select \(columns) from pg_stat_activity where backend_type = 'client backend'"
        let lines = try adminQuery([q, q]).split(separator: "\n")
        let reads = lines.map { $0.split(separator: "|").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
        guard reads.count == 2, reads.allSatisfy({ $0.count == conditions.count }) else {
            throw E2EError("bad backend counts: \(lines)")
        }
        return zip(reads[0], reads[1]).map { min($0, $1) }
    }
}

extension Pgswift {
    /// Runs every load at once (pgbench running `script` as each transaction), calling `sample`
    /// until they have all ended; returns the highest value seen of each element of `sample`'s
    /// answer. Throws, with the outputs and pgswift's log, unless every run ends in time with all
    /// its transactions done and none failed.
    func runSampling(_ loads: [PgbenchLoad], script: String, timeout: Double = 240,
                     sample: () throws -> [Int]) throws -> [Int] {
        let dir = try makeTempDirectory(prefix: "sampling")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try (script + "\n").write(toFile: dir + "/load.sql", atomically: false, encoding: .utf8)
        var children: [ChildProcess] = []
        defer { for c in children where c.isRunning { _ = c.terminate(SIGKILL, grace: 0) } }
        for (i, l) in loads.enumerated() {
            let t = target(user: l.user, database: l.database)
            let argv = [try PostgresTools.path("pgbench"), "-n", "-h", "127.0.0.1", "-p", String(port), "-U", l.user,
                        "-f", dir + "/load.sql", "-c", String(l.clients), "-j", "2", "-t", String(l.transactions),
                        l.database]
            children.append(try ChildProcess.spawn(argv, environment: t.environment,
                                                   stdoutPath: dir + "/\(i).out", stderrPath: dir + "/\(i).err"))
        }
        var maxima: [Int] = []
        var samples = 0
        let deadline = monotonicNow() + timeout
        while children.contains(where: { $0.isRunning }) && monotonicNow() < deadline {
            if let counts = try? sample() {
                maxima = maxima.isEmpty ? counts : zip(maxima, counts).map { max($0, $1) }
                samples += 1
            }
            sleepSeconds(0.03)
        }
        for (i, c) in children.enumerated() {
            let timedOut = c.isRunning
            let status = timedOut ? c.terminate(SIGKILL, grace: 0) : (c.poll() ?? -1)
            let summary = Pgbench.parse(c.stdoutText())
            guard !timedOut, status == 0, summary.failedTransactions ?? 0 == 0,
                  summary.transactions == loads[i].clients * loads[i].transactions else {
                throw E2EError("\(loads[i]): status \(status), timed out \(timedOut)\n\(c.stdoutText().suffix(1500))\n"
                               + "\(c.stderrText().suffix(1500))\npgswift log:\n\(log().suffix(3000))")
            }
        }
        guard samples >= 3 else { throw E2EError("only \(samples) samples of pg_stat_activity during the load") }
        return maxima
    }
}
