// Tests of the worker-slot logic without processes: respawn backoff, worker launch, epoll data of a slot.
import Glibc
import XCTest
import Shared
@testable import Supervisor

final class RespawnBackoffTests: XCTestCase {
    private let ms: Int64 = 1_000_000
    private let quick: Int64 = 1_000_000_000  // crashed 1 s after starting

    func testFirstCrashRestartsAtOnceThenDelaysDoubleUpToTheCap() {
        var b = RespawnBackoff()
        let delays = (0..<10).map { _ in b.delayAfterExit(ranForNanos: quick) }
        XCTAssertEqual(delays, [0, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms, 5000 * ms])
        XCTAssertEqual(b.quickFailures, 10)
    }

    func testAWorkerThatRanTenSecondsStartsAFreshSeries() {
        var b = RespawnBackoff()
        _ = b.delayAfterExit(ranForNanos: quick)
        _ = b.delayAfterExit(ranForNanos: quick)
        XCTAssertEqual(b.delayAfterExit(ranForNanos: quick), 200 * ms)
        XCTAssertEqual(b.delayAfterExit(ranForNanos: RespawnBackoff.stableAfterNanos), 0, "ran 10 s: immediate again")
        XCTAssertEqual(b.quickFailures, 1)
        XCTAssertEqual(b.delayAfterExit(ranForNanos: 0), 100 * ms)
    }

    func testManyFailuresDoNotOverflow() {
        var b = RespawnBackoff()
        for _ in 0..<10_000 { _ = b.delayAfterExit(ranForNanos: 0) }
        XCTAssertEqual(b.delayAfterExit(ranForNanos: 0), RespawnBackoff.maximumDelayNanos)
    }
}

final class WorkerLaunchTests: XCTestCase {
    func testConfiguredBinaryWins() {
        XCTAssertEqual(WorkerLaunch.locateBinary(configured: "/opt/w", executablePath: "/usr/bin/pgswift",
                                                 isExecutable: { _ in true }), "/opt/w")
    }

    func testSiblingOfTheSupervisorThenPackagedLocation() {
        XCTAssertEqual(WorkerLaunch.locateBinary(configured: nil, executablePath: "/build/debug/pgswift",
                                                 isExecutable: { $0 == "/build/debug/pgswift-worker" }),
                       "/build/debug/pgswift-worker")
        XCTAssertEqual(WorkerLaunch.locateBinary(configured: "", executablePath: "/usr/bin/pgswift",
                                                 isExecutable: { _ in false }),
                       "/usr/lib/pgswift/pgswift-worker")
        XCTAssertEqual(WorkerLaunch.locateBinary(configured: nil, executablePath: nil, isExecutable: { _ in true }),
                       "/usr/lib/pgswift/pgswift-worker")
    }

    func testAbsolutePath() {
        XCTAssertEqual(WorkerLaunch.absolutePath("/etc/pgswift.ini", currentDirectory: "/srv"), "/etc/pgswift.ini")
        XCTAssertEqual(WorkerLaunch.absolutePath("conf/p.ini", currentDirectory: "/srv"), "/srv/conf/p.ini")
        XCTAssertEqual(WorkerLaunch.absolutePath("./p.ini", currentDirectory: "/srv/"), "/srv/p.ini")
        XCTAssertEqual(WorkerLaunch.absolutePath("p.ini", currentDirectory: "/"), "/p.ini")
    }

    func testArgumentsNumberDescriptorsInSpawnOrder() {
        XCTAssertEqual(WorkerLaunch.arguments(configPath: "/etc/p.ini", slot: 2, tcpCount: 2, hasUnix: true, verbosity: 2),
                       ["--config", "/etc/p.ini", "--slot", "2", "--tcp-fds", "3,4", "--unix-fds", "5",
                        "--control-fd", "6", "-v", "-v"])
        XCTAssertEqual(WorkerLaunch.arguments(configPath: "/p", slot: 0, tcpCount: 0, hasUnix: true, verbosity: 0),
                       ["--config", "/p", "--slot", "0", "--tcp-fds", "", "--unix-fds", "3", "--control-fd", "4"])
        XCTAssertEqual(WorkerLaunch.arguments(configPath: "/p", slot: 1, tcpCount: 1, hasUnix: false, verbosity: 0),
                       ["--config", "/p", "--slot", "1", "--tcp-fds", "3", "--unix-fds", "", "--control-fd", "4"])
        XCTAssertEqual(WorkerLaunch.arguments(configPath: "/p", slot: 1, tcpCount: 1, hasUnix: false, verbosity: 0,
                                              respawned: true).last, "--respawned")
        // The client count follows the control socket; a rolling restart's new process names its own word.
        XCTAssertEqual(Array(WorkerLaunch.arguments(configPath: "/p", slot: 1, tcpCount: 1, hasUnix: false, verbosity: 0,
                                                    clientsFD: true, clientsWord: 5).suffix(4)),
                       ["--clients-fd", "5", "--clients-word", "5"])
        // SET values since the last RELOAD: a new process loads what the running ones run.
        XCTAssertEqual(Array(WorkerLaunch.arguments(configPath: "/p", slot: 0, tcpCount: 1, hasUnix: false, verbosity: 0,
                                                    overrides: [ConfigOverride(key: "pool_mode", value: "transaction"),
                                                                ConfigOverride(key: "server_reset_query", value: "")])
                             .suffix(4)),
                       ["--set", "pool_mode=transaction", "--set", "server_reset_query="])
        // The peer id the service started with, only when peering is on.
        XCTAssertEqual(Array(WorkerLaunch.arguments(configPath: "/p", slot: 0, tcpCount: 1, hasUnix: false, verbosity: 0,
                                                    peerID: 12).suffix(2)), ["--peer-id", "12"])
        XCTAssertFalse(WorkerLaunch.arguments(configPath: "/p", slot: 0, tcpCount: 1, hasUnix: false, verbosity: 0,
                                              peerID: 0).contains("--peer-id"))
    }
}

final class WorkerSlotTests: XCTestCase {
    func testEpollDataRoundTripsAndNeverCollidesWithTheSignalFD() {
        let slot = WorkerSlot(index: 0)
        XCTAssertNotEqual(slot.epollData, .signal)
        XCTAssertEqual(slot.epollData.owner, .channel)
        slot.generation = 0xFFFF_FFFF
        XCTAssertEqual(slot.epollData.owner, .channel, "a generation never reaches the tag bits")
        XCTAssertEqual(slot.epollData.index, 0)
        XCTAssertEqual(slot.epollData.generation, 0x3FFF_FFFF)
        XCTAssertFalse(slot.send(.pause), "no channel yet")
    }
}
