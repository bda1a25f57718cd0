// Tests of SQLHash.shape: texts differing only in plain constants share a key, and a shared key
// always means a shared pattern (randomised over a token alphabet that includes what it refuses).
import XCTest
import Shared

final class SQLShapeTests: XCTestCase {
    private func shape(_ s: String) -> UInt64? { Array(s.utf8).withUnsafeBytes { SQLHash.shape($0) } }

    func testConstantsDoNotCount() {
        XCTAssertEqual(shape("select * from t where id = 1"), shape("select * from t where id = 12345"))
        XCTAssertEqual(shape("select * from t where a = 'x' and b = 1.5"), shape("select * from t where a = 'it''s long' and b = 1_000"))
        XCTAssertEqual(shape("update t1 set v = 'a' where id in (1, 2)"), shape("update t1 set v = '' where id in (30, 41)"))
        XCTAssertNotNil(shape("select 1"))
        // Comments' text does not count (sqlcommenter-style trace ids), their place does.
        XCTAssertEqual(shape("select 1 /* trace=ab12 */"), shape("select 7 /* trace=ff99, 'x' */"))
        XCTAssertEqual(shape("select 1 -- a\n"), shape("select 2 -- bcd\n"))
        XCTAssertEqual(shape("select /* a /* nested */ b */ 1"), shape("select /* c */ 1"))
        XCTAssertNotEqual(shape("a/**/b"), shape("ab"))
        // Quoted names count as written; what is inside them is no constant.
        XCTAssertEqual(shape("SELECT \"u\".\"id\" FROM \"u\" WHERE \"u\".\"id\" = 5"),
                       shape("SELECT \"u\".\"id\" FROM \"u\" WHERE \"u\".\"id\" = 77"))
        XCTAssertNotEqual(shape("select \"t1\""), shape("select \"t2\""))
        XCTAssertNotEqual(shape("select \"a'b\", 1"), shape("select \"a'c\", 1"))
    }

    func testStructureCounts() {
        XCTAssertNotEqual(shape("select * from t1"), shape("select * from t2"), "digits inside a word are the word")
        XCTAssertNotEqual(shape("select 1 in (1, 2)"), shape("select 1 in (1, 2, 3)"))
        XCTAssertNotEqual(shape("select 1"), shape("select  1"), "spacing counts")
        XCTAssertNotEqual(shape("select a from t"), shape("select b from t"))
        XCTAssertNotEqual(shape("select 1"), shape("select -1"))
    }

    func testWhatTheByteScanDoesNotReadIsRefused() {
        for text in ["select $1", "select /* open", "select /* a /* b */", "select \"A", "select U&\"a\"", "select E'a\\'b'", "select x'1F'",
                     "select N'a'", "select U&'a'", "select 1e5", "select 0x1F", "select 'open", "select $$a$$", "select 123abc", "select 1.2.3",
                     "select 1..2", "select .5.6", "select 1__0"] {
            XCTAssertNil(shape(text), text)
        }
    }

    /// Texts built from one template with different constants have one shape and one pattern; texts
    /// from different templates with the same shape have the same pattern.
    func testSameShapeMeansSamePattern() {
        var rng = SQLTestRandom("testSameShapeMeansSamePattern")
        let words = ["select", "from", "where", "and", "in", "t1", "x", "Y", "null", "true", "is", "not", "as", "limit"]
        let symbols = [" ", " ", "(", ")", ",", "=", "-", "+", "::", ".", ";", "*", "<", "'", "\n", "/* c */", "--x\n",
                       "/*a/*b*/c*/", "/", "-- ", "*/", "\"Q\"", "\"a\"\"b\"", "\"1\"", "\"x'--\"", "\""]
        var byShape: [UInt64: String] = [:]
        var n = SQLNormalizer()
        var compared = 0
        for _ in 0..<4000 {
            // A template: words, symbols and constant slots.
            var template: [String] = []
            for _ in 0..<Int.random(in: 1...14, using: &rng) {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0..<4: template.append(words.randomElement(using: &rng)!)
                case 4..<7: template.append(symbols.randomElement(using: &rng)!)
                case 7, 8: template.append("#N")
                default: template.append("#S")
                }
                if Bool.random(using: &rng) { template.append(" ") }
            }
            for _ in 0..<2 {
                let text = template.map { part -> String in
                    switch part {
                    case "#N": return ["0", "7", "42", "3.25", "1_000", ".5"].randomElement(using: &rng)!
                    case "#S": return ["'a'", "''", "'it''s'", "'select 1'", "'x y'"].randomElement(using: &rng)!
                    default: return part
                    }
                }.joined()
                guard let key = shape(text) else { continue }
                let pattern = sqlNormalize(text, &n)
                if let seen = byShape[key] {
                    XCTAssertEqual(sqlNormalize(seen, &n), pattern, "seed \(rng.seed): '\(seen)' and '\(text)' share a shape")
                    compared += 1
                } else {
                    byShape[key] = text
                }
            }
        }
        XCTAssertGreaterThan(compared, 500)
    }
}
