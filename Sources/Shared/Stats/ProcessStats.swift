// CPU time and resident memory of the current process, read from /proc/self/stat.
/// Resource usage of one process (a worker reports its own; the supervisor exports them).
public struct ProcessStats: Equatable, Sendable {
    public var cpuUserMicros: UInt64 = 0
    public var cpuSystemMicros: UInt64 = 0
    public var residentBytes: UInt64 = 0

    public init(cpuUserMicros: UInt64 = 0, cpuSystemMicros: UInt64 = 0, residentBytes: UInt64 = 0) {
        self.cpuUserMicros = cpuUserMicros
        self.cpuSystemMicros = cpuSystemMicros
        self.residentBytes = residentBytes
    }

    public var cpuTotalMicros: UInt64 { cpuUserMicros &+ cpuSystemMicros }

    /// Parses the text of /proc/<pid>/stat. The command name (field 2) may contain spaces and
    /// parentheses, so fields are counted from the last ')'. utime, stime are fields 14 and 15
    /// (clock ticks), rss is field 24 (pages, may be negative: read as 0).
    public static func parse(procStat text: String, ticksPerSecond: Int, pageSize: Int) -> ProcessStats? {
        var copy = text
        return copy.withUTF8 { parse(procStat: UnsafeRawBufferPointer($0), ticksPerSecond: ticksPerSecond, pageSize: pageSize) }
    }

    /// The same over bytes, with no allocation: the worker reads its own stat once a second from the
    /// event loop (`WorkerStats`), and a String per field made that cost about 230,000 instructions.
    public static func parse(procStat bytes: UnsafeRawBufferPointer, ticksPerSecond: Int, pageSize: Int) -> ProcessStats? {
        guard ticksPerSecond > 0, pageSize > 0,
              let close = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        var utime: UInt64 = 0, stime: UInt64 = 0, rss: UInt64 = 0
        var field = 2, i = close &+ 1, n = bytes.count
        // A trailing newline ends the last field as a space does.
        while n > i && (bytes[n &- 1] == UInt8(ascii: "\n") || bytes[n &- 1] == 0) { n &-= 1 }
        while i < n {
            while i < n && bytes[i] == UInt8(ascii: " ") { i &+= 1 }
            if i == n { break }
            field &+= 1
            var negative = false, value: UInt64 = 0, digits = 0, j = i
            if bytes[j] == UInt8(ascii: "-") { negative = true; j &+= 1 }
            while j < n && bytes[j] != UInt8(ascii: " ") {
                let d = bytes[j] &- UInt8(ascii: "0")
                if d < 10 { value = value &* 10 &+ UInt64(d); digits &+= 1 } else { digits = -1 << 32 }
                j &+= 1
            }
            let number = digits > 0
            switch field {
            case 14: guard number && !negative else { return nil }; utime = value
            case 15: guard number && !negative else { return nil }; stime = value
            case 24: guard number else { return nil }; rss = negative ? 0 : value
            default: break
            }
            i = j
        }
        guard field >= 24 else { return nil }
        let tick = UInt64(ticksPerSecond)
        return ProcessStats(cpuUserMicros: utime &* 1_000_000 / tick,
                            cpuSystemMicros: stime &* 1_000_000 / tick,
                            residentBytes: rss &* UInt64(pageSize))
    }

    private static let ticksPerSecond = Posix.clockTicksPerSecond()
    private static let pageSize = Posix.pageSize()

    /// This process's usage now; nil when /proc is unavailable. One read into a stack buffer (the
    /// line is about 300 bytes), cheap enough for a once-a-second stats push.
    public static func readSelf() -> ProcessStats? {
        guard let fd = try? Files.openForReading("/proc/self/stat") else { return nil }
        defer { Posix.close(fd) }
        return withUnsafeTemporaryAllocation(byteCount: 1024, alignment: 1) { buf -> ProcessStats? in
            guard let base = buf.baseAddress, case .processed(let n)? = try? Posix.read(fd, base, buf.count),
                  n > 0, n < buf.count else { return nil }
            return parse(procStat: UnsafeRawBufferPointer(rebasing: buf[0..<n]),
                         ticksPerSecond: ticksPerSecond, pageSize: pageSize)
        }
    }
}
