// SQLHash (Shared/SQL/SQLHash.swift): XXH64 against the reference implementation's values, and
// the pattern and raw-text hashes pinned so that a queryid never changes by accident.
import XCTest
import Shared

final class SQLHashTests: XCTestCase {
    /// (length, XXH64 seed 0, XXH64 seed 12345) of bytes (i * 7 + 3) & 0xFF, from the reference
    /// xxHash library (python-xxhash 0.8): every tail length and the 32-byte stripe boundaries.
    static let vectors: [(Int, UInt64, UInt64)] = [
        (0, 0xEF46DB3751D8E999, 0x95584AF7701F808D),
        (1, 0x1F25C8D0BC1F4BB6, 0x9102786A712FF044),
        (3, 0x31D2363F52E564C9, 0xC6270EC97F034479),
        (4, 0x9BB64B7D66EE9FDA, 0x6A3181371BBC2026),
        (5, 0xC7608EFDDB7051FE, 0xF0941D6DD5FA78A1),
        (7, 0x9A7B149959CE60D8, 0x6E596C9EC41C4637),
        (8, 0xDAB99D95C6F90092, 0xBBCC4601A016B1E4),
        (9, 0x170BB6BF975B4C02, 0x9E4CF11F2D8AF8F4),
        (11, 0x7A52CC9457CF1A1F, 0x3B63308F3B0690E5),
        (12, 0xD52E407833AF5133, 0xB6D582ACCFE8C643),
        (15, 0x1B47CB8243CC8E32, 0x44AE2523B2890BB5),
        (16, 0x434850232B787BE2, 0x4C16BF1845AF5D67),
        (17, 0x1EFA7025F1B97A7A, 0x2F454BA934F38491),
        (31, 0xA2AA5F33CC4A6119, 0x8086BF60119A7308),
        (32, 0x23C3C17EF790FD97, 0x244C3905CF320C2D),
        (33, 0x50A7CFC7BA588784, 0x1EDC993457CF1FD8),
        (35, 0xA5B3456011D2913B, 0x88C604540F5454F2),
        (39, 0x880BBEEA606E4B37, 0xF3FA15CCABB4B368),
        (40, 0xB620306B253D76B6, 0xFDF06E94B31841E7),
        (47, 0xA7C5465CC5AD205E, 0xB8E9639AEC382569),
        (63, 0x5E3E54B431C7493C, 0x0E4A6A50D61E6220),
        (64, 0x0EB64B3EF6EEB01F, 0xEF589281222C0318),
        (65, 0xA383B724B2BD12F1, 0xE6A0CC169B8AA61A),
        (100, 0xA61F8D4C170FE531, 0xACB8A02891FEA7D2),
        (255, 0x39AE55A29989206F, 0xDD08FBF19AD65642),
    ]

    func testMatchesReferenceXXH64() {
        for (n, seed0, seed12345) in Self.vectors {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
            bytes.withUnsafeBytes { b in
                XCTAssertEqual(SQLHash.xxh64(b, seed: 0), seed0, "length \(n), seed 0")
                XCTAssertEqual(SQLHash.xxh64(b, seed: 12345), seed12345, "length \(n), seed 12345")
            }
        }
    }

    func testWellKnownStrings() {
        XCTAssertEqual(SQLHash.pattern(Array("abc".utf8)), 0x44BC2CF5AD770999)
        XCTAssertEqual(SQLHash.pattern(Array("The quick brown fox jumps over the lazy dog".utf8)), 0x0B242D361FDA71BC)
    }

    /// Pinned: these are queryids users see; a change here changes every queryid.
    func testPatternAndRawTextArePinned() {
        XCTAssertEqual(SQLHash.pattern(Array("select $1".utf8)), 0x6A62E61745838685)
        Array("select $1".utf8).withUnsafeBytes { b in
            XCTAssertEqual(SQLHash.pattern(b), 0x6A62E61745838685)
            XCTAssertEqual(SQLHash.rawText(b), 0x5FE9E3BB36C413CF, "the default raw-text seed")
            XCTAssertNotEqual(SQLHash.rawText(b), SQLHash.pattern(b))
            XCTAssertNotEqual(SQLHash.rawText(b, seed: 1), SQLHash.rawText(b))
        }
        [UInt8]().withUnsafeBytes { XCTAssertEqual(SQLHash.rawText($0), 0x45DBB5CB93A5F79D) }
    }

    /// The hash reads unaligned words: the same bytes at every offset of a buffer hash the same.
    func testUnalignedInput() {
        let text = Array("select * from pgbench_accounts where aid = $1".utf8)
        let expected = SQLHash.pattern(text)
        for offset in 0..<9 {
            let padded = [UInt8](repeating: 0xAA, count: offset) + text + [0xBB]
            padded.withUnsafeBytes { b in
                XCTAssertEqual(SQLHash.pattern(UnsafeRawBufferPointer(rebasing: b[offset..<(offset + text.count)])), expected,
                               "offset \(offset)")
            }
        }
    }

    /// Every single-bit change of a pattern changes its id, and ids of nearby texts spread over
    /// all bits (a crude avalanche check: no output bit is stuck).
    func testSmallChangesSpread() {
        var seen = Set<UInt64>()
        var orBits: UInt64 = 0
        var andBits: UInt64 = ~0
        for i in 0..<2000 {
            let h = SQLHash.pattern(Array("select $\(i)".utf8))
            seen.insert(h)
            orBits |= h
            andBits &= h
        }
        XCTAssertEqual(seen.count, 2000)
        XCTAssertEqual(orBits, ~0)
        XCTAssertEqual(andBits, 0)
    }
}
