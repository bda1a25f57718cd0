// A client's protocol-level prepared statements by name, with a memo of the last name a Bind
// looked up (transaction and statement mode, Prepared.swift).

/// Client statement name → StatementRegistry id. A Bind names its statement in raw message bytes;
/// looking those up in a `[String: Int32]` made a string and hashed it every time (about 450
/// instructions a Bind with the run-time exclusivity check of the class that holds the map).
/// `lookup` remembers the last name found, when it is at most 16 bytes (`s1`, `P_0`, JDBC's `S_1`),
/// and answers the same name again by comparing bytes. Every change of the map goes through this
/// type and forgets the memo, so the memo never names what the map no longer says. A class, held by
/// `ClientInfo.prepared` only once the client has a statement: an idle client pays one nil pointer.
final class ClientStatementNames {
    private(set) var map: [String: Int32] = [:]
    /// The remembered name's bytes (zero-padded, little-endian words), its length (-1: none) and id.
    private var memoLow: UInt64 = 0
    private var memoHigh: UInt64 = 0
    private var memoID: Int32 = 0
    private var memoLength: Int8 = -1

    init() {}

    subscript(name: String) -> Int32? {
        get { map[name] }
        set {
            memoLength = -1
            map[name] = newValue
        }
    }

    var isEmpty: Bool { map.isEmpty }
    var count: Int { map.count }
    var values: Dictionary<String, Int32>.Values { map.values }

    func removeValue(forKey name: String) {
        memoLength = -1
        map.removeValue(forKey: name)
    }

    func removeAll() {
        memoLength = -1
        map.removeAll()
    }

    /// The id of the statement named by `name` (message bytes, no NUL), nil when the client has none
    /// by that name.
    @inline(__always)
    func lookup(_ name: UnsafeRawBufferPointer) -> Int32? {
        let n = name.count
        guard n <= 16 else { return map[String(decoding: name, as: UTF8.self)] }
        var words: (UInt64, UInt64) = (0, 0)
        if n > 0 { withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: name) } }
        if Int(memoLength) == n && words.0 == memoLow && words.1 == memoHigh { return memoID }
        guard let id = map[String(decoding: name, as: UTF8.self)] else { return nil }
        memoLow = words.0
        memoHigh = words.1
        memoID = id
        memoLength = Int8(n)
        return id
    }
}
