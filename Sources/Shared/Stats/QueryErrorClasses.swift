// A query pattern's errors by SQLSTATE class (issue 21): the first two characters of the code of each
// ErrorResponse that ended one of its statements. Recorded inline, without allocation.

/// One class's count, as reported (SHOW QUERIES' error_classes, pgswift_query_errors_total's class).
public struct QueryErrorClassCount: Equatable, Sendable {
    /// "22", "23", ...; "other" for the errors beyond the classes a pattern keeps.
    public var sqlClass: String
    public var count: UInt64
    public init(sqlClass: String, count: UInt64) { self.sqlClass = sqlClass; self.count = count }
}

/// Up to `slots` classes per pattern, each with its count; errors of further classes (and an
/// ErrorResponse without a code) count as "other". Fixed size: recording touches no heap.
public struct QueryErrorClasses: Equatable, Sendable {
    public static let slots = 6
    private var codes: (UInt16, UInt16, UInt16, UInt16, UInt16, UInt16) = (0, 0, 0, 0, 0, 0)
    private var counts: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0)
    public private(set) var other: UInt64 = 0

    public init() {}

    public static func == (a: QueryErrorClasses, b: QueryErrorClasses) -> Bool { a.list == b.list }

    /// An ErrorResponse's class (its 'C' field's first two bytes, big-endian in a UInt16); 0 when it
    /// has no code. Reads the fields in place.
    @inline(__always)
    public static func code(errorBody b: UnsafeRawBufferPointer) -> UInt16 {
        var i = 0
        let n = b.count
        while i < n {
            let field = b[i]
            if field == 0 { return 0 }
            i &+= 1
            if field == UInt8(ascii: "C") {
                guard i &+ 1 < n, b[i] != 0, b[i &+ 1] != 0 else { return 0 }
                return UInt16(b[i]) << 8 | UInt16(b[i &+ 1])
            }
            while i < n && b[i] != 0 { i &+= 1 }
            i &+= 1
        }
        return 0
    }

    /// One error of class `code` (0: unknown, counted as other).
    @inline(__always)
    public mutating func record(_ code: UInt16) {
        if code == 0 {
            other &+= 1
            return
        }
        let done: Bool = withUnsafeMutableBytes(of: &codes) { cb in
            withUnsafeMutableBytes(of: &counts) { nb in
                let c = cb.baseAddress!.assumingMemoryBound(to: UInt16.self)
                let k = nb.baseAddress!.assumingMemoryBound(to: UInt64.self)
                for s in 0..<QueryErrorClasses.slots {
                    if c[s] == code {
                        k[s] &+= 1
                        return true
                    }
                    if c[s] == 0 {
                        c[s] = code
                        k[s] = 1
                        return true
                    }
                }
                return false
            }
        }
        if !done { other &+= 1 }
    }

    /// The classes seen, most errors first (then by class), "other" last.
    public var list: [QueryErrorClassCount] {
        var out: [QueryErrorClassCount] = []
        var c = codes, k = counts
        withUnsafeBytes(of: &c) { cb in
            withUnsafeBytes(of: &k) { nb in
                for s in 0..<QueryErrorClasses.slots {
                    let code = cb.load(fromByteOffset: s * 2, as: UInt16.self)
                    if code == 0 { break }
                    let name = String(decoding: [UInt8(code >> 8), UInt8(code & 0xFF)], as: UTF8.self)
                    out.append(QueryErrorClassCount(sqlClass: name, count: nb.load(fromByteOffset: s * 8, as: UInt64.self)))
                }
            }
        }
        out.sort { $0.count != $1.count ? $0.count > $1.count : $0.sqlClass < $1.sqlClass }
        if other > 0 { out.append(QueryErrorClassCount(sqlClass: "other", count: other)) }
        return out
    }

    /// Adds `b` into `a` by class (merging workers' rows): the result keeps every class.
    public static func merged(_ a: [QueryErrorClassCount], _ b: [QueryErrorClassCount]) -> [QueryErrorClassCount] {
        var out = a
        for e in b {
            if let i = out.firstIndex(where: { $0.sqlClass == e.sqlClass }) {
                out[i].count &+= e.count
            } else {
                out.append(e)
            }
        }
        let other = out.filter { $0.sqlClass == "other" }
        out = out.filter { $0.sqlClass != "other" }
        out.sort { $0.count != $1.count ? $0.count > $1.count : $0.sqlClass < $1.sqlClass }
        return out + other
    }

    /// SHOW QUERIES' error_classes text: "22:40 23:1" (class:count, most first); "" without errors.
    public static func text(_ l: [QueryErrorClassCount]) -> String {
        l.map { "\($0.sqlClass):\($0.count)" }.joined(separator: " ")
    }
}
