// Random bytes for logins (cancel keys, SCRAM nonces, md5 salts) from one getrandom(2) per 4 KiB, not one per connection.
import Shared
import CLinux
import Glibc

/// A per-worker reserve of kernel CSPRNG output. Each login needs ~26 random bytes (a 4-byte cancel
/// key, an 18-byte SCRAM nonce); asking the kernel for them one by one cost two getrandom calls per
/// connection. Bytes are handed out once and never reused. Pointer-held state in a `let`, like
/// BufferPool: no exclusivity checks.
struct RandomPool {
    private struct State {
        var next: Int
    }
    static let size = 4096
    private let buf: UnsafeMutablePointer<UInt8>
    private let state: UnsafeMutablePointer<State>

    init() {
        buf = .allocate(capacity: RandomPool.size)
        state = .allocate(capacity: 1)
        state.initialize(to: State(next: RandomPool.size))
    }

    /// Makes `n` unused bytes available at `state.next`.
    @inline(__always)
    private func ensure(_ n: Int) {
        if RandomPool.size - state.pointee.next >= n { return }
        if cl_getrandom(buf, RandomPool.size) != 0 {
            // No getrandom: libcrypto's generator (it aborts rather than return weak bytes).
            let b = Crypto.randomBytes(RandomPool.size)
            b.withUnsafeBufferPointer { buf.update(from: $0.baseAddress!, count: RandomPool.size) }
        }
        state.pointee.next = 0
    }

    func uint32() -> UInt32 {
        ensure(4)
        let p = buf + state.pointee.next
        let v = UInt32(p[0]) << 24 | UInt32(p[1]) << 16 | UInt32(p[2]) << 8 | UInt32(p[3])
        // Used bytes are wiped so a later memory disclosure cannot replay them.
        (p).update(repeating: 0, count: 4)
        state.pointee.next += 4
        return v
    }

    func bytes(_ n: Int) -> [UInt8] {
        precondition(n >= 0 && n <= RandomPool.size)
        ensure(n)
        let p = buf + state.pointee.next
        let out = [UInt8](UnsafeBufferPointer(start: p, count: n))
        p.update(repeating: 0, count: n)
        state.pointee.next += n
        return out
    }
}
