// End to end (issue 22): three pgswift hosts, each in its own network namespace, behind HAProxy in
// round-robin TCP mode. Cancels land wherever the balancer sends them and still cancel their own query
// (peering), a killed host is taken out by HAProxy's /health check, an upgrade under load drops nobody.
// Run alone by `make test-cluster` (`make test` skips it).
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class FleetTests: XCTestCase {
    /// One run's fleet: the network, PostgreSQL on the bridge, the pgswift hosts, HAProxy.
    private struct Fleet {
        let network: FleetNetwork
        let pg: PostgresServer
        let hosts: [Pgswift]
        let proxy: HAProxy
        let metricsPort: Int

        /// HAProxy's name for host i.
        func serverName(_ i: Int) -> String { "host\(i + 1)" }

        /// A client of the fleet: always through HAProxy.
        func target(user: String, database: String) -> ClientTarget {
            ClientTarget(port: proxy.port, user: user, database: database, password: PostgresServer.passwords[user])
        }

        /// Waits until HAProxy's check reports every host in `up` as UP and every other one as DOWN.
        func waitForStates(up: Set<Int>, timeout: Double = 30) -> (ok: Bool, last: String) {
            var last = ""
            let ok = waitUntil(timeout: timeout, poll: 0.05) {
                let s = proxy.servers()
                last = "\(s)"
                return hosts.indices.allSatisfy { i in
                    guard let status = s[serverName(i)]?.status else { return false }
                    return up.contains(i) ? status == "UP" : status.hasPrefix("DOWN")
                }
            }
            return (ok, last)
        }

        func logs() -> String {
            hosts.enumerated().map { "--- host \($0.offset + 1):\n\($0.element.log().suffix(3000))" }.joined(separator: "\n")
                + "\n--- haproxy:\n\(proxy.log().suffix(3000))"
        }
    }

    /// The peer id a pgswift with peering puts in a cancel key (bytes 1-2 of the process id, low byte first).
    static func peerID(_ processID: UInt32) -> Int {
        Int((processID >> 16) & 0xFF | ((processID >> 8) & 0xFF) << 8)
    }

    /// Makes the fleet; every part is removed by a teardown block, whatever the test does. Skips when
    /// haproxy is not installed or the machine cannot make network namespaces.
    private func startFleet(count: Int = 3) throws -> Fleet {
        guard FileManager.default.isExecutableFile(atPath: HAProxy.binary) else {
            throw XCTSkip("\(HAProxy.binary) is not installed (scripts/install-deps.sh cluster): no multi-host test")
        }
        let network: FleetNetwork
        do {
            network = try FleetNetwork.create(count: count)
        } catch let refused as FleetNetwork.Refused {
            throw XCTSkip(refused.description)
        }
        addTeardownBlock {
            network.remove()
            XCTAssertEqual(network.leftovers(), [], "namespaces or links left behind")
        }

        // PostgreSQL on the bridge's address (and 127.0.0.1 for the harness), trusting the fleet's subnet.
        let pg = try PostgresServer.startPrivate(settings: ["listen_addresses=127.0.0.1,\(network.gateway)"]) { data in
            let hba = data + "/pg_hba.conf"
            try (readTextFile(hba) + "host all all \(network.subnet) trust\n").write(toFile: hba, atomically: false,
                                                                                     encoding: .utf8)
        }
        addTeardownBlock { pg.stop() }
        try pg.ensurePgbenchData()

        // The same ports on every host, as on real machines; each host's [peers] names all of them.
        let port = try freePort(), metricsPort = try freePort()
        let peers = network.addresses.enumerated().map { ($0.offset + 1, "host=\($0.element) port=\(port)") }
        var hosts: [Pgswift] = []
        for i in 0..<count {
            var s = PgswiftSettings(postgres: pg)
            s.databases = ["testdb", "bench"].map { ($0, "host=\(network.gateway) port=\(pg.port) dbname=\($0)") }
            s.listenAddr = network.addresses[i]
            s.port = port
            s.commandPrefix = network.exec(i)
            s.poolMode = "transaction"
            s.workers = 2
            s.defaultPoolSize = 30
            s.settings += [("peer_id", String(i + 1)), ("admin_users", "u_trust")]
            s.peers = peers
            s.pgswiftSettings += [("metrics_listen", "\(network.addresses[i]):\(metricsPort)"),
                                  ("health_check_backoff_initial", "0.5"), ("health_check_backoff_max", "1"),
                                  ("health_check_timeout", "2"), ("drain_timeout", "60")]
            let px = try Pgswift.start(s)
            addTeardownBlock { px.stop() }
            hosts.append(px)
        }
        let proxy = try HAProxy.start(servers: hosts.indices.map {
            HAProxy.Server(name: "host\($0 + 1)", address: network.addresses[$0], port: port, checkPort: metricsPort)
        })
        addTeardownBlock { proxy.stop() }
        // Each service in a network namespace of its own, none in ours.
        func netns(_ pid: pid_t) -> String {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")) ?? "?"
        }
        let spaces = hosts.map { netns($0.supervisorPid) } + [netns(getpid())]
        XCTAssertEqual(Set(spaces).count, count + 1, "network namespaces \(spaces)")
        let fleet = Fleet(network: network, pg: pg, hosts: hosts, proxy: proxy, metricsPort: metricsPort)
        let up = fleet.waitForStates(up: Set(hosts.indices))
        guard up.ok else { throw E2EError("HAProxy never saw every host up: \(up.last)\n\(fleet.logs())") }
        return fleet
    }

    private func sendCancel(port: Int, processID: UInt32, secretKey: UInt32) throws -> TestSocket {
        let s = try TestSocket(port: port)
        try s.send(WireEncode.int32(16) + WireEncode.int32(80_877_102) + WireEncode.int32(processID)
                   + WireEncode.int32(secretKey))
        return s
    }

    /// Active queries of `u_trust` whose text contains `fragment`.
    private func activeQueries(_ pg: PostgresServer, containing fragment: String) -> Int {
        let out = try? pg.adminQuery("""
            select count(*) from pg_stat_activity
            where usename = 'u_trust' and state = 'active' and query like '%\(fragment)%' and pid <> pg_backend_pid()
            """)
        return Int(out ?? "") ?? -1
    }

    /// (1) 200 cancels sent through HAProxy, 10 clients at a time each running pg_sleep(30): every
    /// cancel is a new connection that round robin sends to any host, and every one cancels its own
    /// client's query (57014) within 1 s, while the other clients' queries keep running.
    func testEveryCancelThroughTheBalancerCancelsItsOwnQuery() throws {
        let fleet = try startFleet()
        let rounds = 20, perRound = 10
        var latencies: [Double] = []
        var clientsPerHost = [Int: Int](), forwarded = 0, sameHost = 0
        for round in 0..<rounds {
            let clients = try (0..<perRound).map { _ in
                try KeyedClient(port: fleet.proxy.port, user: "u_trust", database: "testdb")
            }
            let hostOf = clients.map { Self.peerID($0.processID) }
            for h in hostOf { clientsPerHost[h, default: 0] += 1 }
            for (i, c) in clients.enumerated() {
                try c.socket.send(WireEncode.query("select pg_sleep(30), 'fleet-\(round)-\(i)'"))
            }
            XCTAssertTrue(waitUntil(timeout: 30, poll: 0.02) { activeQueries(fleet.pg, containing: "fleet-\(round)-") == perRound },
                          "round \(round): the queries never all ran")
            var pending = Set(clients.indices)
            for i in clients.indices.shuffled() {
                // Nobody still waiting has been answered: no cancel so far hit another client's query.
                for j in pending where clients[j].socket.hasInput {
                    XCTFail("round \(round): client \(j) (host \(hostOf[j])) got an answer before its own cancel was sent")
                }
                let before = fleet.proxy.servers()
                let started = monotonicNow()
                let cancel = try sendCancel(port: fleet.proxy.port, processID: clients[i].processID,
                                            secretKey: clients[i].secretKey)
                let error: WireErrorFields?
                do {
                    error = try clients[i].readUntilReady(timeout: 10)
                } catch {
                    throw E2EError("round \(round): the cancel of client \(i) (host \(hostOf[i])) through HAProxy "
                                   + "got no answer: \(error)\n\(fleet.logs())")
                }
                let latency = monotonicNow() - started
                pending.remove(i)
                latencies.append(latency)
                XCTAssertEqual(error?.sqlstate, "57014", "round \(round) client \(i) (host \(hostOf[i])): "
                               + "\(error.map { "\($0)" } ?? "no error")\n\(fleet.logs())")
                XCTAssertLessThan(latency, 1.0, "round \(round) client \(i): cancelled after \(latency) s")
                _ = cancel.readUntilClosed(timeout: 5)
                // The host the balancer sent the cancel to: the one whose session count went up.
                let after = fleet.proxy.servers()
                let landed = fleet.hosts.indices.filter {
                    (after[fleet.serverName($0)]?.sessions ?? 0) > (before[fleet.serverName($0)]?.sessions ?? 0)
                }
                XCTAssertEqual(landed.count, 1, "cannot tell where the cancel went: \(before) → \(after)")
                if landed.first.map({ $0 + 1 }) == hostOf[i] { sameHost += 1 } else { forwarded += 1 }
            }
            XCTAssertTrue(waitUntil(timeout: 10) { activeQueries(fleet.pg, containing: "fleet-\(round)-") == 0 })
            clients.forEach { $0.socket.close() }
        }
        XCTAssertEqual(latencies.count, rounds * perRound)
        XCTAssertEqual(Set(clientsPerHost.keys), [1, 2, 3], "every host served clients: \(clientsPerHost)")
        XCTAssertGreaterThan(forwarded, 0, "no cancel reached another host than its client's")
        XCTAssertGreaterThan(sameHost, 0, "no cancel reached its client's own host")
        let sorted = latencies.sorted()
        let perHost = clientsPerHost.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        print(String(format: "fleet cancels: %d through HAProxy, %d reached the client's host, %d another host "
                     + "(forwarded by peering); latency median %.1f ms, p95 %.1f ms, max %.1f ms",
                     latencies.count, sameHost, forwarded, sorted[sorted.count / 2] * 1000,
                     sorted[sorted.count * 95 / 100] * 1000, sorted.last! * 1000) + "; clients per host \(perHost)")
    }

    /// (2) One host killed (SIGKILL to its supervisor and workers): HAProxy's check takes it out, its
    /// clients get errors, the other hosts' clients see none, new connections through HAProxy succeed.
    func testKilledHostIsTakenOutAndOnlyItsClientsNotice() throws {
        let fleet = try startFleet()
        let victim = 1
        var clients: [(client: KeyedClient, host: Int)] = []
        for _ in 0..<12 {
            let c = try KeyedClient(port: fleet.proxy.port, user: "u_trust", database: "testdb")
            XCTAssertEqual(try c.value("select 1"), "1")
            clients.append((c, Self.peerID(c.processID) - 1))
        }
        let victims = clients.filter { $0.host == victim }, others = clients.filter { $0.host != victim }
        XCTAssertFalse(victims.isEmpty || others.isEmpty, "round robin over 3 hosts: \(clients.map(\.host))")

        let killed = monotonicNow()
        let pids = [fleet.hosts[victim].supervisorPid] + fleet.hosts[victim].workerPids()
        for pid in pids { kill(pid, SIGKILL) }
        // The others' clients keep working while HAProxy's check notices.
        var othersQueries = 0
        var state = (ok: false, last: "")
        var downAfter = 0.0
        while monotonicNow() - killed < 30 {
            for (c, host) in others {
                XCTAssertEqual(try c.value("select 1"), "1", "a client of host \(host + 1)")
                othersQueries += 1
            }
            state = fleet.waitForStates(up: Set(fleet.hosts.indices).subtracting([victim]), timeout: 0)
            if state.ok { downAfter = monotonicNow() - killed; break }
            sleepSeconds(0.02)
        }
        XCTAssertTrue(state.ok, "HAProxy never took host \(victim + 1) out: \(state.last)\n\(fleet.logs())")
        XCTAssertFalse(fleet.proxy.logLinesContaining("pgswift/host\(victim + 1) is DOWN").isEmpty, fleet.proxy.log())
        XCTAssertTrue(pids.allSatisfy { !ProcFS.isAlive($0) }, "host \(victim + 1) still has processes")

        for (c, _) in victims {
            var failed = false
            do {
                let error = try c.query("select 1", timeout: 10)
                failed = error != nil
            } catch {
                failed = true
            }
            XCTAssertTrue(failed, "a client of the killed host got an answer")
        }
        for (c, host) in others {
            XCTAssertEqual(try c.value("select 2"), "2", "a client of host \(host + 1) after the kill")
        }
        var landed = [Int: Int]()
        for _ in 0..<30 {
            let c = try KeyedClient(port: fleet.proxy.port, user: "u_trust", database: "testdb")
            XCTAssertEqual(try c.value("select 3"), "3")
            landed[Self.peerID(c.processID), default: 0] += 1
            c.socket.close()
        }
        XCTAssertNil(landed[victim + 1], "a new client reached the killed host: \(landed)")
        XCTAssertEqual(landed.values.reduce(0, +), 30)
        let spread = landed.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        print(String(format: "fleet kill: host %d out of HAProxy %.2f s after SIGKILL; its %d clients got errors, "
                     + "the other %d clients ran %d queries without one",
                     victim + 1, downAfter, victims.count, others.count, othersQueries)
              + "; 30 new connections went to hosts \(spread)")
    }

    /// (3) `pgswift upgrade` on one host while pgbench runs through HAProxy on all three: every worker
    /// of that host is replaced and pgbench has no failed transaction.
    func testUpgradeOfOneHostUnderLoadDropsNobody() throws {
        let fleet = try startFleet()
        let dir = try makeTempDirectory(prefix: "fleetbench")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = fleet.target(user: "bench", database: "bench")
        // 30 long-lived clients, and 4 that open a new connection per transaction (-C), so new clients
        // reach the host through HAProxy while it upgrades, until HAProxy's check takes it out.
        func pgbench(_ name: String, _ args: [String]) throws -> ChildProcess {
            try ChildProcess.spawn([try PostgresTools.path("pgbench"), "-n", "-M", "simple", "-h", "127.0.0.1",
                                    "-p", String(fleet.proxy.port), "-U", "bench"] + args + ["-T", "10", "bench"],
                                   environment: target.environment, stdoutPath: dir + "/\(name).out",
                                   stderrPath: dir + "/\(name).err")
        }
        let bench = try pgbench("long", ["-c", "30", "-j", "2"])
        defer { bench.terminate(SIGKILL, grace: 0) }
        let reconnecting = try pgbench("reconnecting", ["-C", "-c", "4", "-j", "1"])
        defer { reconnecting.terminate(SIGKILL, grace: 0) }
        // Wait until the host to upgrade is busy: PostgreSQL sees its server connections by their address.
        let upgraded = 0
        let address = fleet.network.addresses[upgraded]
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.1) {
            Int((try? fleet.pg.adminQuery("""
                select count(*) from pg_stat_activity where usename = 'bench' and client_addr = '\(address)'
                """)) ?? "") ?? 0 >= 5
        }, "pgbench never reached host \(upgraded + 1): \(bench.stderrText())")
        let before = Set(fleet.hosts[upgraded].workerPids())
        let started = monotonicNow()
        let cli = try UpgradeFixtures.upgradeCLI(fleet.hosts[upgraded])
        let took = monotonicNow() - started
        XCTAssertTrue(cli.succeeded, "\(cli)\n\(fleet.logs())")
        XCTAssertTrue(waitUntil(timeout: 60) {
            let now = Set(fleet.hosts[upgraded].workerPids())
            return now.count == 2 && now.isDisjoint(with: before)
        }, "workers \(fleet.hosts[upgraded].workerPids()), before \(before)\n\(fleet.logs())")
        let (r, summary) = UpgradeFixtures.finish(bench)
        let (rc, reconnected) = UpgradeFixtures.finish(reconnecting)
        for (r, summary) in [(r, summary), (rc, reconnected)] {
            XCTAssertEqual(r.status, 0, "\(r)\n\(fleet.logs())")
            XCTAssertFalse(r.stderr.contains("aborted"), r.stderr)
            XCTAssertEqual(summary.failedTransactions, 0, r.stdout)
            XCTAssertGreaterThan(summary.transactions ?? 0, 0, r.stdout)
        }
        let back = fleet.waitForStates(up: Set(fleet.hosts.indices))
        XCTAssertTrue(back.ok, "host \(upgraded + 1) not back in HAProxy: \(back.last)")
        let outages = fleet.proxy.logLinesContaining("pgswift/host\(upgraded + 1) is DOWN").count
        print(String(format: "fleet upgrade: host %d upgraded in %.2f s under pgbench through HAProxy; 30 clients: "
                     + "%d transactions, %d failed, tps %.0f; 4 clients reconnecting per transaction: %d transactions, "
                     + "%d failed; HAProxy marked the host down %d time(s) meanwhile",
                     upgraded + 1, took, summary.transactions ?? 0, summary.failedTransactions ?? -1, summary.tps ?? 0,
                     reconnected.transactions ?? 0, reconnected.failedTransactions ?? -1, outages))
    }
}

extension HAProxy {
    func logLinesContaining(_ fragment: String) -> [String] {
        log().split(separator: "\n").map(String.init).filter { $0.contains(fragment) }
    }
}
