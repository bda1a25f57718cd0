// Tests of the health-check policy: exponential backoff with full jitter, the up/down state machine, roles.
import XCTest
import Shared

final class HealthPolicyTests: XCTestCase {
    let ms: Int64 = 1_000_000

    func testBackoffCapDoublesFromInitialToMax() {
        var b = Backoff(initialNanos: 500 * ms, maxNanos: 4000 * ms)
        var caps: [Int64] = []
        for _ in 0..<7 { caps.append(b.fail(random: 0.5).capNanos / ms) }
        XCTAssertEqual(caps, [500, 1000, 2000, 4000, 4000, 4000, 4000])
        b.reset()
        XCTAssertEqual(b.failures, 0)
        XCTAssertEqual(b.fail(random: 0.5).capNanos / ms, 500)
    }

    func testFullJitterSpansZeroToCapAndRespectsTheFloor() {
        var b = Backoff(initialNanos: 1000 * ms, maxNanos: 8000 * ms)
        _ = b.fail(random: 0)
        _ = b.fail(random: 0)
        XCTAssertEqual(b.fail(random: 0.999_999).waitNanos / ms, 3999)
        var low = Backoff(initialNanos: 1000 * ms, maxNanos: 8000 * ms)
        // A zero draw still waits a little: a host that refuses at once must not spin the loop.
        XCTAssertEqual(low.fail(random: 0).waitNanos, 10 * ms)
        var floored = Backoff(initialNanos: 500 * ms, maxNanos: 30_000 * ms, floorNanos: 15_000 * ms)
        XCTAssertEqual(floored.fail(random: 0.1).waitNanos, 15_000 * ms)
        for _ in 0..<10 { _ = floored.fail(random: 1) }
        XCTAssertEqual(floored.fail(random: 1).waitNanos, 30_000 * ms)
    }

    func testBackoffNeverOverflowsAfterManyFailures() {
        var b = Backoff(initialNanos: 500 * ms, maxNanos: 30_000 * ms)
        for _ in 0..<10_000 { _ = b.fail(random: 0.7) }
        XCTAssertEqual(b.currentCapNanos, 30_000 * ms)
    }

    func testTransitionsAreReportedOnceAndSuccessResetsTheBackoff() {
        var h = HostHealth(backoff: Backoff(initialNanos: 500 * ms, maxNanos: 4000 * ms))
        XCTAssertEqual(h.state, .unknown)
        let first = h.succeeded(now: 1, role: nil, periodNanos: 1000 * ms)
        XCTAssertEqual(first.changedTo, .up)
        XCTAssertEqual(first.nextInNanos, 1000 * ms)
        XCTAssertNil(h.succeeded(now: 2, role: nil, periodNanos: 1000 * ms).changedTo)
        let down = h.failed(now: 3, reason: "refused", random: 1)
        XCTAssertEqual(down.changedTo, .down)
        XCTAssertEqual(down.retry, 1)
        XCTAssertEqual(down.backoffCapNanos, 500 * ms)
        let again = h.failed(now: 4, reason: "refused", random: 1)
        XCTAssertNil(again.changedTo)
        XCTAssertEqual(again.backoffCapNanos, 1000 * ms)
        XCTAssertEqual(h.lastError, "refused")
        XCTAssertEqual(h.succeeded(now: 5, role: nil, periodNanos: 1000 * ms).changedTo, .up)
        XCTAssertEqual(h.backoff.failures, 0)
        XCTAssertEqual(h.transitions, 3)
        XCTAssertEqual(h.failedChecks, 2)
    }

    func testTargetSessionAttrs() {
        let primary = HostRole(inRecovery: false, readOnly: false)
        let readOnlyPrimary = HostRole(inRecovery: false, readOnly: true)
        let standby = HostRole(inRecovery: true, readOnly: true)
        XCTAssertTrue(TargetSessionAttrs.readWrite.accepts(primary))
        XCTAssertFalse(TargetSessionAttrs.readWrite.accepts(readOnlyPrimary))
        XCTAssertFalse(TargetSessionAttrs.readWrite.accepts(standby))
        XCTAssertFalse(TargetSessionAttrs.readWrite.accepts(nil))
        XCTAssertTrue(TargetSessionAttrs.readOnly.accepts(readOnlyPrimary))
        XCTAssertTrue(TargetSessionAttrs.primary.accepts(readOnlyPrimary))
        XCTAssertFalse(TargetSessionAttrs.primary.accepts(standby))
        XCTAssertTrue(TargetSessionAttrs.standby.accepts(standby))
        XCTAssertTrue(TargetSessionAttrs.any.accepts(nil))
    }

    func testFlagsCarryTheRole() {
        let f: BackendFlags = [.known, .up, .roleKnown, .readOnly]
        XCTAssertEqual(f.role, HostRole(inRecovery: false, readOnly: true))
        XCTAssertNil(BackendFlags([.known, .up]).role)
    }

    func testSecondsText() {
        XCTAssertEqual(HealthText.seconds(nanos: 500 * ms), "0.5")
        XCTAssertEqual(HealthText.seconds(nanos: 4000 * ms), "4")
        XCTAssertEqual(HealthText.seconds(nanos: 2250 * ms), "2.25")
    }
}
