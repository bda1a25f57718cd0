// Per-pattern query statistics of one worker (issue 21): a bounded table keyed by (queryid, owner),
// with pg_stat_statements-style eviction; the snapshot a worker reports and the supervisor's merge.

/// A pattern's place in a `QueryStatsTable`: valid while the entry at `slot` still has generation `gen`
/// (an evicted entry's slot is reused with the next generation).
public struct QueryPatternRef: Equatable, Sendable {
    public var slot: Int32
    public var gen: UInt32
    public init(slot: Int32, gen: UInt32) { self.slot = slot; self.gen = gen }
    public static let none = QueryPatternRef(slot: -1, gen: 0)
    @inlinable public var isNone: Bool { slot < 0 }
}

/// A relation a pattern names and how (SQLRelationAccess' raw value: 1 read, 2 write, 3 both).
public struct QueryTableUse: Equatable, Sendable {
    public var name: String
    public var access: UInt8
    public init(name: String, access: UInt8) { self.name = name; self.access = access }
}

/// One pattern's figures.
public struct QueryPatternEntry: Sendable {
    public var queryid: UInt64 = 0
    public var owner: Int32 = -1
    public var gen: UInt32 = 0
    public var inUse = false
    public var calls: UInt64 = 0
    public var errors: UInt64 = 0
    /// The errors by SQLSTATE class (fixed size, inline).
    public var errorClasses = QueryErrorClasses()
    public var totalMicros: UInt64 = 0
    public var minMicros: UInt64 = .max
    public var maxMicros: UInt64 = 0
    public var rows: UInt64 = 0
    public var waitMicros: UInt64 = 0
    /// What eviction keeps: calls, decayed at every eviction round (pg_stat_statements' `usage`).
    public var usage: Float = 0
    public var histogram = QueryLatencyWindow()
    /// The normalized text, interned once when the pattern is first seen.
    public var text = ""
    public var tables: [QueryTableUse] = []
    public init() {}
}

/// Records behind a raw pointer, grown by doubling (moving them): element access is an address, with
/// no reference counting and no uniqueness check, which an `Array` inside a struct reached through a
/// pointer costs on every access (measured: about 400 instructions of retain/release per transaction
/// on the query-stats path). Never copied: its owner keeps the one instance for its life.
public struct RecordBuffer<Element> {
    public private(set) var base: UnsafeMutablePointer<Element>
    public private(set) var count = 0
    public private(set) var capacity: Int

    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        base = .allocate(capacity: self.capacity)
    }

    public init(repeating v: Element, count n: Int) {
        self.init(capacity: n)
        base.initialize(repeating: v, count: n)
        count = n
    }

    @inlinable
    public subscript(i: Int) -> Element {
        unsafeAddress { UnsafePointer(base + i) }
        nonmutating unsafeMutableAddress { base + i }
    }

    public var indices: Range<Int> { 0..<count }

    public mutating func append(_ e: Element) {
        if count == capacity { reserve(capacity * 2) }
        (base + count).initialize(to: e)
        count += 1
    }

    /// Grows to `n` records of room (never shrinks).
    public mutating func reserve(_ n: Int) {
        guard n > capacity else { return }
        let new = UnsafeMutablePointer<Element>.allocate(capacity: n)
        new.moveInitialize(from: base, count: count)
        base.deallocate()
        base = new
        capacity = n
    }

    /// Appends copies of `v` until `n` records are initialized.
    public mutating func extend(to n: Int, with v: Element) {
        guard n > count else { return }
        reserve(max(n, capacity * 2))
        (base + count).initialize(repeating: v, count: n - count)
        count = n
    }

    public mutating func removeAll() {
        base.deinitialize(count: count)
        count = 0
    }

    /// Gives the memory back (the owner is done with it).
    public mutating func free() {
        removeAll()
        base.deallocate()
        capacity = 0
    }
}

/// The table: at most `capacity` patterns; a pattern found by an open-addressing index (linear probing,
/// deletion by backward shift: no tombstones). When full, an insert evicts the least used 5 % (at least
/// one) as pg_stat_statements does, and decays everyone's usage, so patterns that stop being called
/// make room for new ones and a burst of one-off patterns evicts mostly itself. Recording touches one
/// entry and allocates nothing; only inserting a new pattern allocates (its text and tables). The
/// entries grow by doubling up to `capacity`, never past it.
public struct QueryStatsTable {
    public private(set) var capacity: Int
    public private(set) var entries: RecordBuffer<QueryPatternEntry>
    var freeSlots: [Int32] = []
    /// Slot per index position, -1 empty; a power of two at least twice the capacity.
    var index: RecordBuffer<Int32>
    var mask: Int
    public private(set) var liveCount = 0
    /// Patterns evicted since start (not reset by RESET QUERIES: a Prometheus counter).
    public private(set) var evicted: UInt64 = 0
    /// (database, user) of each owner id.
    public private(set) var owners: [(database: String, user: String)] = []
    var ownerIDs: [String: Int32] = [:]

    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        let n = QueryStatsTable.indexSize(for: self.capacity)
        index = RecordBuffer(repeating: -1, count: n)
        mask = n - 1
        entries = RecordBuffer(capacity: min(self.capacity, 64))
    }

    static func indexSize(for capacity: Int) -> Int {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        return n
    }

    /// The id of a (database, user): interned once, kept for the table's life.
    public mutating func owner(database: String, user: String) -> Int32 {
        let key = database + "\u{0}" + user
        if let id = ownerIDs[key] { return id }
        let id = Int32(owners.count)
        owners.append((database, user))
        ownerIDs[key] = id
        return id
    }

    @inline(__always)
    static func hash(_ queryid: UInt64, _ owner: Int32) -> UInt64 {
        var h = queryid ^ (UInt64(UInt32(bitPattern: owner)) &* 0x9E37_79B9_7F4A_7C15)
        h ^= h >> 29
        h &*= 0xBF58_476D_1CE4_E5B9
        h ^= h >> 32
        return h
    }

    @inline(__always)
    public func isValid(_ ref: QueryPatternRef) -> Bool {
        ref.slot >= 0 && Int(ref.slot) < entries.count && entries[Int(ref.slot)].gen == ref.gen && entries[Int(ref.slot)].inUse
    }

    public func find(queryid: UInt64, owner: Int32) -> QueryPatternRef? {
        var i = Int(truncatingIfNeeded: QueryStatsTable.hash(queryid, owner)) & mask
        while true {
            let s = index[i]
            if s < 0 { return nil }
            if entries[Int(s)].queryid == queryid && entries[Int(s)].owner == owner {
                return QueryPatternRef(slot: s, gen: entries[Int(s)].gen)
            }
            i = (i + 1) & mask
        }
    }

    /// Finds the pattern, or adds it (evicting first when full); `make` gives the text and tables of a
    /// new one.
    public mutating func findOrInsert(queryid: UInt64, owner: Int32,
                                      _ make: () -> (text: String, tables: [QueryTableUse])) -> QueryPatternRef {
        if let r = find(queryid: queryid, owner: owner) { return r }
        if liveCount >= capacity { evict() }
        let slot: Int32
        if let s = freeSlots.popLast() {
            slot = s
        } else {
            slot = Int32(entries.count)
            if entries.count == entries.capacity { entries.reserve(min(capacity, entries.capacity * 2)) }
            entries.append(QueryPatternEntry())
        }
        let made = make()
        let gen = entries[Int(slot)].gen &+ 1
        entries[Int(slot)] = QueryPatternEntry()
        entries[Int(slot)].queryid = queryid
        entries[Int(slot)].owner = owner
        entries[Int(slot)].gen = gen
        entries[Int(slot)].inUse = true
        entries[Int(slot)].text = QueryStatsTable.clipped(made.text)
        entries[Int(slot)].tables = made.tables
        var i = Int(truncatingIfNeeded: QueryStatsTable.hash(queryid, owner)) & mask
        while index[i] >= 0 { i = (i + 1) & mask }
        index[i] = slot
        liveCount += 1
        return QueryPatternRef(slot: slot, gen: gen)
    }

    /// One statement of the pattern ended after `micros`; `error`: with an ErrorResponse, whose
    /// SQLSTATE class is `errorClass` (`QueryErrorClasses.code`; 0 unknown).
    @inline(__always)
    public func record(_ ref: QueryPatternRef, micros: UInt64, rows: UInt64, error: Bool, waitMicros: UInt64,
                       errorClass: UInt16 = 0) {
        let e = entries.base + Int(ref.slot)
        e.pointee.calls &+= 1
        if error {
            e.pointee.errors &+= 1
            e.pointee.errorClasses.record(errorClass)
        }
        e.pointee.totalMicros &+= micros
        if micros < e.pointee.minMicros { e.pointee.minMicros = micros }
        if micros > e.pointee.maxMicros { e.pointee.maxMicros = micros }
        e.pointee.rows &+= rows
        e.pointee.waitMicros &+= waitMicros
        e.pointee.usage += 1
        e.pointee.histogram.record(micros: micros)
    }

    /// Removes the least used 5 % (at least one), then decays the others' usage.
    mutating func evict() {
        var live: [(usage: Float, slot: Int32)] = []
        live.reserveCapacity(liveCount)
        for i in entries.indices where entries[i].inUse { live.append((entries[i].usage, Int32(i))) }
        live.sort { $0.usage < $1.usage || ($0.usage == $1.usage && $0.slot < $1.slot) }
        let n = max(1, min(live.count, capacity / 20))
        for k in 0..<n { remove(live[k].slot) }
        evicted &+= UInt64(n)
        for i in entries.indices where entries[i].inUse { entries[i].usage *= 0.99 }
    }

    mutating func remove(_ slot: Int32) {
        let queryid = entries[Int(slot)].queryid, owner = entries[Int(slot)].owner
        var i = Int(truncatingIfNeeded: QueryStatsTable.hash(queryid, owner)) & mask
        while index[i] != slot { i = (i + 1) & mask }
        // Backward shift: move later members of the run into the hole when their home allows it.
        var hole = i
        var j = i
        while true {
            j = (j + 1) & mask
            let s = index[j]
            if s < 0 { break }
            let home = Int(truncatingIfNeeded: QueryStatsTable.hash(entries[Int(s)].queryid, entries[Int(s)].owner)) & mask
            // Does `home` lie cyclically in (hole, j]? Then the entry must stay.
            let stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j)
            if stays { continue }
            index[hole] = s
            hole = j
        }
        index[hole] = -1
        let gen = entries[Int(slot)].gen
        entries[Int(slot)] = QueryPatternEntry()
        entries[Int(slot)].gen = gen
        freeSlots.append(slot)
        liveCount -= 1
    }

    /// RESET QUERIES: every pattern goes (the eviction count stays).
    public mutating func reset() {
        for i in entries.indices where entries[i].inUse {
            let gen = entries[i].gen
            entries[i] = QueryPatternEntry()
            entries[i].gen = gen
        }
        freeSlots = (0..<Int32(entries.count)).reversed().map { $0 }
        for i in index.indices { index[i] = -1 }
        liveCount = 0
    }

    /// A new bound (RELOAD, SET): lowering it evicts down to it at once.
    public mutating func setCapacity(_ c: Int) {
        let c = max(1, c)
        if c == capacity { return }
        var kept: [QueryPatternEntry] = []
        var nextGen: UInt32 = 0
        for i in entries.indices {
            nextGen = max(nextGen, entries[i].gen)
            if entries[i].inUse { kept.append(entries[i]) }
        }
        nextGen &+= 1
        capacity = c
        let n = QueryStatsTable.indexSize(for: c)
        index.free()
        index = RecordBuffer(repeating: -1, count: n)
        mask = n - 1
        // Keep the most used; generations move on so that old refs die.
        kept.sort { $0.usage > $1.usage }
        let keep = kept.prefix(c)
        evicted &+= UInt64(kept.count - keep.count)
        entries.free()
        entries = RecordBuffer(capacity: min(c, max(64, keep.count)))
        freeSlots = []
        liveCount = 0
        for var e in keep {
            e.gen = nextGen
            nextGen &+= 1
            let slot = Int32(entries.count)
            if entries.count == entries.capacity { entries.reserve(min(capacity, entries.capacity * 2)) }
            entries.append(e)
            var i = Int(truncatingIfNeeded: QueryStatsTable.hash(e.queryid, e.owner)) & mask
            while index[i] >= 0 { i = (i + 1) & mask }
            index[i] = slot
            liveCount += 1
        }
    }

    /// Pattern texts kept (bytes, cut at a character boundary): SHOW QUERIES shows a long statement's
    /// beginning, and a worker's report stays bounded.
    public static let maxTextBytes = 2048

    static func clipped(_ text: String) -> String {
        guard text.utf8.count > maxTextBytes else { return text }
        var end = text.utf8.index(text.utf8.startIndex, offsetBy: maxTextBytes)
        while end > text.utf8.startIndex && !text.unicodeScalars.indices.contains(end) { end = text.utf8.index(before: end) }
        return String(text[..<end])
    }

    /// The patterns called at least once, as reported to the supervisor: the busiest by total time,
    /// at most `limit` and about `maxBytes` (well under the supervisor's 16 MiB bound for a blob).
    public func snapshot(limit: Int = 20_000, maxBytes: Int = 8 << 20) -> QueryStatsSnapshot {
        var s = QueryStatsSnapshot()
        s.evicted = evicted
        s.patterns = Int64(liveCount)
        var called = entries.indices.filter { entries[$0].inUse && entries[$0].calls > 0 }
        called.sort { entries[$0].totalMicros > entries[$1].totalMicros }
        var bytes = 0
        for i in called.prefix(limit) {
            let e = entries[i]
            bytes += 96 + e.text.utf8.count + e.tables.reduce(0) { $0 + 2 + $1.name.utf8.count }
            if bytes > maxBytes && !s.rows.isEmpty { break }
            let o = owners[Int(e.owner)]
            s.rows.append(QueryPatternRow(database: o.database, user: o.user, queryid: e.queryid, text: e.text,
                                          calls: e.calls, errors: e.errors, totalMicros: e.totalMicros,
                                          minMicros: e.minMicros, maxMicros: e.maxMicros, rows: e.rows,
                                          waitMicros: e.waitMicros, tables: e.tables, histogram: e.histogram.sparse,
                                          errorClasses: e.errorClasses.list))
        }
        return s
    }
}

/// One pattern of one (database, user) as reported (and, merged, shown by SHOW QUERIES).
public struct QueryPatternRow: Equatable, Sendable {
    public var database: String
    public var user: String
    public var queryid: UInt64
    public var text: String
    public var calls: UInt64
    public var errors: UInt64
    public var totalMicros: UInt64
    public var minMicros: UInt64
    public var maxMicros: UInt64
    public var rows: UInt64
    public var waitMicros: UInt64
    public var tables: [QueryTableUse]
    public var histogram: QueryLatencyHistogram
    /// The errors by SQLSTATE class, most first ("other" last).
    public var errorClasses: [QueryErrorClassCount]

    public init(database: String, user: String, queryid: UInt64, text: String, calls: UInt64, errors: UInt64,
                totalMicros: UInt64, minMicros: UInt64, maxMicros: UInt64, rows: UInt64, waitMicros: UInt64,
                tables: [QueryTableUse], histogram: QueryLatencyHistogram, errorClasses: [QueryErrorClassCount] = []) {
        self.database = database; self.user = user; self.queryid = queryid; self.text = text
        self.calls = calls; self.errors = errors; self.totalMicros = totalMicros; self.minMicros = minMicros
        self.maxMicros = maxMicros; self.rows = rows; self.waitMicros = waitMicros; self.tables = tables
        self.histogram = histogram
        self.errorClasses = errorClasses
    }

    public var meanMicros: UInt64 { calls == 0 ? 0 : totalMicros / calls }

    /// A percentile, clamped to the recorded minimum and maximum (so p100 is exact).
    public func percentile(_ q: Double) -> UInt64 {
        if q >= 1 { return maxMicros }
        let v = histogram.percentile(q)
        return min(max(v, minMicros == .max ? 0 : minMicros), maxMicros)
    }

    /// Adds another worker's figures of the same key.
    public mutating func merge(_ o: QueryPatternRow) {
        calls &+= o.calls
        errors &+= o.errors
        totalMicros &+= o.totalMicros
        minMicros = min(minMicros, o.minMicros)
        maxMicros = max(maxMicros, o.maxMicros)
        rows &+= o.rows
        waitMicros &+= o.waitMicros
        histogram.merge(o.histogram)
        if !o.errorClasses.isEmpty { errorClasses = QueryErrorClasses.merged(errorClasses, o.errorClasses) }
        for t in o.tables { tables.fold(t, by: \.name) { $0.access |= $1.access } }
    }
}

extension QueryPatternRow: CompactRecord {
    func encode(into w: inout MessageWriter) {
        w.compactString(database)
        w.compactString(user)
        w.varint(queryid)
        w.compactString(text)
        for v in [calls, errors, totalMicros, minMicros, maxMicros, rows, waitMicros] { w.varint(v) }
        w.compactArray(tables)
        w.queryHistogram(histogram)
        w.compactArray(errorClasses)
    }

    /// A row as `QueryStatsSnapshot` `version` wrote it (version 2 had no error classes).
    static func decode(_ r: inout StatsReader, version: UInt8) throws(StatsDecodeError) -> QueryPatternRow {
        let db = try r.compactString("database")
        let user = try r.compactString("user")
        let queryid = try r.varint("queryid")
        let text = try r.compactString("query")
        var f: [UInt64] = []
        for _ in 0..<7 { f.append(try r.varint("pattern counter")) }
        let tables = try r.compactArray("table count", minimumEach: 2) { r throws(StatsDecodeError) in
            QueryTableUse(name: try r.compactString("table"), access: try r.u8("access"))
        }
        let h = try r.queryHistogram("pattern histogram")
        let classes = version == 2 ? [] : try r.compactArray("error class count", minimumEach: 2) { r throws(StatsDecodeError) in
            QueryErrorClassCount(sqlClass: try r.compactString("error class"), count: try r.varint("error count"))
        }
        return QueryPatternRow(database: db, user: user, queryid: queryid, text: text, calls: f[0], errors: f[1],
                               totalMicros: f[2], minMicros: f[3], maxMicros: f[4], rows: f[5], waitMicros: f[6],
                               tables: tables, histogram: h, errorClasses: classes)
    }
}

extension QueryTableUse: CompactRecord {
    func encode(into w: inout MessageWriter) {
        w.compactString(name)
        w.u8(access)
    }
}

extension QueryErrorClassCount: CompactRecord {
    func encode(into w: inout MessageWriter) {
        w.compactString(sqlClass)
        w.varint(count)
    }
}

/// What a worker reports when asked (SHOW QUERIES, SHOW TABLES, /metrics).
public struct QueryStatsSnapshot: Equatable, Sendable {
    public var evicted: UInt64 = 0
    /// Statements not counted: too large to read (over 32 KiB), or their pattern was evicted meanwhile.
    public var untracked: UInt64 = 0
    /// Patterns held (called or not yet).
    public var patterns: Int64 = 0
    public var rows: [QueryPatternRow] = []
    public init() {}

    static let magic: UInt8 = 0x51  // "Q"
    static let version: UInt8 = 3

    public func encode() -> [UInt8] {
        var w = MessageWriter(capacity: 64 + rows.count * 160)
        w.u8(Self.magic)
        w.u8(Self.version)
        w.varint(evicted)
        w.varint(untracked)
        w.signed(patterns)
        w.compactArray(rows)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(StatsDecodeError) -> QueryStatsSnapshot {
        try StatsReader.reading(bytes) { r throws(StatsDecodeError) in
            guard try r.u8("magic") == magic else { throw StatsDecodeError("not a query stats snapshot") }
            let v = try r.u8("version")
            // Version 2 (before error classes) is still read: a worker of the previous build during an upgrade.
            guard v == version || v == 2 else { throw StatsDecodeError("query stats version \(v), expected \(version)") }
            var s = QueryStatsSnapshot()
            s.evicted = try r.varint("evicted")
            s.untracked = try r.varint("untracked")
            s.patterns = try r.signed("patterns")
            s.rows = try r.compactArray("pattern count", minimumEach: 14) { r throws(StatsDecodeError) in
                try QueryPatternRow.decode(&r, version: v)
            }
            try r.expectEnd("query stats")
            return s
        }
    }
}

/// SHOW QUERIES / SHOW TABLES over every worker: rows with the same (database, user, queryid) merged.
public struct MergedQueryStats: Sendable {
    public var rows: [QueryPatternRow] = []
    public var evicted: UInt64 = 0
    public var untracked: UInt64 = 0
    public var patterns: Int64 = 0

    public init() {}

    public static func merge(_ snaps: [QueryStatsSnapshot]) -> MergedQueryStats {
        struct Key: Hashable { var db: String; var user: String; var id: UInt64 }
        var m = MergedQueryStats()
        var at: [Key: Int] = [:]
        for s in snaps {
            m.evicted &+= s.evicted
            m.untracked &+= s.untracked
            m.patterns &+= s.patterns
            for r in s.rows {
                let k = Key(db: r.database, user: r.user, id: r.queryid)
                if let i = at[k] {
                    m.rows[i].merge(r)
                } else {
                    at[k] = m.rows.count
                    m.rows.append(r)
                }
            }
        }
        // By total time, most first; ties in a fixed order.
        m.rows.sort { a, b in
            if a.totalMicros != b.totalMicros { return a.totalMicros > b.totalMicros }
            if a.database != b.database { return a.database < b.database }
            if a.user != b.user { return a.user < b.user }
            return a.queryid < b.queryid
        }
        return m
    }

    /// One row per (database, relation): calls and time of the patterns naming it, reads and writes
    /// the calls of those that read or write it. Sorted by total time.
    public func tables() -> [(database: String, table: String, calls: UInt64, totalMicros: UInt64, reads: UInt64, writes: UInt64)] {
        struct Key: Hashable { var db: String; var table: String }
        var out: [(database: String, table: String, calls: UInt64, totalMicros: UInt64, reads: UInt64, writes: UInt64)] = []
        var at: [Key: Int] = [:]
        for r in rows {
            for t in r.tables {
                let k = Key(db: r.database, table: t.name)
                let i: Int
                if let j = at[k] {
                    i = j
                } else {
                    i = out.count
                    at[k] = i
                    out.append((r.database, t.name, 0, 0, 0, 0))
                }
                out[i].calls &+= r.calls
                out[i].totalMicros &+= r.totalMicros
                if t.access & 1 != 0 { out[i].reads &+= r.calls }
                if t.access & 2 != 0 { out[i].writes &+= r.calls }
            }
        }
        out.sort { a, b in
            if a.totalMicros != b.totalMicros { return a.totalMicros > b.totalMicros }
            if a.database != b.database { return a.database < b.database }
            return a.table < b.table
        }
        return out
    }
}
