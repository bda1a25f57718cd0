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
        XCTAssertEqual(SupervisorToken.peerCancels.raw, 3 << 62)
        XCTAssertEqual(SupervisorToken.peerCancels.owner, .peers)
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

final class PeerCancelKeyTests: XCTestCase {
    /// The 8 key bytes as a client sends them back (process id, then secret, big-endian).
    private func bytes(_ pid: Int32, _ secret: UInt32) -> [UInt8] {
        let p = UInt32(bitPattern: pid)
        return [UInt8(p >> 24), UInt8(p >> 16 & 0xFF), UInt8(p >> 8 & 0xFF), UInt8(p & 0xFF),
                UInt8(secret >> 24), UInt8(secret >> 16 & 0xFF), UInt8(secret >> 8 & 0xFF), UInt8(secret & 0xFF)]
    }

    /// PgBouncer (>= 1.21) reads the peer id from bytes 1 and 2, low byte first, and the TTL from the
    /// low two bits of byte 7, and keeps byte 0's top bit clear: pgswift's keys must read the same.
    func testPgBouncerReadsThePeerIDAndTTL() {
        let pid = PeerCancelKey.processID(slot: 0x1234, peer: 0x2A05)
        let secret = PeerCancelKey.secret(random: 0xDEAD_BEE0)
        let b = bytes(pid, secret)
        XCTAssertEqual(Int(b[1]) + Int(b[2]) << 8, 0x2A05, "peer id as PgBouncer decodes it")
        XCTAssertEqual(b[7] & 0x03, 3, "TTL bits all set in a new key")
        XCTAssertEqual(b[0] & 0x80, 0, "no sign bit")
        XCTAssertEqual(b, [0x12, 0x05, 0x2A, 0x34, 0xDE, 0xAD, 0xBE, 0xE3])
        XCTAssertEqual(PeerCancelKey.peer(processID: pid), 0x2A05)
        XCTAssertEqual(PeerCancelKey.slot(processID: pid), 0x1234)
        XCTAssertEqual(PeerCancelKey.ttl(secret: secret), 3)
        XCTAssertEqual(PeerCancelKey.ttl(secret: secret - 1), 2, "a forward lowers the TTL by subtracting 1, as PgBouncer")
        XCTAssertEqual(PeerCancelKey.secret(random: secret - 2), secret, "the owner restores the TTL bits to compare")
    }

    /// A key PgBouncer made (random bytes 0 and 3) names its peer id the same way.
    func testKeysMadeByPgBouncer() {
        // bytes 7f 10 00 9c ...: peer 16, as PgBouncer with peer_id = 16 writes it.
        let pid = Int32(bitPattern: 0x7F10_009C)
        XCTAssertEqual(PeerCancelKey.peer(processID: pid), 16)
        XCTAssertEqual(PeerCancelKey.peer(processID: Int32(bitPattern: 0x0001_4000)), 0x4001)
    }

    /// Every slot pgswift allows (workers <= 4096) and every peer id round-trip, and differ by key.
    func testSlotsAndPeersRoundTrip() {
        for slot: Int32 in [0, 1, 255, 256, 4095, PeerCancelKey.maxSlot] {
            for peer in [1, 2, 255, 256, 16383, 65535] {
                let pid = PeerCancelKey.processID(slot: slot, peer: peer)
                XCTAssertGreaterThanOrEqual(pid, 0)
                XCTAssertEqual(PeerCancelKey.slot(processID: pid), slot)
                XCTAssertEqual(PeerCancelKey.peer(processID: pid), peer)
            }
        }
        XCTAssertNotEqual(PeerCancelKey.processID(slot: 1, peer: 1), PeerCancelKey.processID(slot: 256, peer: 1))
    }
}
