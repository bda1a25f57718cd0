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
    /// (clock ticks), rss is field 24 (pages).
    public static func parse(procStat text: String, ticksPerSecond: Int, pageSize: Int) -> ProcessStats? {
        guard ticksPerSecond > 0, pageSize > 0, let close = text.lastIndex(of: ")") else { return nil }
        let rest = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // rest[0] is field 3 (state), so field n is rest[n - 3].
        guard rest.count >= 22,
              let utime = UInt64(rest[14 - 3]), let stime = UInt64(rest[15 - 3]),
              let rss = Int64(rest[24 - 3]) else { return nil }
        let tick = UInt64(ticksPerSecond)
        return ProcessStats(cpuUserMicros: utime &* 1_000_000 / tick,
                            cpuSystemMicros: stime &* 1_000_000 / tick,
                            residentBytes: UInt64(max(rss, 0)) &* UInt64(pageSize))
    }

    /// This process's usage now; nil when /proc is unavailable. One small read (a 4 KiB scratch buffer
    /// and the returned string), cheap enough for a once-a-second stats push.
    public static func readSelf() -> ProcessStats? {
        guard let text = readSmallFile("/proc/self/stat") else { return nil }
        return parse(procStat: text, ticksPerSecond: Posix.clockTicksPerSecond(), pageSize: Posix.pageSize())
    }

    /// Reads up to 4 KiB of a (virtual) file. /proc files report size 0, so stat() is no help.
    static func readSmallFile(_ path: String) -> String? {
        guard let bytes = try? Files.readContents(path, limit: 4096) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}
