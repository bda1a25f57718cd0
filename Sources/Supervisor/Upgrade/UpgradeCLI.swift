// `pgswift upgrade -c CONFIG`: sends UPGRADE to the running service over its admin Unix socket and
// prints the answer, one line per worker slot. Blocking I/O through `AdminClient`: this is a short-lived
// command, not the loop.
import Glibc
import Shared

enum UpgradeCLI {
    /// How long to wait for the answer: every slot may take up to the new worker's ready timeout.
    static let timeoutMillis: Int32 = 600_000

    static func run(configPath: String) -> Int32 {
        guard let config = SupervisorMain.loadConfig(configPath, report: {
            SupervisorMain.writeStderr("pgswift upgrade: \($0)\n")
        }) else { return 1 }
        guard let path = Listeners.unixSocketPath(directory: config.unixSocketDir, port: config.listenPort) else {
            SupervisorMain.writeStderr("pgswift upgrade: the admin console is reached over the Unix socket: set unix_socket_dir\n")
            return 1
        }
        // As root or as pgswift's own user, the Unix socket gets the console without a password.
        let target = AdminTarget(host: config.unixSocketDir, port: config.listenPort, user: "pgbouncer",
                                 database: "pgbouncer", socketPath: path)
        let client = AdminClient(target: target, applicationName: "pgswift upgrade", timeoutMillis: timeoutMillis)
        do throws(AdminClientError) {
            do throws(AdminClientError) {
                try client.connect(password: { () throws(AdminClientError) -> String? in
                    throw AdminClientError("the admin console asks for a password: run this as root or as the user pgswift runs as")
                })
            } catch {
                throw client.fd < 0 ? AdminClientError("\(error) (is pgswift running?)") : error
            }
            let rows = try client.query("UPGRADE").rows.map { $0.map { $0 ?? "" } }
            print("slot  old pid  new pid  result")
            var allOK = true
            for r in rows where r.count == 4 {
                print("\(r[0].padding(4))  \(r[1].padding(7))  \(r[2].padding(7))  \(r[3])")
                if !r[3].hasPrefix("ok") { allOK = false }
            }
            return allOK && !rows.isEmpty ? 0 : 1
        } catch {
            SupervisorMain.writeStderr("pgswift upgrade: \(error)\n")
            return 1
        }
    }
}

private extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
