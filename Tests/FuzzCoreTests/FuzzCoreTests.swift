// Unit tests of the fuzzer's generator: PRNG determinism, corpus framing, mutators, the backend scanner.
import FuzzCore
import XCTest

/// Splits a post-auth input into typed messages; nil if the bytes are not exactly a sequence of them.
private func frames(_ b: [UInt8]) -> [(UInt8, Int)]? {
    var out: [(UInt8, Int)] = []
    var i = 0
    while i < b.count {
        guard i + 5 <= b.count else { return nil }
        let len = Int(b[i + 1]) << 24 | Int(b[i + 2]) << 16 | Int(b[i + 3]) << 8 | Int(b[i + 4])
        guard len >= 4, i + 1 + len <= b.count else { return nil }
        out.append((b[i], len))
        i += 1 + len
    }
    return out
}

final class FuzzCoreTests: XCTestCase {
    func testSplitMixMatchesTheReferenceOutputs() {
        // Reference values of splitmix64 seeded with 0 (Vigna's splitmix64.c).
        var sm = SplitMix64(0)
        XCTAssertEqual(sm.next(), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(sm.next(), 0x6E78_9E6A_A1B9_65F4)
        XCTAssertEqual(sm.next(), 0x06C4_5D18_8009_454F)
    }

    func testSameSeedSameStreamOtherSeedOtherStream() {
        var a = FuzzRandom(seed: 42), b = FuzzRandom(seed: 42), c = FuzzRandom(seed: 43)
        let xa = (0..<100).map { _ in a.next() }
        XCTAssertEqual(xa, (0..<100).map { _ in b.next() })
        XCTAssertNotEqual(xa, (0..<100).map { _ in c.next() })
    }

    func testBoundedDrawsStayInRangeAndCoverIt() {
        var r = FuzzRandom(seed: 7)
        var seen = [Int](repeating: 0, count: 10)
        for _ in 0..<10_000 {
            let v = r.below(10)
            XCTAssert((0..<10).contains(v))
            seen[v] += 1
        }
        XCTAssertTrue(seen.allSatisfy { $0 > 800 && $0 < 1200 }, "uneven: \(seen)")
        for _ in 0..<1_000 { XCTAssert((-3...3).contains(r.between(-3, 3))) }
    }

    func testAnInputDependsOnlyOnSeedPhaseAndIndex() {
        let m = Mutator(phase: .postAuth)
        let forward = (0..<200).map { m.input(seed: 99, index: UInt64($0)).bytes }
        let backward = (0..<200).reversed().map { m.input(seed: 99, index: UInt64($0)).bytes }
        XCTAssertEqual(forward, backward.reversed())
        XCTAssertEqual(m.input(seed: 99, index: 5).steps, Mutator(phase: .postAuth).input(seed: 99, index: 5).steps)
        let otherSeed = (0..<200).map { m.input(seed: 100, index: UInt64($0)).bytes }
        XCTAssertNotEqual(forward, otherSeed)
        let pre = Mutator(phase: .preAuth)
        XCTAssertNotEqual(pre.input(seed: 99, index: 3).bytes, pre.input(seed: 99, index: 4).bytes)
    }

    func testPostAuthSeedsAreWellFramedFrontendMessages() {
        for seed in Corpus.postAuth(FuzzNames()) {
            let b = Enc.serialize(seed.messages)
            guard let f = frames(b) else { return XCTFail("\(seed.name) is not framed") }
            XCTAssertEqual(f.count, seed.messages.count, seed.name)
            XCTAssertTrue(f.allSatisfy { Enc.frontendTypes.contains($0.0) }, seed.name)
        }
    }

    func testPreAuthSeedsStartWithAnUntypedPacket() {
        for seed in Corpus.preAuth(FuzzNames()) {
            XCTAssertEqual(seed.messages.first?.type, 0, seed.name)
            let b = Enc.serialize(seed.messages)
            let len = Int(b[0]) << 24 | Int(b[1]) << 16 | Int(b[2]) << 8 | Int(b[3])
            XCTAssertEqual(len, seed.messages[0].payload.count + 4, seed.name)
        }
    }

    func testStructuredMutationsKeepFramingAndFramingOnesAreFlagged() {
        let m = Mutator(phase: .postAuth)
        var framed = 0, broken = 0, huge = 0
        for i in 0..<3_000 {
            let input = m.input(seed: 2024, index: UInt64(i))
            if input.breaksFraming {
                broken += 1
            } else {
                framed += 1
                XCTAssertNotNil(frames(input.bytes), "input \(i) (\(input.steps)) lost its framing")
            }
            if input.bytes.count > 32_768 { huge += 1 }
        }
        // Framing-breaking inputs are the stated small share (2 %), oversized ones are present.
        XCTAssertGreaterThan(broken, 25)
        XCTAssertLessThan(broken, 120)
        XCTAssertGreaterThan(huge, 30)
        XCTAssertGreaterThan(framed, 2_500)
    }

    func testFramingMutationsBreakTheStream() {
        var rng = FuzzRandom(seed: 3)
        let m = Mutator(phase: .postAuth)
        let msgs = [Enc.parse("", "select 1"), Enc.bind(""), Enc.execute()]
        var changed = 0
        for _ in 0..<500 {
            var b = Enc.serialize(msgs)
            let step = m.framing(&b, msgs, atStart: rng.chance(50), &rng)
            XCTAssertFalse(step.isEmpty)
            if b != Enc.serialize(msgs) { changed += 1 }
        }
        XCTAssertGreaterThan(changed, 450)
    }

    func testScannerSplitsMessagesFedByteByByte() {
        var stream: [UInt8] = []
        Message(UInt8(ascii: "T"), [0, 1, 2]).append(to: &stream)
        Message(UInt8(ascii: "D"), Array(repeating: 7, count: 5_000)).append(to: &stream)
        Message(UInt8(ascii: "Z"), [UInt8(ascii: "I")]).append(to: &stream)
        var sc = BackendScanner(keep: Set("DZ".utf8))
        sc.keepLimit = 100
        var got: [BackendScanner.Event] = []
        for byte in stream {
            [byte].withUnsafeBytes { sc.feed($0) { got.append($0) } }
        }
        XCTAssertEqual(got, [.message(type: UInt8(ascii: "D"), body: Array(repeating: 7, count: 100)),
                             .message(type: UInt8(ascii: "Z"), body: [UInt8(ascii: "I")])])
    }

    func testScannerReportsAnUnframedStream() {
        var stream: [UInt8] = []
        Message(UInt8(ascii: "Z"), [UInt8(ascii: "I")]).append(to: &stream)
        stream += [0, 0, 0, 0x4f, 0x53]  // bytes of a message body where a header belongs
        var sc = BackendScanner(keep: Set("Z".utf8))
        var got: [BackendScanner.Event] = []
        stream.withUnsafeBytes { sc.feed($0) { got.append($0) } }
        XCTAssertEqual(got.last, .garbled(type: 0, length: 0x4f53))
        XCTAssertTrue(sc.broken)
    }
}
