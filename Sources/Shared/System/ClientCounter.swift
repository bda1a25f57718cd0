// The service-wide client count (max_client_conn across workers): 64-bit words in a shared memory file.
import CLinux
import Glibc

/// A memory file the supervisor creates before spawning workers and hands to each as a descriptor.
/// Word 0 is the number of clients the whole service holds; word 8 + w is how many of them the
/// worker process given word `w` holds (`--clients-word`: its slot, or slot + workers for the other of
/// the two processes a slot has during a rolling restart, so an old and a new worker never share one). A worker admits a client with one atomic fetch-add on word 0 (undone at once
/// if that went over the limit), so the limit is exact; it also counts the client in its own word,
/// which only it writes. When a worker process ends, the supervisor subtracts that word from the
/// total and clears it: the clients of a crashed worker are gone, so are their places.
public struct ClientCounter: @unchecked Sendable {
    public static let byteCount = 4096
    /// Slots beyond this share the last word (never in practice: workers are about one per CPU).
    public static let maxSlots = byteCount / 8 - 8

    public let fd: Int32
    private let words: UnsafeMutablePointer<Int64>

    /// The supervisor's: a new zeroed memory file.
    public static func create() throws(SyscallError) -> ClientCounter {
        let fd = cl_memfd_create("pgswift-clients")
        if fd < 0 { throw SyscallError("memfd_create", Errno.current) }
        if ftruncate(fd, off_t(byteCount)) != 0 {
            let e = Errno.current
            Posix.close(fd)
            throw SyscallError("ftruncate(memfd)", e)
        }
        return try map(fd)
    }

    /// A worker's: the file it inherited as `fd`.
    public static func map(_ fd: Int32) throws(SyscallError) -> ClientCounter {
        guard let p = cl_mmap_shared(fd, byteCount) else { throw SyscallError("mmap(clients)", Errno.current) }
        return ClientCounter(fd: fd, words: p.bindMemory(to: Int64.self, capacity: byteCount / 8))
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

    /// The supervisor, after worker `slot` exited: its places are free again.
    /// A client adopted from a predecessor (rolling restart): counted without the limit check, since
    /// the predecessor gives its place back as it hands the client over.
    public func acquireUnchecked(slot: Int) {
        _ = cl_atomic_fetch_add_i64(words, 1)
        _ = cl_atomic_fetch_add_i64(slotWord(slot), 1)
    }

    public func reclaim(slot: Int) -> Int {
        let held = cl_atomic_load_i64(slotWord(slot))
        cl_atomic_store_i64(slotWord(slot), 0)
        if held != 0 { _ = cl_atomic_fetch_add_i64(words, -held) }
        return Int(held)
    }
}
