// End to end: a database whose host= is a DNS name, served by a resolver the test controls (as root, in a
// private mount namespace whose /etc/resolv.conf points at it): address changes and a slow resolver.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A tiny DNS server (Python, UDP) answering A queries from a file the test rewrites:
/// "name address delay-seconds" per line (address NXDOMAIN: that answer, after the delay); other names
/// get NXDOMAIN at once, AAAA gets an empty answer.
final class TestResolver: @unchecked Sendable {
    static let address = "127.0.0.77"
    let dir: String
    let process: ChildProcess

    static let script = """
        import socket, struct, sys, threading, time
        addr, records_path, log_path = sys.argv[1], sys.argv[2], sys.argv[3]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, 53))
        lock = threading.Lock()

        def records():
            out = {}
            with open(records_path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 3:
                        out[parts[0].lower()] = (parts[1], float(parts[2]))
            return out

        def answer(data, peer):
            try:
                qid, flags, qd = struct.unpack(">HHH", data[:6])
                i, labels = 12, []
                while data[i] != 0:
                    n = data[i]
                    labels.append(data[i + 1:i + 1 + n].decode())
                    i += 1 + n
                qtype, qclass = struct.unpack(">HH", data[i + 1:i + 5])
                question = data[12:i + 5]
                name = ".".join(labels).lower()
                rec = records().get(name)
                with lock:
                    with open(log_path, "a") as log:
                        log.write("%.3f query %s %d\\n" % (time.time(), name, qtype))
                if rec is None:
                    reply = struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
                else:
                    time.sleep(rec[1])
                    if rec[0] == "NXDOMAIN":
                        reply = struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
                    elif qtype == 1:
                        rr = struct.pack(">HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(rec[0])
                        reply = struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + rr
                    else:
                        reply = struct.pack(">HHHHHH", qid, 0x8180, 1, 0, 0, 0) + question
                sock.sendto(reply, peer)
            except Exception as e:
                sys.stderr.write("bad query: %r\\n" % e)

        print("ready", flush=True)
        while True:
            data, peer = sock.recvfrom(4096)
            threading.Thread(target=answer, args=(data, peer), daemon=True).start()
        """

    init() throws {
        dir = try makeTempDirectory(prefix: "dns")
        try Self.script.write(toFile: dir + "/dns.py", atomically: false, encoding: .utf8)
        try "".write(toFile: dir + "/records", atomically: true, encoding: .utf8)
        try "127.0.0.1 localhost\n".write(toFile: dir + "/hosts", atomically: false, encoding: .utf8)
        try "nameserver \(Self.address)\noptions timeout:10 attempts:1\n".write(toFile: dir + "/resolv.conf", atomically: false, encoding: .utf8)
        try "hosts: files dns\n".write(toFile: dir + "/nsswitch.conf", atomically: false, encoding: .utf8)
        process = try ChildProcess.spawn(["python3", dir + "/dns.py", Self.address, dir + "/records", dir + "/queries"],
                                         stdoutPath: dir + "/dns.out", stderrPath: dir + "/dns.err")
        guard waitUntil(timeout: 10, { readTextFile(dir + "/dns.out").contains("ready") }) else {
            throw E2EError("test DNS server did not start: \(readTextFile(dir + "/dns.err"))")
        }
    }

    /// Answer `name` with `address` after `delay` seconds from now on.
    func set(_ name: String, _ address: String, delay: Double = 0) throws {
        try "\(name) \(address) \(delay)\n".write(toFile: dir + "/records", atomically: true, encoding: .utf8)
    }

    /// (time, name) of every query received so far.
    func queries() -> [(Double, String)] {
        readTextFile(dir + "/queries").split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count >= 3, let t = Double(f[0]) else { return nil }
            return (t, String(f[2]))
        }
    }

    /// When each A query for `name` arrived (one per getaddrinfo call), in order.
    func lookups(of name: String) -> [Double] {
        readTextFile(dir + "/queries").split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count == 4, f[2] == name, f[3] == "1", let t = Double(f[0]) else { return nil }
            return t
        }
    }

    /// Runs a process in a private mount namespace where /etc/hosts, /etc/resolv.conf and
    /// /etc/nsswitch.conf are this resolver's: names resolve only through it.
    var commandPrefix: [String] {
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         "mount --bind \(dir)/hosts /etc/hosts && mount --bind \(dir)/resolv.conf /etc/resolv.conf && "
         + "mount --bind \(dir)/nsswitch.conf /etc/nsswitch.conf && exec \"$0\" \"$@\""]
    }

    func stop() {
        _ = process.terminate(SIGTERM, grace: 5)
        try? FileManager.default.removeItem(atPath: dir)
    }
}

final class DNSTests: XCTestCase {
    /// Acceptance 6: the name's address changes and pgswift follows without a restart; a lookup that
    /// takes 2 s blocks neither the workers nor the supervisor (other clients and the admin console
    /// are served meanwhile). One PostgreSQL listens on 127.0.0.1 and 127.0.0.2 (same port), so
    /// `inet_server_addr()` through pgswift says which address the name led to.
    func testHostNameFollowsAddressChangesAndSlowLookupsBlockNobody() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root (a private mount namespace and port 53)") }
        guard (try? runCommand(["unshare", "-m", "true"]))?.succeeded == true else { throw XCTSkip("unshare -m not permitted here") }
        let name = "db.pgswift.test"
        let pg = try PostgresServer.startPrivate(settings: ["listen_addresses=127.0.0.1,127.0.0.2"])
        defer { pg.stop() }
        let dns = try TestResolver()
        defer { dns.stop() }
        try dns.set(name, "127.0.0.1")

        var s = HealthE2E.settings(pg)
        s.databases = [("testdb", pg.connectionString(dbname: "testdb")),
                       ("named", "host=\(name) port=\(pg.port) dbname=testdb")]
        s.settings += [("dns_max_ttl", "1")]
        s.pgswiftSettings.append(("health_check_user", "u_trust"))
        s.commandPrefix = dns.commandPrefix
        let px = try Pgswift.start(s)
        defer { px.stop() }

        func serverAddress() -> String? {
            guard let c = try? WireClient.connect(port: px.port, user: "u_trust", database: "named", timeout: 10) else { return nil }
            defer { c.close() }
            return (try? c.query("select host(inet_server_addr())"))?.first?.first ?? nil
        }
        XCTAssertTrue(waitUntil(timeout: 20) { serverAddress() == "127.0.0.1" }, px.log())

        // The name moves: pgswift follows without a restart; connections to the old address drain.
        try dns.set(name, "127.0.0.2")
        XCTAssertTrue(waitUntil(timeout: 15) { serverAddress() == "127.0.0.2" }, px.log())
        XCTAssertFalse(px.logLines(containing: "host \(name) now resolves to 127.0.0.2 (was 127.0.0.1)").isEmpty, px.log())
        XCTAssertFalse(px.logLines(containing: "moved to 127.0.0.2", "draining").isEmpty, px.log())

        // The resolver now takes 2 s per answer (and moves the name back): while lookups hang, every
        // client is served quickly, both on the named database (from the addresses already known) and
        // on the numeric one, and the supervisor still answers the admin console.
        try dns.set(name, "127.0.0.1", delay: 2)
        let windowStart = Date().timeIntervalSince1970
        var worst = 0.0, served = 0
        let until = monotonicNow() + 3.5
        while monotonicNow() < until {
            for db in ["testdb", "named"] {
                let t0 = monotonicNow()
                let err = try HealthE2E.firstError(port: px.port, user: "u_trust", database: db)
                XCTAssertNil(err, "\(db): \(String(describing: err))")
                worst = max(worst, monotonicNow() - t0)
                served += 1
            }
            let t0 = monotonicNow()
            XCTAssertFalse(try HealthE2E.health(px).isEmpty)
            worst = max(worst, monotonicNow() - t0)
        }
        XCTAssertLessThan(worst, 1.0, "a client or admin query waited \(worst) s during slow lookups")
        XCTAssertGreaterThan(served, 10)
        // Lookups really were in flight meanwhile.
        XCTAssertTrue(dns.queries().contains { $0.0 >= windowStart && $0.1 == name }, "no lookup during the window")
        XCTAssertTrue(waitUntil(timeout: 15) { serverAddress() == "127.0.0.1" }, px.log())
        XCTAssertEqual(px.workerPids().count, 2)
    }

    /// dns_nxdomain_ttl: a name that does not resolve is looked up again that long after the failed
    /// answer (2 s here; the default is 15, and dns_max_ttl, 1 s here, is for names that resolve), and
    /// not sooner: the health check's failed checks of the name (every 0.5 s to 4 s) start no lookup of
    /// their own. While a slow failing lookup is in flight, the supervisor waits for it without
    /// spinning. Once the name exists, the next lookup finds it and its database serves clients.
    func testFailedLookupIsRepeatedAfterDNSNXDomainTTL() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root (a private mount namespace and port 53)") }
        guard (try? runCommand(["unshare", "-m", "true"]))?.succeeded == true else { throw XCTSkip("unshare -m not permitted here") }
        let name = "gone.pgswift.test"
        let pg = try PostgresServer.shared()
        let dns = try TestResolver()
        defer { dns.stop() }
        var s = HealthE2E.settings(pg)
        s.databases = [("testdb", pg.connectionString(dbname: "testdb")),
                       ("named", "host=\(name) port=\(pg.port) dbname=testdb")]
        s.settings += [("dns_max_ttl", "1"), ("dns_nxdomain_ttl", "2")]
        s.pgswiftSettings.append(("health_check_user", "u_trust"))
        s.commandPrefix = dns.commandPrefix
        let px = try Pgswift.start(s)
        defer { px.stop() }
        func nameState() -> String? {
            ((try? HealthE2E.health(px)) ?? []).first { $0[0] == name }?[2] ?? nil
        }

        XCTAssertTrue(waitUntil(timeout: 30) { dns.lookups(of: name).count >= 4 },
                      "lookups: \(dns.lookups(of: name))\n\(px.log())")
        let times = dns.lookups(of: name)
        let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
        XCTAssertGreaterThanOrEqual(gaps.min() ?? 0, 1.8, "looked up again before dns_nxdomain_ttl: gaps \(gaps)\n\(px.log())")
        XCTAssertEqual(nameState(), "down", "\((try? HealthE2E.health(px)) ?? [])")
        XCTAssertFalse(px.logLines(containing: "health check of \(name):\(pg.port) failed (cannot resolve \(name)").isEmpty, px.log())

        // Failures that take 1.5 s each: the supervisor sleeps while it waits for them.
        try dns.set(name, "NXDOMAIN", delay: 1.5)
        let slowFrom = dns.lookups(of: name).count
        XCTAssertTrue(waitUntil(timeout: 30) { dns.lookups(of: name).count >= slowFrom + 1 }, px.log())
        let cpuBefore = try XCTUnwrap(MetricsServerTests.cpuSeconds(px.supervisorPid))
        let t0 = monotonicNow()
        XCTAssertTrue(waitUntil(timeout: 30) { dns.lookups(of: name).count >= slowFrom + 3 }, px.log())
        let cpu = try XCTUnwrap(MetricsServerTests.cpuSeconds(px.supervisorPid)) - cpuBefore
        let share = cpu / (monotonicNow() - t0)
        print("supervisor CPU while slow lookups fail: \(String(format: "%.1f", share * 100)) %")
        XCTAssertLessThan(share, 0.25, "the supervisor spun while lookups were in flight")
        let slowTimes = Array(dns.lookups(of: name).suffix(from: slowFrom))
        let slowGaps = zip(slowTimes.dropFirst(), slowTimes).map { $0 - $1 }
        XCTAssertGreaterThanOrEqual(slowGaps.min() ?? 0, 1.8 + 1.5, "dns_nxdomain_ttl counts from the answer: \(slowGaps)")

        // The name appears: found at the next lookup, checked, and its database serves.
        try dns.set(name, "127.0.0.1")
        XCTAssertTrue(waitUntil(timeout: 20) { nameState() == "up" }, "\((try? HealthE2E.health(px)) ?? [])\n\(px.log())")
        XCTAssertFalse(px.logLines(containing: "host \(name) resolves to 127.0.0.1").isEmpty, px.log())
        XCTAssertNil(try HealthE2E.firstError(port: px.port, user: "u_trust", database: "named"))
    }
}
