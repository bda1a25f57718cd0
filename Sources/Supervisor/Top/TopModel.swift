// `pgswift top`'s pure parts: what SHOW POOLS and SHOW QUERIES say, the difference of two SHOW
// QUERIES (the last interval), and the screen's lines for a given terminal size.

/// Calls, execution time and errors: a pattern's totals since start or RESET QUERIES, or one interval's.
struct TopFigures: Equatable {
    var calls: UInt64
    var execMicros: UInt64
    var errors: UInt64

    /// What was added since `earlier`; nil where a counter went down (RESET QUERIES, or the pattern
    /// evicted and seen again).
    func since(_ earlier: TopFigures) -> TopFigures? {
        guard earlier.calls <= calls, earlier.execMicros <= execMicros, earlier.errors <= errors else { return nil }
        return TopFigures(calls: calls - earlier.calls, execMicros: execMicros - earlier.execMicros,
                          errors: errors - earlier.errors)
    }
}

/// One pattern as SHOW QUERIES shows it.
struct TopPatternSample: Equatable {
    var database: String
    var user: String
    var queryid: String
    var query: String
    var totals: TopFigures
    var p99Micros: UInt64

    var key: String { database + "\u{0}" + user + "\u{0}" + queryid }
}

/// One pattern's figures over the last interval.
struct TopPatternDelta: Equatable {
    var sample: TopPatternSample
    var interval: TopFigures
}

/// One pool as SHOW POOLS shows it.
struct TopPool: Equatable {
    var database: String
    var user: String
    var clientsActive: Int
    var clientsWaiting: Int
    var serversActive: Int
    var serversIdle: Int
    var serversUsed: Int
    var serversLogin: Int
    var maxWaitMicros: Int64
    var mode: String
}

/// One refresh: what the screen shows.
struct TopFrame: Equatable {
    var title: String
    var clock: String
    var intervalSeconds: Double
    var pools: [TopPool]
    var patterns: [TopPatternDelta]
    /// Patterns SHOW QUERIES holds in all.
    var patternCount: Int
    /// No earlier sample: the figures are totals, not an interval's.
    var firstSample: Bool
    var message: String? = nil
}

enum TopModel {
    /// SHOW QUERIES' rows as samples (rows missing a column are skipped).
    static func patterns(_ r: AdminResultSet) -> [TopPatternSample] {
        r.rows.compactMap { row in
            guard let db = r.value(row, "database"), let user = r.value(row, "user"),
                  let id = r.value(row, "queryid"), let calls = r.value(row, "calls").flatMap({ UInt64($0) }),
                  let total = r.value(row, "total_exec_us").flatMap({ UInt64($0) }) else { return nil }
            return TopPatternSample(database: db, user: user, queryid: id, query: r.value(row, "query") ?? "",
                                    totals: TopFigures(calls: calls, execMicros: total,
                                                       errors: r.value(row, "errors").flatMap { UInt64($0) } ?? 0),
                                    p99Micros: r.value(row, "p99_us").flatMap { UInt64($0) } ?? 0)
        }
    }

    /// SHOW POOLS' rows.
    static func pools(_ r: AdminResultSet) -> [TopPool] {
        func int(_ row: [String?], _ name: String) -> Int { r.value(row, name).flatMap { Int($0) } ?? 0 }
        return r.rows.compactMap { row in
            guard let db = r.value(row, "database"), let user = r.value(row, "user") else { return nil }
            return TopPool(database: db, user: user, clientsActive: int(row, "cl_active"),
                           clientsWaiting: int(row, "cl_waiting"), serversActive: int(row, "sv_active"),
                           serversIdle: int(row, "sv_idle"), serversUsed: int(row, "sv_used"),
                           serversLogin: int(row, "sv_login"),
                           maxWaitMicros: Int64(int(row, "maxwait")) * 1_000_000 + Int64(int(row, "maxwait_us")),
                           mode: r.value(row, "pool_mode") ?? "")
        }
    }

    /// The last interval: each pattern's calls, time and errors since `previous`, the busiest (by time)
    /// first; patterns not called in the interval are left out. A pattern whose counters went down
    /// (RESET QUERIES, or evicted and seen again) counts from zero.
    static func diff(previous: [TopPatternSample], current: [TopPatternSample]) -> [TopPatternDelta] {
        var before: [String: TopPatternSample] = [:]
        for p in previous { before[p.key] = p }
        var out: [TopPatternDelta] = []
        for c in current {
            let d = TopPatternDelta(sample: c, interval: before[c.key].flatMap { c.totals.since($0.totals) } ?? c.totals)
            if d.interval.calls > 0 || d.interval.errors > 0 { out.append(d) }
        }
        out.sort { a, b in
            if a.interval.execMicros != b.interval.execMicros { return a.interval.execMicros > b.interval.execMicros }
            if a.interval.calls != b.interval.calls { return a.interval.calls > b.interval.calls }
            return a.sample.key < b.sample.key
        }
        return out
    }

    // MARK: Layout

    /// "1.2ms", "850us", "3.40s": short durations for narrow columns.
    static func duration(_ micros: UInt64) -> String {
        if micros < 1000 { return "\(micros)us" }
        if micros < 1_000_000 { return fixed(Double(micros) / 1000, 1) + "ms" }
        return fixed(Double(micros) / 1_000_000, 2) + "s"
    }

    static func fixed(_ v: Double, _ places: Int) -> String {
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let t = Int64((v * scale).rounded())
        let whole = t / Int64(scale), frac = t % Int64(scale)
        if places == 0 { return "\(whole)" }
        var f = "\(frac)"
        while f.count < places { f = "0" + f }
        return "\(whole).\(f)"
    }

    /// A line cut or padded to `width` characters.
    static func fit(_ s: String, _ width: Int) -> String {
        guard width > 0 else { return "" }
        if s.count > width { return String(s.prefix(width)) }
        return s
    }

    static func right(_ s: String, _ w: Int) -> String { s.count >= w ? s : String(repeating: " ", count: w - s.count) + s }
    static func left(_ s: String, _ w: Int) -> String {
        s.count > w ? String(s.prefix(w)) : s + String(repeating: " ", count: w - s.count)
    }

    /// The screen for `width` × `height` characters: a header, the pools (at most a third of the
    /// rows, the ones with waiting clients first), the busiest patterns of the interval in what is left,
    /// and a footer. Every line fits in `width`; there are at most `height` lines (exactly `height` with
    /// `fill`, blank lines before the footer; without, as many as there is to show).
    static func render(_ f: TopFrame, width: Int, height: Int, fill: Bool = true) -> [String] {
        let width = max(20, width), height = max(8, height)
        var lines: [String] = []
        let calls = f.patterns.reduce(UInt64(0)) { $0 + $1.interval.calls }
        let errors = f.patterns.reduce(UInt64(0)) { $0 + $1.interval.errors }
        let secs = max(f.intervalSeconds, 0.001)
        let waiting = f.pools.reduce(0) { $0 + $1.clientsWaiting }
        let active = f.pools.reduce(0) { $0 + $1.clientsActive }
        lines.append("pgswift top - \(f.title)  \(f.clock)")
        if f.firstSample {
            lines.append("pools: \(f.pools.count)  clients active \(active) waiting \(waiting)  patterns: \(f.patternCount)  (totals; intervals from the next refresh)")
        } else {
            lines.append("pools: \(f.pools.count)  clients active \(active) waiting \(waiting)  patterns: \(f.patternCount)  "
                         + "calls/s \(fixed(Double(calls) / secs, 1))  errors/s \(fixed(Double(errors) / secs, 1))  "
                         + "interval \(fixed(f.intervalSeconds, 1))s")
        }
        lines.append(f.message ?? "")
        // Pools: fixed columns, the name takes what is left.
        let poolCols = "  cl_act  cl_wait  sv_act  sv_idle  sv_used  sv_login  maxwait  mode"
        let nameW = max(12, min(40, width - poolCols.count))
        lines.append(left("POOL (database/user)", nameW) + poolCols)
        let pools = f.pools.sorted { a, b in
            if a.clientsWaiting != b.clientsWaiting { return a.clientsWaiting > b.clientsWaiting }
            if a.clientsActive != b.clientsActive { return a.clientsActive > b.clientsActive }
            return (a.database, a.user) < (b.database, b.user)
        }
        let poolRoom = max(1, (height - 8) / 3)
        for (k, p) in pools.enumerated() {
            if k == poolRoom - 1 && pools.count > poolRoom {
                lines.append("  ... \(pools.count - k) more pools")
                break
            }
            lines.append(left(p.database + "/" + p.user, nameW)
                         + right("\(p.clientsActive)", 8) + right("\(p.clientsWaiting)", 9) + right("\(p.serversActive)", 8)
                         + right("\(p.serversIdle)", 9) + right("\(p.serversUsed)", 9) + right("\(p.serversLogin)", 10)
                         + right(duration(UInt64(max(0, p.maxWaitMicros))), 9) + "  " + p.mode)
        }
        if pools.isEmpty { lines.append("  (no pools)") }
        lines.append("")
        // Patterns: calls, time and errors in the interval; p99 since start or RESET QUERIES.
        lines.append(right("calls", 8) + right("time", 8) + right("time%", 7) + right("avg", 7) + right("p99", 8)
                     + right("errors", 8) + "  " + "DB/USER  QUERY")
        let total = max(1, f.patterns.reduce(UInt64(0)) { $0 + $1.interval.execMicros })
        let room = height - lines.count - 1
        if f.patterns.isEmpty { lines.append("  (no statements in this interval)") }
        for p in f.patterns.prefix(max(0, room)) {
            let i = p.interval
            let avg = i.calls == 0 ? 0 : i.execMicros / i.calls
            let pct = fixed(Double(i.execMicros) * 100 / Double(total), 1)
            let text = p.sample.query.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
            lines.append(right("\(i.calls)", 8) + right(duration(i.execMicros), 8) + right(pct, 7)
                         + right(duration(avg), 7) + right(duration(p.sample.p99Micros), 8) + right("\(i.errors)", 8)
                         + "  " + p.sample.database + "/" + p.sample.user + "  " + text)
        }
        while fill && lines.count < height - 1 { lines.append("") }
        lines = Array(lines.prefix(height - 1))
        lines.append("q: quit   (time, calls, errors: the last interval; p99: since start or RESET QUERIES)")
        return lines.map { fit($0, width) }
    }

    /// The frame as terminal output: cursor home, each line cleared to its end, the rest of the screen
    /// cleared. Plain ANSI escapes.
    static func ansi(_ lines: [String]) -> String {
        var s = "\u{1B}[H"
        for (i, l) in lines.enumerated() {
            s += l + "\u{1B}[K"
            if i < lines.count - 1 { s += "\r\n" }
        }
        return s + "\u{1B}[J"
    }
}
