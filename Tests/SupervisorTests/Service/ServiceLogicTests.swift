// Tests of the supervisor's service logic without processes: command line, signals, listener plan, reload checks.
import Glibc
import XCTest
import Shared
@testable import Supervisor

final class ArgumentsTests: XCTestCase {
    private func parse(_ args: String...) throws -> SupervisorCommand { try Arguments.parse(args) }

    private func usageError(_ args: String...) -> String? {
        do {
            _ = try Arguments.parse(args)
            return nil
        } catch {
            return error.message
        }
    }

    func testRunWithVerbosityAndQuiet() throws {
        XCTAssertEqual(try parse("pgswift.ini"), .run(SupervisorOptions(configPath: "pgswift.ini")))
        XCTAssertEqual(try parse("-v", "-v", "/etc/pgswift.ini"),
                       .run(SupervisorOptions(configPath: "/etc/pgswift.ini", verbosity: 2)))
        XCTAssertEqual(try parse("-vvq", "a.ini"), .run(SupervisorOptions(configPath: "a.ini", verbosity: 2, quiet: true)))
        XCTAssertEqual(try parse("a.ini", "--verbose", "--quiet"),
                       .run(SupervisorOptions(configPath: "a.ini", verbosity: 1, quiet: true)))
        XCTAssertEqual(try parse("--", "-odd.ini"), .run(SupervisorOptions(configPath: "-odd.ini")))
    }

    func testCheckConfigForms() throws {
        XCTAssertEqual(try parse("--check-config", "a.ini"), .checkConfig(SupervisorOptions(configPath: "a.ini")))
        XCTAssertEqual(try parse("-t", "a.ini"), .checkConfig(SupervisorOptions(configPath: "a.ini")))
        XCTAssertEqual(try parse("a.ini", "-tv"), .checkConfig(SupervisorOptions(configPath: "a.ini", verbosity: 1)))
    }

    func testHelpAndVersionWinOverEverythingElse() throws {
        XCTAssertEqual(try parse("--help"), .help)
        XCTAssertEqual(try parse("-h", "--bogus"), .help)
        XCTAssertEqual(try parse("a.ini", "-h"), .help)
        XCTAssertEqual(try parse("--version"), .version)
        XCTAssertEqual(try parse("-V"), .version)
        XCTAssertEqual(PgswiftVersion.string, "0.1.0")
    }

    func testUsageErrors() {
        XCTAssertEqual(usageError(), "missing CONFIG file")
        XCTAssertEqual(usageError("-v"), "missing CONFIG file")
        XCTAssertEqual(usageError("a.ini", "b.ini"), "expected one CONFIG file, got 2 arguments")
        XCTAssertEqual(usageError("--bogus", "a.ini"), "unknown option --bogus")
        XCTAssertEqual(usageError("-x", "a.ini"), "unknown option -x")
        XCTAssertEqual(usageError("-vx", "a.ini"), "unknown option -x")
    }

    func testDaemonizeAndOtherPgBouncerOptionsAreRefusedWithAReason() {
        for args in [["-d", "a.ini"], ["--daemon", "a.ini"], ["-vd", "a.ini"]] {
            let message = (try? Arguments.parse(args)).map { "\($0)" } ?? usageErrorOf(args)
            XCTAssertTrue(message.contains("daemonize") && message.contains("foreground"), message)
        }
        XCTAssertTrue(usageErrorOf(["-R", "a.ini"]).contains("online restart"))
        XCTAssertTrue(usageErrorOf(["--reboot", "a.ini"]).contains("online restart"))
        XCTAssertTrue(usageErrorOf(["--user=pg", "a.ini"]).contains("switch user"))
        XCTAssertTrue(usageErrorOf(["-u", "postgres", "a.ini"]).contains("switch user"))
    }

    private func usageErrorOf(_ args: [String]) -> String {
        do {
            _ = try Arguments.parse(args)
            return ""
        } catch {
            return error.message
        }
    }

    func testUsageTextNamesEveryOption() {
        for option in ["--check-config", "-t", "-v", "-q", "--help", "--version", "CONFIG", "SIGHUP", "SIGTERM"] {
            XCTAssertTrue(Arguments.usage.contains(option), option)
        }
    }
}

final class SignalPolicyTests: XCTestCase {
    func testFirstSignalsFollowPgBouncer() {
        XCTAssertEqual(SignalPolicy.action(for: SIGTERM, stopping: nil), .shutdown(.graceful))
        XCTAssertEqual(SignalPolicy.action(for: SIGINT, stopping: nil), .shutdown(.safe))
        XCTAssertEqual(SignalPolicy.action(for: SIGQUIT, stopping: nil), .shutdown(.immediate))
        XCTAssertEqual(SignalPolicy.action(for: SIGHUP, stopping: nil), .reload)
        XCTAssertEqual(SignalPolicy.action(for: SIGUSR1, stopping: nil), .pause)
        XCTAssertEqual(SignalPolicy.action(for: SIGUSR2, stopping: nil), .resume)
        XCTAssertEqual(SignalPolicy.action(for: SIGCHLD, stopping: nil), .reapChildren)
        XCTAssertEqual(SignalPolicy.action(for: SIGWINCH, stopping: nil), .ignore)
    }

    func testASecondStopSignalMeansNow() {
        for first in [ShutdownMode.graceful, .safe] {
            XCTAssertEqual(SignalPolicy.action(for: SIGTERM, stopping: first), .shutdown(.immediate))
            XCTAssertEqual(SignalPolicy.action(for: SIGINT, stopping: first), .shutdown(.immediate))
            XCTAssertEqual(SignalPolicy.action(for: SIGHUP, stopping: first), .ignore)
            XCTAssertEqual(SignalPolicy.action(for: SIGUSR2, stopping: first), .ignore, "no RESUME while stopping")
            XCTAssertEqual(SignalPolicy.action(for: SIGCHLD, stopping: first), .reapChildren)
        }
    }

    func testEveryHandledSignalHasAnAction() {
        for s in SignalPolicy.handled {
            XCTAssertNotEqual(SignalPolicy.action(for: s, stopping: nil), .ignore, Signals.name(s))
        }
    }
}

final class ListenerPlanTests: XCTestCase {
    func testUnixSocketPath() {
        XCTAssertEqual(Listeners.unixSocketPath(directory: "/tmp", port: 6432), "/tmp/.s.PGSQL.6432")
        XCTAssertEqual(Listeners.unixSocketPath(directory: "/var/run/pgswift/", port: 5432), "/var/run/pgswift/.s.PGSQL.5432")
        XCTAssertEqual(Listeners.unixSocketPath(directory: "/", port: 1), "/.s.PGSQL.1")
        XCTAssertNil(Listeners.unixSocketPath(directory: "", port: 6432))
    }

    func testWildcardIsBothFamiliesAndDuplicatesCollapse() throws {
        let all = try Listeners.tcpAddresses(listenAddr: ["*"], port: 6432)
        XCTAssertEqual(all.map { $0.address.description }, ["0.0.0.0:6432", "[::]:6432"])
        XCTAssertTrue(all.allSatisfy { $0.wildcard })
        let two = try Listeners.tcpAddresses(listenAddr: ["127.0.0.1", "127.0.0.1", "::1"], port: 1)
        XCTAssertEqual(two.map { $0.address.description }, ["127.0.0.1:1", "[::1]:1"])
        XCTAssertTrue(try Listeners.tcpAddresses(listenAddr: [], port: 1).isEmpty)
        XCTAssertThrowsError(try Listeners.tcpAddresses(listenAddr: ["no-such-host.invalid"], port: 1))
    }

    func testOpenSharesOneSocketOrGivesEverySlotItsOwnWithReuseport() throws {
        let dir = "/tmp/pgswift-listenertests-\(getpid())"
        mkdir(dir, 0o700)
        defer { rmdir(dir) }
        // Port 0 would give every socket its own port; pick a free one first.
        let probe = try Sockets.listenTCP(SocketAddress.numeric(host: "127.0.0.1", port: 0)!, reusePort: false, backlog: 1)
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(probe, $0, &len) } }
        var a = SocketAddress()
        a.storage = storage
        a.length = len
        let port = a.port
        Posix.close(probe)

        var warnings: [String] = []
        var l = try Listeners.open(listenAddr: ["127.0.0.1"], port: port, unixSocketDir: dir, unixSocketMode: 0o700,
                                   backlog: 16, slots: 3, warn: { warnings.append($0) })
        XCTAssertEqual(l.tcp.count, 3)
        XCTAssertEqual(Set(l.tcp.map { $0[0] }).count, 1, "without so_reuseport one socket shared by the slots")
        XCTAssertEqual(l.fds(forSlot: 1), [l.tcp[1][0], l.unix])
        XCTAssertEqual(l.unixPath, "\(dir)/.s.PGSQL.\(port)")
        XCTAssertTrue(warnings.isEmpty)

        // A second instance on the same port is refused, not quietly added to the group.
        XCTAssertThrowsError(try Listeners.open(listenAddr: ["127.0.0.1"], port: port, unixSocketDir: "",
                                                unixSocketMode: 0o700, backlog: 16, slots: 1, warn: { _ in })) { error in
            XCTAssertTrue("\(error)".contains("address already in use"), "\(error)")
        }
        // Same for the Unix socket of a live instance.
        XCTAssertThrowsError(try Listeners.open(listenAddr: [], port: port, unixSocketDir: dir,
                                                unixSocketMode: 0o700, backlog: 16, slots: 1, warn: { _ in })) { error in
            XCTAssertTrue("\(error)".contains("running process is listening"), "\(error)")
        }
        // Not even with SO_REUSEPORT: the shared socket has no SO_REUSEPORT group to join.
        XCTAssertThrowsError(try Listeners.open(listenAddr: ["127.0.0.1"], port: port, unixSocketDir: "",
                                                unixSocketMode: 0o700, reusePort: true, backlog: 16, slots: 1,
                                                warn: { _ in })) { error in
            XCTAssertTrue("\(error)".contains("address already in use"), "\(error)")
        }
        l.close()
        XCTAssertFalse(l.isOpen)
        unlink("\(dir)/.s.PGSQL.\(port)")

        // so_reuseport: one socket per slot, and a second set may join the port.
        var shared1 = try Listeners.open(listenAddr: ["127.0.0.1"], port: port, unixSocketDir: "", unixSocketMode: 0o700,
                                   reusePort: true, backlog: 16, slots: 3, warn: { _ in })
        XCTAssertEqual(Set(shared1.tcp.map { $0[0] }).count, 3, "so_reuseport: one socket per slot")
        var shared2 = try Listeners.open(listenAddr: ["127.0.0.1"], port: port, unixSocketDir: "", unixSocketMode: 0o700,
                                   reusePort: true, backlog: 16, slots: 2, warn: { _ in })
        XCTAssertEqual(shared2.tcp.count, 2)
        // ...but not one without so_reuseport.
        XCTAssertThrowsError(try Listeners.open(listenAddr: ["127.0.0.1"], port: port, unixSocketDir: "",
                                                unixSocketMode: 0o700, backlog: 16, slots: 1, warn: { _ in }))
        shared1.close()
        shared2.close()
    }
}

final class RestartSettingsTests: XCTestCase {
    func testChangedKeysAreNamedInConfigSpelling() {
        let old = RestartSettings(listenAddr: ["*"], listenPort: 6432, unixSocketDir: "/tmp", unixSocketMode: 0o777,
                                  listenBacklog: 128, workers: 4, workerBinary: nil, pidfile: nil)
        XCTAssertEqual(old.changedKeys(in: old), [])
        var new = old
        new.listenPort = 6433
        new.workers = 8
        new.pidfile = "/run/p.pid"
        new.peerID = 3
        XCTAssertEqual(old.changedKeys(in: new), ["listen_port", "workers", "pidfile", "peer_id"])
    }

    /// SET refuses what a reload cannot apply: every restart-only key is not changeable.
    func testRestartOnlyKeysCannotBeSet() {
        let old = RestartSettings(listenAddr: ["*"], listenPort: 6432, unixSocketDir: "/tmp", unixSocketMode: 0o777,
                                  listenBacklog: 128, workers: 4, workerBinary: nil, pidfile: nil)
        var new = RestartSettings(listenAddr: ["a"], listenPort: 1, unixSocketDir: "/x", unixSocketMode: 0o700,
                                  listenBacklog: 1, workers: 1, workerBinary: "/w", pidfile: "/p")
        new.peerID = 1
        let keys = old.changedKeys(in: new)
        XCTAssertEqual(keys.count, 9)
        for key in keys {
            XCTAssertEqual(ConfigOverride.check(key: key, value: "1"), .restartOnly(key: key), key)
        }
    }
}
