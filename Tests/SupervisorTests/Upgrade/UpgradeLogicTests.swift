// Tests of the rolling-restart pieces that need no processes: `pgswift upgrade` arguments.
import XCTest
import Shared
@testable import Supervisor

final class UpgradeLogicTests: XCTestCase {
    func testUpgradeCommandForms() throws {
        XCTAssertEqual(try Arguments.parse(["upgrade", "-c", "a.ini"]), .upgrade(SupervisorOptions(configPath: "a.ini")))
        XCTAssertEqual(try Arguments.parse(["upgrade", "--config", "b.ini"]), .upgrade(SupervisorOptions(configPath: "b.ini")))
        XCTAssertEqual(try Arguments.parse(["upgrade", "c.ini"]), .upgrade(SupervisorOptions(configPath: "c.ini")))
        for bad in [["upgrade"], ["upgrade", "-c"], ["upgrade", "-x", "a.ini"], ["upgrade", "a.ini", "b.ini"]] {
            XCTAssertThrowsError(try Arguments.parse(bad), "\(bad)")
        }
        // A config file really named "upgrade" still runs the service when given as a path.
        XCTAssertEqual(try Arguments.parse(["./upgrade"]), .run(SupervisorOptions(configPath: "./upgrade")))
    }
}

final class ReexecStateTests: XCTestCase {
    func testRoundTrip() {
        var s = ReexecState()
        s.tcp = [[5, 6], [7, 8]]
        s.unix = 9
        s.paused = true
        s.requesterPid = 4242
        s.requestID = 17
        s.workers = [.init(slot: 0, pid: 100, controlFD: 10, generation: 3, restarts: 1, startedAt: 123_456_789),
                     .init(slot: 1, pid: 101, controlFD: 11, generation: 65_537, restarts: 0, startedAt: 5)]
        s.retired = [.init(slot: 1, pid: 99, controlFD: 12, generation: 1, restarts: 0, startedAt: 1, counterWord: 3,
                           features: 3)]
        s.workers[1].features = 1
        s.counter = 13
        s.pausedDBs = ["app", "dé jà"]
        s.disabledDBs = ["x,y=z"]
        XCTAssertEqual(ReexecState.decode(s.encode()), s)
        XCTAssertEqual(Set(s.descriptors), [5, 6, 7, 8, 9, 10, 11, 12, 13])
        // A state written by an image that knew no client count: no counter, words default to the slot.
        let old = ReexecState.decode("v1 paused=0 request=0:0 unix=-1 tcp=1/5 workers=0:100:10:3:1:7 retired=-")
        XCTAssertEqual(old?.counter, -1)
        XCTAssertEqual(old?.workers.first?.counterWord, -1)
        XCTAssertEqual(old?.pausedDBs, [])
        XCTAssertEqual(old?.workers.first?.features, 0, "features unknown: nothing is sent an old worker might not read")
        XCTAssertEqual(old?.peerID, 0, "an image before peering ran with peer id 0")
        // The peer id the service runs with survives the re-exec (a changed peer_id needs a restart).
        var peered = s
        peered.peerID = 7
        XCTAssertTrue(peered.encode().contains(" peer=7 "), peered.encode())
        XCTAssertEqual(ReexecState.decode(peered.encode()), peered)
        XCTAssertFalse(s.encode().contains("peer="))
        XCTAssertNil(ReexecState.decode("v1 paused=0 request=0:0 unix=-1 tcp=1/5 workers=- retired=- peer=0"))
        // The features are a field of their own, which an older image skips (it reads known keys only).
        XCTAssertTrue(s.encode().hasSuffix(" features=101:1,99:3"), s.encode())
        XCTAssertNil(ReexecState.decode("v1 paused=0 request=0:0 unix=-1 tcp=1/5 workers=0:100:10:3:1:7 retired=- features=100"))
        XCTAssertNil(ReexecState.decode("v1 paused=0 request=0:0 unix=-1 pausedDBs=6g tcp=1/5 workers=- retired=-"))
        let empty = ReexecState()
        XCTAssertEqual(ReexecState.decode(empty.encode()), empty)
        var unixOnly = ReexecState()
        unixOnly.tcp = [[]]
        unixOnly.unix = 4
        XCTAssertEqual(ReexecState.decode(unixOnly.encode())?.tcp.count, 1)
    }

    func testGarbageIsRejected() {
        for text in ["", "v2 paused=0", "v1", "v1 paused=0 request=1:2 unix=-1 tcp=- workers=x retired=-",
                     "v1 paused=0 request=1 unix=-1 tcp=- workers=- retired=-",
                     "v1 paused=0 request=0:0 unix=-1 tcp=1/a,b workers=- retired=-",
                     "v1 paused=0 request=0:0 unix=-1 tcp=2/3 workers=- retired=-"] {
            XCTAssertNil(ReexecState.decode(text), text)
        }
    }
}
