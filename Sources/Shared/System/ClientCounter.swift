// The service-wide client counts (max_client_conn across workers, and the per-database and per-user
// client limits): 64-bit words in a shared memory file.
import CLinux
import Glibc

/// A memory file the supervisor creates before spawning workers and hands to each as a descriptor.
/// Word 0 is the number of clients the whole service holds; word 1 the last connection id handed out
/// (`nextConnectionID`); word 8 + w is how many of them the
/// worker process given word `w` holds (`--clients-word`: its slot, or slot + workers for the other of
/// the two processes a slot has during a rolling restart, so an old and a new worker never share one). A worker admits a client with one atomic fetch-add on word 0 (undone at once
/// if that went over the limit), so the limit is exact; it also counts the client in its own word,
/// which only it writes. When a worker process ends, the supervisor subtracts that word from the
/// total and clears it: the clients of a crashed worker are gone, so are their places.
///
/// After those 4 KiB, a table of names (max_db_client_connections, max_user_client_connections):
/// `nameCapacity` entries of (key, count), where the key is a 64-bit hash of "d" or "u", NUL and the
/// database or user name (0: free), claimed with a compare-and-swap and never given back, found by
/// linear probing; then one row per process word with that process's share of each entry's count,
/// which only it writes and the supervisor subtracts when the process ends, as for word 0. A name is
/// admitted exactly as word 0 is (fetch-add, undone when over). The file is sparse: pages of the rows
/// exist only once written.
public struct ClientCounter: @unchecked Sendable {
    public static let byteCount = 4096
    /// Slots beyond this share the last word (never in practice: workers are about one per CPU).
    public static let maxSlots = byteCount / 8 - 8
    /// Names (databases and users with a client limit) the table can count; more are not counted.
    public static let nameCapacity = 8192
    /// The whole file: the words, the name entries (2 words each), one row of shares per process word.
    public static let fileSize = byteCount + nameCapacity * 16 + maxSlots * nameCapacity * 8

    public let fd: Int32
    private let words: UnsafeMutablePointer<Int64>

    /// The supervisor's: a new zeroed memory file.
    public static func create() throws(SyscallError) -> ClientCounter {
        let fd = cl_memfd_create("pgswift-clients")
        if fd < 0 { throw SyscallError("memfd_create", Errno.current) }
        do throws(SyscallError) {
            return try map(fd)
        } catch {
            Posix.close(fd)
            throw error
        }
    }

    /// A worker's: the file it inherited as `fd` (also the supervisor's after a re-exec). A file made
    /// by an older binary (the words only) is grown first: memory files grow with zeroes, and what
    /// the old processes mapped stays where it was.
    public static func map(_ fd: Int32) throws(SyscallError) -> ClientCounter {
        guard let size = Files.size(fd) else { throw SyscallError("fstat(clients)", Errno.current) }
        if size < fileSize && ftruncate(fd, off_t(fileSize)) != 0 {
            throw SyscallError("ftruncate(clients)", Errno.current)
        }
        guard let p = cl_mmap_shared(fd, fileSize) else { throw SyscallError("mmap(clients)", Errno.current) }
        return ClientCounter(fd: fd, words: p.bindMemory(to: Int64.self, capacity: fileSize / 8))
    }

    private init(fd: Int32, words: UnsafeMutablePointer<Int64>) {
        self.fd = fd
        self.words = words
    }

    private func slotWord(_ slot: Int) -> UnsafeMutablePointer<Int64> {
        words + 8 + min(max(0, slot), Self.maxSlots - 1)
    }

    /// Clients of the whole service now.
    public var total: Int { Int(cl_atomic_load_i64(words)) }

    public func held(bySlot slot: Int) -> Int { Int(cl_atomic_load_i64(slotWord(slot))) }

    /// A new connection id, one more than the last one any process took: PgBouncer's one sequence of
    /// client and server ids (SHOW CLIENTS/SERVERS/SOCKETS `id`, KILL_CLIENT's argument), kept for the
    /// whole service and across supervisor re-execs, as the file is.
    public func nextConnectionID() -> UInt64 {
        UInt64(bitPattern: cl_atomic_fetch_add_i64(words + 1, 1) &+ 1)
    }

    /// Takes one place if fewer than `limit` are taken; false (and nothing changed) otherwise.
    public func tryAcquire(slot: Int, limit: Int) -> Bool {
        let before = cl_atomic_fetch_add_i64(words, 1)
        if before >= Int64(limit) {
            _ = cl_atomic_fetch_add_i64(words, -1)
            return false
        }
        _ = cl_atomic_fetch_add_i64(slotWord(slot), 1)
        return true
    }

    public func release(slot: Int) {
        _ = cl_atomic_fetch_add_i64(slotWord(slot), -1)
        _ = cl_atomic_fetch_add_i64(words, -1)
    }

    /// A client adopted from a predecessor (rolling restart): counted without the limit check, since
    /// the predecessor gives its place back as it hands the client over.
    public func acquireUnchecked(slot: Int) {
        _ = cl_atomic_fetch_add_i64(words, 1)
        _ = cl_atomic_fetch_add_i64(slotWord(slot), 1)
    }

    /// The supervisor, after worker `slot` exited: its places are free again, in the client count
    /// and in every name's count.
    public func reclaim(slot: Int) -> Int {
        let held = cl_atomic_load_i64(slotWord(slot))
        cl_atomic_store_i64(slotWord(slot), 0)
        if held != 0 { _ = cl_atomic_fetch_add_i64(words, -held) }
        let row = shareRow(slot)
        for e in 0..<Self.nameCapacity {
            let n = cl_atomic_load_i64(row + e)
            if n == 0 { continue }
            cl_atomic_store_i64(row + e, 0)
            _ = cl_atomic_fetch_add_i64(entryCount(Int32(e)), -n)
        }
        return Int(held)
    }

    // MARK: Names (max_db_client_connections, max_user_client_connections)

    /// The table key of a database ("d") or user ("u") name: FNV-1a 64 over kind, NUL, name (the same
    /// in every process, unlike Swift's seeded Hasher); never 0, which marks a free entry.
    public static func nameKey(kind: Character, _ name: String) -> Int64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ b: UInt8) { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        for b in String(kind).utf8 { mix(b) }
        mix(0)
        for b in name.utf8 { mix(b) }
        let k = Int64(bitPattern: h)
        return k == 0 ? 1 : k
    }

    private var entries: UnsafeMutablePointer<Int64> { words + Self.byteCount / 8 }
    private func entryCount(_ e: Int32) -> UnsafeMutablePointer<Int64> { entries + 2 * Int(e) + 1 }
    private func shareRow(_ slot: Int) -> UnsafeMutablePointer<Int64> {
        entries + 2 * Self.nameCapacity + min(max(0, slot), Self.maxSlots - 1) * Self.nameCapacity
    }

    /// The entry of `key`: found, or claimed when `claim` (nil: not there, or the table is full).
    public func nameEntry(_ key: Int64, claim: Bool) -> Int32? {
        let mask = UInt64(Self.nameCapacity - 1)
        var i = Int(UInt64(bitPattern: key) & mask)
        for _ in 0..<Self.nameCapacity {
            let slotKey = entries + 2 * i
            var seen = cl_atomic_load_i64(slotKey)
            if seen == 0 {
                guard claim else { return nil }
                seen = cl_atomic_cas_i64(slotKey, 0, key)
                if seen == 0 { return Int32(i) }  // ours now
            }
            if seen == key { return Int32(i) }
            i = (i + 1) & Int(mask)
        }
        return nil
    }

    /// Clients counted for the name of entry `e` in the whole service.
    public func count(entry e: Int32) -> Int { Int(cl_atomic_load_i64(entryCount(e))) }

    /// Counts one client of entry `e` if fewer than `limit` are counted (limit 0: no limit); false
    /// (and nothing changed) otherwise.
    public func tryAcquire(entry e: Int32, slot: Int, limit: Int) -> Bool {
        let before = cl_atomic_fetch_add_i64(entryCount(e), 1)
        if limit > 0 && before >= Int64(limit) {
            _ = cl_atomic_fetch_add_i64(entryCount(e), -1)
            return false
        }
        _ = cl_atomic_fetch_add_i64(shareRow(slot) + Int(e), 1)
        return true
    }

    public func release(entry e: Int32, slot: Int) {
        _ = cl_atomic_fetch_add_i64(shareRow(slot) + Int(e), -1)
        _ = cl_atomic_fetch_add_i64(entryCount(e), -1)
    }
}
