// Connection I/O buffers: fixed-size chunks from a per-worker free list, held only while data is in flight.
import Shared
import Glibc

/// A pool of equally sized raw buffers. Idle connections hold none: a buffer is taken when bytes arrive
/// and given back as soon as everything in it has been forwarded. A handle to pointer-held state, kept
/// in a `let`: no reference counting or exclusivity checks on the hot path.
struct BufferPool {
    private struct State {
        var free: UnsafeMutablePointer<UnsafeMutableRawPointer>
        var freeCount: Int
        var inUse: Int
    }
    let size: Int
    private let keepFree: Int
    private let state: UnsafeMutablePointer<State>

    init(size: Int, keepFree: Int = 256) {
        self.size = size
        self.keepFree = keepFree
        state = .allocate(capacity: 1)
        state.initialize(to: State(free: .allocate(capacity: keepFree), freeCount: 0, inUse: 0))
    }

    var inUse: Int { state.pointee.inUse }
    /// Buffers kept on the free list for reuse.
    var freeCount: Int { state.pointee.freeCount }

    @inline(__always)
    func take() -> UnsafeMutableRawPointer {
        state.pointee.inUse &+= 1
        if state.pointee.freeCount > 0 {
            state.pointee.freeCount &-= 1
            return state.pointee.free[state.pointee.freeCount]
        }
        return UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
    }

    @inline(__always)
    func give(_ p: UnsafeMutableRawPointer) {
        state.pointee.inUse &-= 1
        if state.pointee.freeCount < keepFree {
            state.pointee.free[state.pointee.freeCount] = p
            state.pointee.freeCount &+= 1
        } else {
            p.deallocate()
        }
    }
}

/// Bytes read from one socket and not yet forwarded. Layout: [0, start) done, [start, scan) scanned and
/// ready to forward, [scan, end) read but not yet parsed. `partial` is what is still to come of a
/// message whose header was scanned but whose body runs past `end` (large rows, COPY data): those
/// bytes are forwarded as they arrive, never buffered whole.
struct IOBuf {
    var base: UnsafeMutableRawPointer? = nil
    var start = 0
    var scan = 0
    var end = 0
    var partial = 0

    @inline(__always) var hasUnsent: Bool { start < scan }
    @inline(__always) var hasUnscanned: Bool { scan < end }
    @inline(__always) var isEmpty: Bool { start == end }

    /// Moves live bytes to the front so more can be read after them.
    @inline(__always)
    mutating func compact() {
        guard let b = base, start > 0 else { return }
        let n = end - start
        if n > 0 { memmove(b, b + start, n) }
        scan -= start
        end -= start
        start = 0
    }
}

/// Bytes pgswift itself queued for a socket (login answers, errors, SET and reset queries, rewritten
/// prepared-statement messages): held only while used, given back once flushed. The smallest size,
/// 1 KiB, comes from and returns to `SpareOutChunks`.
struct PendingOut {
    var base: UnsafeMutableRawPointer? = nil
    var start = 0
    var end = 0
    var capacity = 0

    @inline(__always) var isEmpty: Bool { start == end }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if capacity - end < bytes.count {
            if start > 0 && capacity - (end - start) >= bytes.count, let b = base {
                memmove(b, b + start, end - start)
                end -= start
                start = 0
            } else {
                let newCap = max(capacity * 2, end - start + bytes.count, SpareOutChunks.size)
                let nb = newCap == SpareOutChunks.size ? SpareOutChunks.take()
                    : UnsafeMutableRawPointer.allocate(byteCount: newCap, alignment: 16)
                if let b = base {
                    nb.copyMemory(from: b + start, byteCount: end - start)
                    free(b, capacity)
                }
                end -= start
                start = 0
                base = nb
                capacity = newCap
            }
        }
        (base! + end).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        end += bytes.count
    }

    mutating func append(_ out: OutBuffer) {
        out.withUnsafeBytes { append($0) }
    }

    mutating func consumed(_ n: Int) {
        start += n
        if start == end { release() }
    }

    mutating func release() {
        if let b = base { free(b, capacity) }
        base = nil
        start = 0
        end = 0
        capacity = 0
    }

    @inline(__always)
    private func free(_ b: UnsafeMutableRawPointer, _ capacity: Int) {
        if capacity == SpareOutChunks.size { SpareOutChunks.give(b) } else { b.deallocate() }
    }
}

/// Drained 1 KiB `PendingOut` buffers, kept for the next queue that needs one (at most `limit`, 64 KiB).
/// A transaction whose messages pgswift rewrites (a prepared statement's Bind, in transaction mode)
/// fills and drains its server's queue every time: allocating and freeing that buffer cost about 250
/// instructions per transaction. A worker is one thread, and only its event loop queues output.
enum SpareOutChunks {
    static let size = 1024
    static let limit = 64
    nonisolated(unsafe) private static var stack = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: limit)
    nonisolated(unsafe) private(set) static var count = 0

    @inline(__always)
    static func take() -> UnsafeMutableRawPointer {
        guard count > 0 else { return .allocate(byteCount: size, alignment: 16) }
        count &-= 1
        return stack[count]
    }

    @inline(__always)
    static func give(_ b: UnsafeMutableRawPointer) {
        guard count < limit else { return b.deallocate() }
        stack[count] = b
        count &+= 1
    }
}
