// Tests of the stats model: histogram buckets, counters and averages, snapshot codec, chunking, merging.
import XCTest
import Shared

final class StatsHistogramTests: XCTestCase {
    func testBucketBoundaries() {
        XCTAssertEqual(LatencyHistogram.bucketIndex(micros: 0), 0)
        XCTAssertEqual(LatencyHistogram.bucketIndex(micros: 16), 0)
        XCTAssertEqual(LatencyHistogram.bucketIndex(micros: 17), 1)
        XCTAssertEqual(LatencyHistogram.bucketIndex(micros: 32), 1)
        XCTAssertEqual(LatencyHistogram.bucketIndex(micros: 33), 2)
        XCTAssertEqual(LatencyHistogram.bucketIndex(micros: 1 << 27), 23)
        XCTAssertEqual(LatencyHistogram.bucketIndex(micros: (1 << 27) + 1), 24)
        XCTAssertEqual(LatencyHistogram.bucketIndex(micros: .max), 24)
        // Every value lands in the bucket whose bounds contain it.
        for v: UInt64 in [1, 15, 16, 17, 100, 1000, 65_536, 65_537, 1_000_000, 134_217_728] {
            let i = LatencyHistogram.bucketIndex(micros: v)
            if let upper = LatencyHistogram.upperBoundMicros(i) { XCTAssertLessThanOrEqual(v, upper, "\(v)") }
            if i > 0, let lower = LatencyHistogram.upperBoundMicros(i - 1) { XCTAssertGreaterThan(v, lower, "\(v)") }
        }
        XCTAssertEqual(LatencyHistogram.upperBoundMicros(0), 16)
        XCTAssertEqual(LatencyHistogram.upperBoundMicros(23), 1 << 27)
        XCTAssertNil(LatencyHistogram.upperBoundMicros(24))
    }

    func testRecordMergeCumulative() {
        var a = LatencyHistogram()
        a.record(micros: 10)
        a.record(micros: 20)
        a.record(micros: -5)  // clock quirk: counts as zero
        XCTAssertEqual(a.count, 3)
        XCTAssertEqual(a.sumMicros, 30)
        XCTAssertEqual(a.bucketCount(0), 2)
        XCTAssertEqual(a.bucketCount(1), 1)
        var b = LatencyHistogram()
        b.record(micros: 200_000_000)
        a.merge(b)
        XCTAssertEqual(a.count, 4)
        XCTAssertEqual(a.cumulativeCount(23), 3)
        XCTAssertEqual(a.cumulativeCount(24), 4)
        XCTAssertNotEqual(a, b)
        let c = a
        XCTAssertEqual(a, c)
    }

    func testStorageIsInline() {
        // 25 buckets + sum + count, no reference: recording cannot allocate.
        XCTAssertEqual(MemoryLayout<LatencyHistogram>.size, 27 * 8)
        XCTAssertTrue(_isPOD(LatencyHistogram.self))
    }

    func testRebuildRejectsBadParts() {
        XCTAssertNil(LatencyHistogram(bucketCounts: [1, 2], sumMicros: 0))
        XCTAssertNil(LatencyHistogram(bucketCounts: [UInt64.max, 1] + Array(repeating: 0, count: 23), sumMicros: 0))
        let h = LatencyHistogram(bucketCounts: Array(repeating: 1, count: 25), sumMicros: 7)
        XCTAssertEqual(h?.count, 25)
    }
}

final class StatsCountersTests: XCTestCase {
    func testAveragesFollowPgBouncer() {
        var old = PoolCounters()
        old.queryCount = 100
        old.xactCount = 50
        old.serverAssignmentCount = 10
        old.bytesReceived = 1000
        old.queryTimeMicros = 5000
        old.xactTimeMicros = 10_000
        old.waitTimeMicros = 300
        var cur = old
        cur.queryCount += 200
        cur.xactCount += 100
        cur.serverAssignmentCount += 20
        cur.bytesReceived += 4000
        cur.bytesSent += 6000
        cur.queryTimeMicros += 200 * 150
        cur.xactTimeMicros += 100 * 400
        cur.waitTimeMicros += 20 * 25
        cur.bindCount += 10
        let a = cur.averages(since: old, elapsedMicros: 2_000_000)
        XCTAssertEqual(a.queryCount, 100)        // per second
        XCTAssertEqual(a.xactCount, 50)
        XCTAssertEqual(a.serverAssignmentCount, 10)
        XCTAssertEqual(a.bytesReceived, 2000)
        XCTAssertEqual(a.bytesSent, 3000)
        XCTAssertEqual(a.queryTimeMicros, 150)   // per query
        XCTAssertEqual(a.xactTimeMicros, 400)    // per transaction
        XCTAssertEqual(a.waitTimeMicros, 25)     // per assignment
        XCTAssertEqual(a.bindCount, 5)
        XCTAssertEqual(cur.averages(since: old, elapsedMicros: 0), PoolAverages())
    }

    func testCountersGoingBackwardsAverageToZero() {
        var old = PoolCounters()
        old.queryCount = 1000
        old.queryTimeMicros = 1000
        let a = PoolCounters().averages(since: old, elapsedMicros: 1_000_000)
        XCTAssertEqual(a, PoolAverages())
    }

    func testHugeRatesDoNotTrap() {
        var cur = PoolCounters()
        cur.bytesSent = .max
        let a = cur.averages(since: PoolCounters(), elapsedMicros: 3)
        XCTAssertGreaterThan(a.bytesSent, 0)
    }

    func testAveragerWindow() {
        var avg = StatsAverager(now: 0)
        var t = PoolCounters()
        t.queryCount = 10
        avg.refresh([("db", t)], now: 15_000_000)          // first refresh: old = startup
        t.queryCount = 40
        avg.refresh([("db", t)], now: 30_000_000)          // older = 10 (at 15 s)
        t.queryCount = 70
        // (70 - 10) over (35 s - 15 s)
        XCTAssertEqual(avg.averages(database: "db", current: t, now: 35_000_000).queryCount, 3)
        XCTAssertEqual(avg.averages(total: t, now: 35_000_000).queryCount, 3)
        // A database that appeared since: everything counts.
        XCTAssertEqual(avg.averages(database: "new", current: t, now: 35_000_000).queryCount, 3)
    }
}

final class StatsSnapshotTests: XCTestCase {
    static func samplePool(_ db: String, _ user: String, seed: Int32) -> PoolStats {
        var p = PoolStats(database: db, user: user, poolMode: .transaction)
        p.clActive = seed
        p.clWaiting = seed + 1
        p.clActiveCancelReq = 1
        p.clWaitingCancelReq = 2
        p.svActive = seed + 2
        p.svActiveCancel = 3
        p.svBeingCanceled = 4
        p.svIdle = 5
        p.svUsed = 6
        p.svTested = 7
        p.svLogin = 8
        p.clPinned = 9
        p.maxWaitMicros = Int64(seed) * 1_500_000
        p.totals.queryCount = UInt64(seed) * 1000
        p.totals.xactCount = UInt64(seed) * 500
        p.totals.bytesSent = UInt64.max - 5
        p.totals.waitTimeMicros = 12345
        p.queryDuration.record(micros: Int64(seed) * 100)
        p.xactDuration.record(micros: 1 << 30)
        p.waitDuration.record(micros: 0)
        return p
    }

    static func sampleRow(id: Int64, server: Bool) -> ConnectionRow {
        var r = ConnectionRow(isServer: server, user: "app", database: "db1", state: server ? "idle" : "active")
        r.addr = "10.1.2.3"
        r.port = 54321
        r.localAddr = "127.0.0.1"
        r.localPort = 6432
        r.connectTime = 1_700_000_000_123_456
        r.requestTime = 1_700_000_001_000_000
        r.waitMicros = 2_500_001
        r.closeNeeded = server
        r.ptr = 0xdead_beef_0000 + UInt64(id)
        r.link = server ? 0 : 0x1234
        r.remotePid = -1
        r.tls = "TLSv1.3/TLS_AES_256_GCM_SHA384"
        r.applicationName = "psql ☃ \"quoted\""
        r.preparedStatements = 3
        r.id = id
        r.replication = server ? .logical : .none
        r.fd = 7 + Int32(id)
        r.linkFD = server ? 0 : 9
        r.isAdmin = !server && id == 1
        r.cancelKey = 0xFFFF_FFFF_0000_0001
        r.clientEncoding = "UTF8"
        r.standardConformingStrings = server ? nil : "on"
        r.dateStyle = "ISO, MDY"
        r.timeZone = server ? "" : nil
        r.buffers = SocketBuffers(recvPos: 100, pktPos: 60, pktRemain: 70_000, sendPos: 20, sendRemain: server ? 0 : 5)
        return r
    }

    static func sampleSnapshot(slot: Int32, rows: Int = 3) -> WorkerStatsSnapshot {
        var s = WorkerStatsSnapshot(slot: slot, pid: 4000 + slot, startedAt: 1_700_000_000, takenAt: 1_700_000_100_000_000)
        s.process = ProcessStats(cpuUserMicros: 1_234_567, cpuSystemMicros: 89, residentBytes: 12 << 20)
        s.lists.usedClients = 10
        s.lists.freeClients = 20
        s.lists.loginClients = 1
        s.lists.usedServers = 4
        s.lists.freeServers = 60
        s.pools = [samplePool("db1", "app", seed: slot + 1), samplePool("db2", "ro", seed: 7)]
        s.clients = (0..<rows).map { sampleRow(id: Int64($0), server: false) }
        s.servers = (0..<rows).map { sampleRow(id: Int64(100 + $0), server: true) }
        s.memory = [MemoryRow(name: "client_cache", size: 312, used: 10, free: 20),
                    MemoryRow(name: "iobuf_cache", size: 32768, used: 2, free: 5)]
        return s
    }

    func testRoundTrip() throws {
        let s = Self.sampleSnapshot(slot: 2)
        let bytes = s.encode()
        XCTAssertEqual(try WorkerStatsSnapshot.decode(bytes), s)
        var empty = WorkerStatsSnapshot(slot: -1, pid: 0, startedAt: 0, takenAt: -7)
        empty.pools = []
        XCTAssertEqual(try WorkerStatsSnapshot.decode(empty.encode()), empty)
    }

    /// Paging: a snapshot with many pools and rows goes out as pages of about the target size, every
    /// page but the last flagged, and appending the decoded pages gives back the snapshot.
    func testPagesRoundTrip() throws {
        var s = WorkerStatsSnapshot(slot: 1, pid: 42, startedAt: 7, takenAt: 9)
        for i in 0..<3000 { s.pools.append(Self.samplePool("db\(i % 7)", "user\(i)", seed: Int32(i % 100))) }
        for i in 0..<500 {
            var r = ConnectionRow(isServer: i % 2 == 0, user: "u\(i)", database: "d", state: "idle")
            r.id = Int64(i)
            if r.isServer { s.servers.append(r) } else { s.clients.append(r) }
        }
        s.memory = [MemoryRow(name: "server_cache", size: 400, used: 1, free: 15)]
        let pages = s.encodePages(targetPageBytes: 16 << 10)
        XCTAssertGreaterThan(pages.count, 5)
        var merged: WorkerStatsSnapshot? = nil
        for (i, bytes) in pages.enumerated() {
            XCTAssertLessThan(bytes.count, (16 << 10) + 2048, "page \(i) is about the target size")
            let page = try WorkerStatsSnapshot.decode(bytes)
            XCTAssertEqual(page.page, i)
            XCTAssertEqual(page.memory.count, i == 0 ? 1 : 0, "memory rows travel on the first page only")
            XCTAssertEqual(page.lastPage, i == pages.count - 1)
            if merged == nil { merged = page } else { merged!.appendPage(page) }
        }
        merged?.page = 0  // the assembled snapshot carries the last page's number
        XCTAssertEqual(merged?.pools.count, s.pools.count)
        XCTAssertEqual(merged?.clients.count, s.clients.count)
        XCTAssertTrue(merged == s, "the pages put together give back the snapshot")
        // An empty snapshot is one page.
        let empty = WorkerStatsSnapshot(slot: 0, pid: 1, startedAt: 0, takenAt: 0)
        XCTAssertEqual(empty.encodePages().count, 1)
        XCTAssertEqual(try WorkerStatsSnapshot.decode(empty.encodePages()[0]), empty)
    }

    func testPeriodicSnapshotIsCompact() {
        // A periodic push (no rows) of 200 busy pools still fits one control message.
        var s = WorkerStatsSnapshot(slot: 0, pid: 1, startedAt: 0, takenAt: 0)
        s.pools = (0..<200).map { Self.samplePool("database_\($0)", "user_\($0)", seed: Int32($0)) }
        let n = s.encode().count
        XCTAssertLessThan(n, StatsChunk.maximumSize - StatsChunk.headerSize, "\(n) bytes")
        XCTAssertLessThan(n / 200, 200, "bytes per pool")
    }

    func testHostileInputNeverTraps() {
        let bytes = Self.sampleSnapshot(slot: 1).encode()
        for cut in 0..<bytes.count {
            XCTAssertThrowsError(try WorkerStatsSnapshot.decode(Array(bytes[0..<cut])), "prefix \(cut)")
        }
        XCTAssertThrowsError(try WorkerStatsSnapshot.decode(bytes + [0]))
        var bad = bytes
        bad[0] = 0
        XCTAssertThrowsError(try WorkerStatsSnapshot.decode(bad))
        bad = bytes
        bad[1] = 99
        XCTAssertThrowsError(try WorkerStatsSnapshot.decode(bad))
        // A pool count of 2^63 must be refused before anything is reserved.
        var w = MessageWriter()
        w.u8(0x57); w.u8(1)
        for _ in 0..<12 { w.signed(0) }
        w.varint(1 << 62)
        XCTAssertThrowsError(try WorkerStatsSnapshot.decode(w.bytes))
        // Random garbage, deterministic.
        var rng = SplitMix(seed: 42)
        for _ in 0..<2000 {
            var b = bytes
            for _ in 0..<3 { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? WorkerStatsSnapshot.decode(b)
        }
    }

    func testVarintEdges() throws {
        var w = MessageWriter()
        for v: UInt64 in [0, 1, 127, 128, 16_383, 16_384, .max] { w.varint(v) }
        for v: Int64 in [0, -1, 1, .min, .max] { w.signed(v) }
        try StatsReader.reading(w.bytes) { r throws(StatsDecodeError) in
            for v: UInt64 in [0, 1, 127, 128, 16_383, 16_384, .max] { XCTAssertEqual(try r.varint("t"), v) }
            for v: Int64 in [0, -1, 1, .min, .max] { XCTAssertEqual(try r.signed("t"), v) }
            XCTAssertTrue(r.isAtEnd)
        }
        XCTAssertThrowsError(try StatsReader.reading([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]) {
            r throws(StatsDecodeError) in try r.varint("t")
        })
        XCTAssertThrowsError(try StatsReader.reading([2, 0xC3, 0x28]) { r throws(StatsDecodeError) in
            try r.compactString("t")
        })
    }
}

final class StatsChunkTests: XCTestCase {
    func testSplitAndReassemble() throws {
        var rng = SplitMix(seed: 7)
        let blob = (0..<1_000_003).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let chunks = StatsChunk.split(blob, kind: .requestedSnapshot, slot: 3, requestID: 99, maximumSize: 4096)
        XCTAssertEqual(chunks.count, (blob.count + 4096 - 17 - 1) / (4096 - 17))
        XCTAssertTrue(chunks.allSatisfy { $0.count <= 4096 })
        var r = StatsReassembler()
        for c in chunks.dropLast() { XCTAssertNil(try r.add(c)) }
        let done = try XCTUnwrap(try r.add(chunks.last!))
        XCTAssertEqual(done.bytes, blob)
        XCTAssertEqual(done.kind, .requestedSnapshot)
        XCTAssertEqual(done.slot, 3)
        XCTAssertEqual(done.requestID, 99)
        XCTAssertEqual(r.pendingCount, 0)
    }

    func testDefaultChunksFitAControlMessage() throws {
        let blob = [UInt8](repeating: 7, count: 200_000)
        let chunks = StatsChunk.split(blob, kind: .adminResult, slot: 0, requestID: 1)
        for c in chunks {
            XCTAssertLessThanOrEqual(c.count + 1, ControlMessage.maximumSize)  // + the control message's kind byte
        }
        let empty = StatsChunk.split([], kind: .periodicSnapshot, slot: 1, requestID: 0)
        XCTAssertEqual(empty.count, 1)
        var r = StatsReassembler()
        XCTAssertEqual(try r.add(empty[0])?.bytes, [])
    }

    func testInterleavedBlobsFromTwoWorkers() throws {
        let a = [UInt8](repeating: 1, count: 10_000), b = [UInt8](repeating: 2, count: 10_000)
        let ca = StatsChunk.split(a, kind: .periodicSnapshot, slot: 0, requestID: 0, maximumSize: 1000)
        let cb = StatsChunk.split(b, kind: .periodicSnapshot, slot: 1, requestID: 0, maximumSize: 1000)
        var r = StatsReassembler()
        var done: [StatsBlob] = []
        for (x, y) in zip(ca, cb) {
            if let d = try r.add(x) { done.append(d) }
            if let d = try r.add(y) { done.append(d) }
        }
        XCTAssertEqual(done.map(\.slot), [0, 1])
        XCTAssertEqual(done[0].bytes, a)
        XCTAssertEqual(done[1].bytes, b)
    }

    func testBrokenSequencesAreRefused() throws {
        let chunks = StatsChunk.split([UInt8](repeating: 9, count: 5000), kind: .adminResult, slot: 2, requestID: 5,
                                      maximumSize: 1017)
        var r = StatsReassembler()
        XCTAssertThrowsError(try r.add(chunks[1]))             // no beginning
        XCTAssertNil(try r.add(chunks[0]))
        XCTAssertThrowsError(try r.add(chunks[2]))             // skipped one
        XCTAssertEqual(r.pendingCount, 0)
        XCTAssertThrowsError(try r.add([1, 2, 3]))             // shorter than a header
        var bad = chunks[0]
        bad[0] = 200
        XCTAssertThrowsError(try r.add(bad))                   // unknown kind
        var small = StatsReassembler(maximumBlobSize: 2000)
        XCTAssertThrowsError(try small.add(chunks[0]))         // announced size too large
        // A restarted stream replaces the partial one.
        XCTAssertNil(try r.add(chunks[0]))
        XCTAssertNil(try r.add(chunks[1]))
        XCTAssertNil(try r.add(chunks[0]))
        for c in chunks.dropFirst().dropLast() { XCTAssertNil(try r.add(c)) }
        XCTAssertEqual(try r.add(chunks.last!)?.bytes.count, 5000)
    }

    func testPendingIsBoundedAndDiscardable() throws {
        var r = StatsReassembler(maximumPending: 4)
        for id in 0..<10 {
            let c = StatsChunk.split([UInt8](repeating: 0, count: 3000), kind: .requestedSnapshot, slot: Int32(id % 2),
                                     requestID: UInt32(id), maximumSize: 1017)
            XCTAssertNil(try r.add(c[0]))
        }
        XCTAssertEqual(r.pendingCount, 4)
        r.discard(slot: 0)
        XCTAssertEqual(r.pendingCount, 2)
    }

    func testStatsRequestRoundTrip() throws {
        for (c, s) in [(true, false), (false, true), (true, true), (false, false)] {
            let q = StatsRequest(requestID: 77, includeClients: c, includeServers: s)
            XCTAssertEqual(try StatsRequest.decode(q.encode(), requestID: 77), q)
        }
        XCTAssertEqual(try StatsRequest.decode([4], requestID: 1).includeQueries, true)
        XCTAssertEqual(try StatsRequest.decode([8], requestID: 1).resetQueries, true)
        XCTAssertThrowsError(try StatsRequest.decode([16], requestID: 1))
        XCTAssertThrowsError(try StatsRequest.decode([], requestID: 1))
    }
}

final class StatsMergeTests: XCTestCase {
    func testMergeSumsAndMaxes() {
        let a = StatsSnapshotTests.sampleSnapshot(slot: 0, rows: 2)
        var b = StatsSnapshotTests.sampleSnapshot(slot: 1, rows: 1)
        b.pools.append(PoolStats(database: "aaa", user: "zed", poolMode: .session))
        let m = MergedStats.merge([b, a])   // order of arrival does not matter
        XCTAssertEqual(m.pools.map { "\($0.database)/\($0.user)" }, ["aaa/zed", "db1/app", "db2/ro"])
        let db1 = m.pools[1]
        XCTAssertEqual(db1.clActive, 1 + 2)
        XCTAssertEqual(db1.svLogin, 16)
        XCTAssertEqual(db1.clPinned, 18)
        XCTAssertEqual(db1.maxWaitMicros, 3_000_000)     // max, not sum
        XCTAssertEqual(db1.totals.queryCount, 1000 + 2000)
        XCTAssertEqual(db1.totals.bytesSent, (UInt64.max - 5) &+ (UInt64.max - 5))  // wraps like PgBouncer's uint64
        XCTAssertEqual(db1.queryDuration.count, 2)
        XCTAssertEqual(m.lists.freeServers, 120)
        XCTAssertEqual(m.workers.map(\.slot), [0, 1])
        XCTAssertEqual(m.workers[0].clients, (1 + 2 + 1 + 2) + (7 + 8 + 1 + 2))
        XCTAssertEqual(m.clients.count, 3)
        XCTAssertEqual(m.servers.count, 3)
        let totals = m.databaseTotals()
        XCTAssertEqual(totals.map(\.database), ["aaa", "db1", "db2"])
        XCTAssertEqual(totals[2].totals.queryCount, 14_000)
        XCTAssertEqual(m.grandTotals().queryCount, 17_000)
        XCTAssertEqual(MergedStats.merge([]).pools, [])
        // SHOW MEM: one row per kind, counts summed over the workers.
        XCTAssertEqual(m.memory, [MemoryRow(name: "client_cache", size: 312, used: 20, free: 40),
                                  MemoryRow(name: "iobuf_cache", size: 32768, used: 4, free: 10)])
        XCTAssertEqual(m.memory[1].memtotal, 14 * 32768)
    }

    func testSocketBuffers() {
        let b = SocketBuffers(recvPos: 100, pktPos: 60, pktRemain: 0, sendPos: 20, sendRemain: 0)
        XCTAssertEqual(b.pktAvail, 40)
        XCTAssertEqual(b.sendAvail, 40)
        XCTAssertFalse(b.isEmpty)
        XCTAssertTrue(SocketBuffers(recvPos: 30, pktPos: 30, sendPos: 30).isEmpty, "everything read was forwarded")
        XCTAssertFalse(SocketBuffers(pktRemain: 1).isEmpty, "a message still coming")
        XCTAssertFalse(SocketBuffers(sendRemain: 1).isEmpty, "pgswift's own output queued")
    }

    /// log_stats: PgBouncer 1.25's line, word for word, from the averages of one period.
    func testStatsLogLine() {
        var a = PoolAverages()
        a.xactCount = 12
        a.queryCount = 34
        a.clientParseCount = 1
        a.serverParseCount = 2
        a.bindCount = 3
        a.bytesReceived = 4567
        a.bytesSent = 8910
        a.xactTimeMicros = 111
        a.queryTimeMicros = 22
        a.waitTimeMicros = 3
        XCTAssertEqual(a.statsLogLine, "stats: 12 xacts/s, 34 queries/s, 1 client parses/s, 2 server parses/s, 3 binds/s, "
                       + "in 4567 B/s, out 8910 B/s, xact 111 us, query 22 us, wait 3 us")
        XCTAssertEqual(PoolAverages().statsLogLine, "stats: 0 xacts/s, 0 queries/s, 0 client parses/s, 0 server parses/s, "
                       + "0 binds/s, in 0 B/s, out 0 B/s, xact 0 us, query 0 us, wait 0 us")
    }
}

final class StatsProcessTests: XCTestCase {
    func testParseProcStat() {
        let line = "1234 (pgswift) worker) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 1 0 100 123456789 2560 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0"
        let p = ProcessStats.parse(procStat: line, ticksPerSecond: 100, pageSize: 4096)
        XCTAssertEqual(p, ProcessStats(cpuUserMicros: 2_500_000, cpuSystemMicros: 750_000, residentBytes: 2560 * 4096))
        XCTAssertNil(ProcessStats.parse(procStat: "garbage", ticksPerSecond: 100, pageSize: 4096))
        XCTAssertNil(ProcessStats.parse(procStat: "1 (x) S 1 2", ticksPerSecond: 100, pageSize: 4096))
        // As the kernel writes it: a newline at the end. A negative rss reads as 0; a utime that is no
        // number, or a line that stops before field 24, is no answer.
        XCTAssertEqual(ProcessStats.parse(procStat: line + "\n", ticksPerSecond: 100, pageSize: 4096), p)
        let fields = line.split(separator: " ").map(String.init)
        func with(_ field: Int, _ value: String) -> String {
            var f = fields; f[field] = value; return f.joined(separator: " ")
        }
        // Field n is fields[n] here: the command name "(pgswift) worker)" took two.
        XCTAssertEqual(ProcessStats.parse(procStat: with(24, "-3"), ticksPerSecond: 100, pageSize: 4096)?.residentBytes, 0)
        XCTAssertEqual(ProcessStats.parse(procStat: with(14, "7"), ticksPerSecond: 100, pageSize: 4096)?.cpuUserMicros, 70_000)
        XCTAssertNil(ProcessStats.parse(procStat: with(14, "x1"), ticksPerSecond: 100, pageSize: 4096))
        XCTAssertNil(ProcessStats.parse(procStat: with(15, "-1"), ticksPerSecond: 100, pageSize: 4096))
        XCTAssertNil(ProcessStats.parse(procStat: fields[0..<24].joined(separator: " "), ticksPerSecond: 100, pageSize: 4096))
        XCTAssertNotNil(ProcessStats.parse(procStat: fields[0..<25].joined(separator: " "), ticksPerSecond: 100, pageSize: 4096))
        XCTAssertNil(ProcessStats.parse(procStat: line, ticksPerSecond: 0, pageSize: 4096))
    }

    func testReadSelf() throws {
        let p = try XCTUnwrap(ProcessStats.readSelf())
        XCTAssertGreaterThan(p.residentBytes, 1 << 20)
        XCTAssertGreaterThanOrEqual(p.cpuTotalMicros, p.cpuUserMicros)
    }
}

/// Deterministic pseudo-random numbers for fuzz-style tests.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
