// The packed ids (Shared/Util/PackedIDs.swift): round trips and the exact bits. The user-visible
// ones (SHOW ptr/link, BackendKeyData process ids) are pinned to the values
// pgswift has always produced.
import XCTest
import Shared

final class WorkerTokenTests: XCTestCase {
    func testRoundTripAndBits() {
        let t = WorkerToken(.server, generation: 0x12_3456, index: 987_654)
        XCTAssertEqual(t.raw, 3 << 56 | 0x12_3456 << 32 | 987_654)
        XCTAssertEqual(t.kind, .server)
        XCTAssertEqual(t.generation, 0x12_3456)
        XCTAssertEqual(t.index, 987_654)
        XCTAssertEqual(WorkerToken(raw: t.raw), t)
    }

    func testGenerationWrapsWithin24Bits() {
        let t = WorkerToken(.client, generation: 0x1FF_FFFF, index: 3)
        XCTAssertEqual(t.raw, 2 << 56 | 0xFF_FFFF << 32 | 3)
        XCTAssertEqual(t.generation, 0xFF_FFFF)
        XCTAssertEqual(t.kind, .client)
        XCTAssertEqual(t.index, 3)
        XCTAssertTrue(t.matches(generation: 0x1FF_FFFF), "compared on the kept 24 bits")
        XCTAssertTrue(t.matches(generation: 0xFF_FFFF))
        XCTAssertFalse(t.matches(generation: 0x200_0000))
    }

    func testDescriptorsAndKinds() {
        XCTAssertEqual(WorkerToken(.listener, fd: 7).raw, 1 << 56 | 7)
        XCTAssertEqual(WorkerToken(.control, fd: 9).raw, 4 << 56 | 9)
        XCTAssertEqual(WorkerToken(.handoff, fd: 11).raw, 6 << 56 | 11)
        XCTAssertEqual(WorkerToken(.handoff, fd: 11).index, 11)
        XCTAssertNil(WorkerToken(raw: 5 << 56).kind, "no kind 5")
        XCTAssertNil(WorkerToken(raw: 0).kind)
        XCTAssertEqual(WorkerToken(.client, generation: 1, index: -1).index, -1, "the index keeps its sign")
    }
}

final class SupervisorTokenTests: XCTestCase {
    func testOwnersAndBits() {
        XCTAssertEqual(SupervisorToken.signal.raw, 0)
        XCTAssertEqual(SupervisorToken.signal.owner, .signal)
        XCTAssertEqual(SupervisorToken.metricsListener.raw, 1 << 63)
        XCTAssertEqual(SupervisorToken.metricsListener.owner, .metrics)
        XCTAssertEqual(SupervisorToken.metricsListener.index, -1)
        XCTAssertEqual(SupervisorToken.healthResolver.raw, 1 << 62)
        XCTAssertEqual(SupervisorToken.healthResolver.owner, .health)
        XCTAssertEqual(SupervisorToken.healthResolver.index, -1)

        let m = SupervisorToken.metricsConnection(fd: 41)
        XCTAssertEqual(m.raw, 1 << 63 | 42)
        XCTAssertEqual(m.owner, .metrics)
        XCTAssertEqual(m.index, 41)

        let h = SupervisorToken.healthProbe(target: 2, serial: 0x1AB_CDEF)
        XCTAssertEqual(h.raw, 1 << 62 | 0xAB_CDEF << 32 | 3)
        XCTAssertEqual(h.owner, .health)
        XCTAssertEqual(h.index, 2)
        XCTAssertEqual(h.generation, 0xAB_CDEF, "a probe serial keeps 24 bits")

        let c = SupervisorToken.channel(slot: 0, generation: 5)
        XCTAssertEqual(c.raw, 5 << 32 | 1)
        XCTAssertEqual(c.owner, .channel)
        XCTAssertEqual(c.index, 0)
        XCTAssertEqual(c.generation, 5)
    }

    func testChannelGenerationNeverReachesTheTagBits() {
        for g: UInt32 in [0x3FFF_FFFF, 0x4000_0000, 0xC000_0001, 0xFFFF_FFFF] {
            let c = SupervisorToken.channel(slot: 3, generation: g)
            XCTAssertEqual(c.owner, .channel)
            XCTAssertEqual(c.index, 3)
            XCTAssertEqual(c.generation, g & 0x3FFF_FFFF)
            XCTAssertNotEqual(c, .signal)
        }
    }
}

final class AdminPointerTests: XCTestCase {
    func testClientPointerBits() {
        let p = AdminPointer.client(slot: 3, generation: 0x12_3456, index: 0x1_0042)
        // slot << 40 | (generation & 0xFFFFFF) << 16 | (index & 0xFFFF), as SHOW CLIENTS always printed.
        XCTAssertEqual(p.raw, 3 << 40 | 0x12_3456 << 16 | 0x0042)
        XCTAssertEqual(p.slot, 3)
        XCTAssertEqual(p.clientGeneration, 0x12_3456)
        XCTAssertEqual(p.clientIndex, 0x42, "16 bits of the index")
        XCTAssertEqual(AdminPointer.client(slot: 1, generation: 0xAFF_FFFF, index: 2).raw, 1 << 40 | 0xFF_FFFF << 16 | 2)
    }

    func testServerPointerBits() {
        let p = AdminPointer.server(slot: 2, index: 0x1_2345)
        XCTAssertEqual(p.raw, 2 << 40 | 1 << 39 | 0x1_2345)
        XCTAssertEqual(p.slot, 2)
        XCTAssertEqual(p.serverIndex, 0x1_2345)
    }
}

final class CancelProcessIDTests: XCTestCase {
    func testBitsAndRoundTrip() {
        let pid = CancelProcessID(slot: 3, index: 77)
        XCTAssertEqual(pid.raw, 3 << 20 | 77)
        XCTAssertEqual(pid.slot, 3)
        XCTAssertEqual(pid.index, 77)
        XCTAssertEqual(CancelProcessID(raw: pid.raw), pid)
    }

    func testIndexIsCutTo20Bits() {
        let pid = CancelProcessID(slot: 1, index: 0x10_0005)
        XCTAssertEqual(pid.raw, 1 << 20 | 5)
        XCTAssertEqual(pid.index, 5)
        XCTAssertEqual(pid.slot, 1)
    }

    func testKeysFromTheWire() {
        // Any 32-bit value may arrive in a CancelRequest; the slot is the arithmetic top bits.
        XCTAssertEqual(CancelProcessID(raw: -1).slot, -1)
        XCTAssertEqual(CancelProcessID(raw: -1).index, 0xF_FFFF)
        XCTAssertEqual(CancelProcessID(raw: 0x7FFF_FFFF).slot, 0x7FF)
    }
}
