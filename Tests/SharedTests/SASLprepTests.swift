// SASLprep (Shared/Auth/SASLprep.swift): RFC 4013's examples, PostgreSQL's fall-backs to the raw
// password, and a seeded comparison with an independent implementation built on Python's stringprep
// and unicodedata modules.
import Foundation
import XCTest
@testable import Shared

final class SASLprepTests: XCTestCase {
    private func prep(_ s: String) -> String {
        String(decoding: SASLprep.prepare(Array(s.utf8)), as: UTF8.self)
    }

    private func scalars(_ s: String) -> String {
        s.unicodeScalars.map { String($0.value, radix: 16) }.joined(separator: " ")
    }

    /// RFC 4013 section 3's examples; the two it refuses keep their raw bytes, as PostgreSQL uses them.
    func testRFC4013Examples() {
        XCTAssertEqual(prep("I\u{00AD}X"), "IX", "soft hyphen mapped to nothing")
        XCTAssertEqual(prep("user"), "user")
        XCTAssertEqual(prep("USER"), "USER", "no case folding")
        XCTAssertEqual(prep("\u{00AA}"), "a", "NFKC")
        XCTAssertEqual(prep("\u{2168}"), "IX", "NFKC")
        // RFC 4013 refuses U+0007; PostgreSQL passes any ASCII text unchanged first, so the example
        // takes a non-ASCII neighbour.
        XCTAssertNil(SASLprep.prepared(Array("\u{0007}\u{00E9}".utf8)), "prohibited character")
        XCTAssertEqual(SASLprep.prepare(Array("\u{0007}\u{00E9}".utf8)), Array("\u{0007}\u{00E9}".utf8))
        XCTAssertNil(SASLprep.prepared(Array("\u{0627}\u{0031}".utf8)), "bidi: RandAL not at both ends")
    }

    func testMappingAndNormalisation() {
        XCTAssertEqual(prep("pass\u{00A0}word\u{3000}!"), "pass word !", "non-ASCII spaces become U+0020")
        XCTAssertEqual(prep("\u{FF50}\u{FF41}\u{FF53}\u{FF53}"), "pass", "full-width letters")
        XCTAssertEqual(prep("\u{FB01}rst\u{00B2}"), "first2", "ligature and superscript")
        XCTAssertEqual(scalars(prep("cafe\u{0301}")), scalars("caf\u{00E9}"), "decomposed accent composed")
        XCTAssertEqual(scalars(prep("\u{00E9}t\u{00E9}")), scalars("\u{00E9}t\u{00E9}"), "NFC text unchanged")
        XCTAssertEqual(scalars(prep("a\u{0323}\u{0302}x")), scalars("\u{1EAD}x"), "marks reordered, then composed")
        XCTAssertEqual(scalars(prep("a\u{0302}\u{0323}x")), scalars("\u{1EAD}x"), "either order of the two marks")
        XCTAssertEqual(scalars(prep("\u{1100}\u{1161}\u{11A8}\u{AC00}")), scalars("\u{AC01}\u{AC00}"), "Hangul jamo composed")
        XCTAssertEqual(scalars(prep("\u{D4DB}")), scalars("\u{D4DB}"), "Hangul syllable kept")
        XCTAssertEqual(scalars(prep("\u{05D0}\u{05D1}")), scalars("\u{05D0}\u{05D1}"), "right-to-left at both ends")
    }

    /// Where pg_saslprep gives up, PostgreSQL (server and libpq alike) hashes the password as it is.
    func testFallsBackToTheRawPassword() {
        let raw: [[UInt8]] = [
            [0x70, 0xC3, 0x28],  // invalid UTF-8
            [0xED, 0xA0, 0x80],  // an encoded surrogate
            [0xC0, 0xAF],  // overlong
            Array("\u{00AD}\u{FEFF}".utf8),  // nothing left after mapping (U+200B would become a space)
            Array("caf\u{00E9}\u{0221}".utf8),  // U+0221 came with Unicode 4.0: unassigned in 3.2
            Array("pw\u{1F600}".utf8),  // emoji: unassigned in 3.2
            Array("pw\u{E000}".utf8),  // private use
            Array("\u{05D0}a\u{05D1}".utf8),  // right-to-left with a left-to-right letter
            Array("\u{05D0}1".utf8),  // right-to-left only at the start
        ]
        for bytes in raw {
            XCTAssertNil(SASLprep.prepared(bytes), "\(bytes)")
            XCTAssertEqual(SASLprep.prepare(bytes), bytes, "\(bytes)")
        }
        // ASCII, control characters included, is never touched (PostgreSQL's first test).
        XCTAssertEqual(SASLprep.prepare(Array("a\u{7}b".utf8)), Array("a\u{7}b".utf8))
    }

    /// Random strings over characters SASLprep treats differently, against a reference written on
    /// Python's own stringprep tables and NFKC. Seeded (`SQLTestRandom` prints the seed;
    /// PGSWIFT_TEST_SEED repeats a run).
    func testAgreesWithAPythonReference() throws {
        let python = ProcessInfo.processInfo.environment["PGSWIFT_PYTHON"] ?? "/usr/bin/python3"
        guard FileManager.default.isExecutableFile(atPath: python) else { throw XCTSkip("no \(python)") }
        var rng = SQLTestRandom("SASLprepTests")
        let seed = rng.seed
        let pool: [UInt32] = [
            0x61, 0x41, 0x31, 0x20, 0x7, 0xA0, 0xAD, 0xAA, 0xB2, 0xC5, 0xE9, 0x130, 0x1C4, 0x221, 0x300, 0x301, 0x302,
            0x308, 0x316, 0x323, 0x327, 0x345, 0x3A9, 0x3D2, 0x5D0, 0x5D1, 0x5B0, 0x627, 0x660, 0x6F0, 0x915, 0x93C,
            0x1100, 0x1161, 0x11A8, 0x1E0A, 0x1F80, 0x200B, 0x200D, 0x2126, 0x212B, 0x2168, 0x2474, 0x3000, 0x3099,
            0x304B, 0x30AB, 0xAC00, 0xD4DB, 0xE000, 0xF900, 0xFB01, 0xFE00, 0xFE5F, 0xFF21, 0xFF76, 0xFF9E, 0x1D15E,
            0x1D400, 0x1F600, 0x2F800, 0xE0001, 0x10FFFD,
        ]
        var inputs: [String] = []
        for _ in 0..<2000 {
            let n = Int(rng.next() % 6) + 1
            var s = String.UnicodeScalarView()
            for _ in 0..<n { s.append(Unicode.Scalar(pool[Int(rng.next() % UInt64(pool.count))])!) }
            inputs.append(String(s))
        }
        let script = """
            import stringprep as sp, sys, unicodedata as ud
            def prep(s):
                if all(ord(c) < 128 for c in s): return s
                m = "".join(" " if sp.in_table_c12(c) else ("" if sp.in_table_b1(c) else c) for c in s)
                if not m: return None
                bad = lambda c: (sp.in_table_c12(c) or sp.in_table_c21_c22(c) or sp.in_table_c3(c) or sp.in_table_c4(c)
                                 or sp.in_table_c5(c) or sp.in_table_c6(c) or sp.in_table_c7(c) or sp.in_table_c8(c)
                                 or sp.in_table_c9(c) or sp.in_table_a1(c))
                if any(bad(c) for c in m): return None
                if any(sp.in_table_d1(c) for c in m):
                    if any(sp.in_table_d2(c) for c in m): return None
                    if not (sp.in_table_d1(m[0]) and sp.in_table_d1(m[-1])): return None
                return ud.normalize("NFKC", m)
            for line in sys.stdin:
                r = prep(bytes.fromhex(line.strip()).decode("utf-8"))
                print("-" if r is None else r.encode("utf-8").hex())
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = ["-c", script]
        let stdin = Pipe(), stdout = Pipe()
        p.standardInput = stdin
        p.standardOutput = stdout
        try p.run()
        let request = inputs.map { Array($0.utf8).map { String(format: "%02x", $0) }.joined() }.joined(separator: "\n") + "\n"
        let writer = Thread { stdin.fileHandleForWriting.write(Data(request.utf8)); try? stdin.fileHandleForWriting.close() }
        writer.start()
        let answer = String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        // Later tests of this process count on free descriptor numbers (SystemTests' spawn shim test).
        for handle in [stdout.fileHandleForReading, stdout.fileHandleForWriting, stdin.fileHandleForReading] {
            try? handle.close()
        }
        XCTAssertEqual(p.terminationStatus, 0)
        let lines = answer.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, inputs.count)
        var mismatches = 0
        for (input, line) in zip(inputs, lines) {
            let ours = SASLprep.prepared(Array(input.utf8)).map { $0.map { String(format: "%02x", $0) }.joined() } ?? "-"
            if ours != line {
                mismatches += 1
                if mismatches <= 5 { XCTFail("seed \(seed): [\(scalars(input))]: pgswift \(ours), reference \(line)") }
            }
        }
        XCTAssertEqual(mismatches, 0, "seed \(seed)")
    }
}
