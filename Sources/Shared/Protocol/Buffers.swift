// Byte buffers for the wire codec: an owning growable output buffer and a non-owning read cursor.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Growable byte buffer over manually managed memory.
///
/// A plain struct around a malloc'd block: copying the struct does NOT copy the bytes, so exactly
/// one copy is the owner and must call `deallocate()` once. That keeps reference counting and
/// copy-on-write checks out of the per-message path; the event loop keeps one per connection and
/// reuses it.
@frozen
public struct OutBuffer {
    @usableFromInline var _base: UnsafeMutableRawPointer
    @usableFromInline var _capacity: Int
    @usableFromInline var _count: Int

    /// A recognisable dangling pointer for "no memory": any use crashes instead of corrupting.
    @usableFromInline static var emptyBase: UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: 0x10)!
    }

    public init(capacity: Int) {
        precondition(capacity >= 0, "OutBuffer capacity must not be negative")
        if capacity == 0 {
            _base = OutBuffer.emptyBase
        } else {
            guard let p = malloc(capacity) else { fatalError("OutBuffer: out of memory (\(capacity) bytes)") }
            _base = p
        }
        _capacity = capacity
        _count = 0
    }

    @inlinable public var base: UnsafeMutableRawPointer { _base }
    @inlinable public var capacity: Int { _capacity }
    @inlinable public var isEmpty: Bool { _count == 0 }

    /// Bytes written so far; may be set (e.g. after a `read(2)` into `base + count`) up to `capacity`.
    @inlinable public var count: Int {
        get { _count }
        set {
            precondition(newValue >= 0 && newValue <= _capacity, "OutBuffer.count out of range")
            _count = newValue
        }
    }

    /// Frees the memory. The buffer is left empty with capacity 0 and may be reused (it reallocates).
    public mutating func deallocate() {
        if _capacity > 0 { free(_base) }
        _base = OutBuffer.emptyBase
        _capacity = 0
        _count = 0
    }

    /// Makes room for `additional` more bytes after `count`.
    @inlinable public mutating func reserve(_ additional: Int) {
        precondition(additional >= 0, "OutBuffer.reserve: negative size")
        if additional > _capacity &- _count { grow(minimumCapacity: _count + additional) }
    }

    /// Geometric growth keeps appends amortised O(1); realloc may extend in place.
    @usableFromInline mutating func grow(minimumCapacity: Int) {
        var newCapacity = Swift.max(_capacity, 64)
        while newCapacity < minimumCapacity {
            let (doubled, overflow) = newCapacity.multipliedReportingOverflow(by: 2)
            newCapacity = overflow ? minimumCapacity : doubled
        }
        let p: UnsafeMutableRawPointer?
        if _capacity == 0 {
            p = malloc(newCapacity)
        } else {
            p = realloc(_base, newCapacity)
        }
        guard let p else { fatalError("OutBuffer: out of memory (\(newCapacity) bytes)") }
        _base = p
        _capacity = newCapacity
    }

    @inlinable public mutating func clear() { _count = 0 }

    /// Drops the first `n` bytes (already sent), moving the rest to the front.
    public mutating func removeFirst(_ n: Int) {
        precondition(n >= 0 && n <= _count, "OutBuffer.removeFirst: \(n) of \(_count) bytes")
        if n == 0 { return }
        let rest = _count &- n
        if rest > 0 { memmove(_base, _base + n, rest) }
        _count = rest
    }

    // MARK: appending (big-endian, as on the wire)

    /// Any fixed-width integer, big-endian (the protocol's byte order); specialised at each call site.
    @inlinable public mutating func appendBigEndian<T: FixedWidthInteger>(_ v: T) {
        reserve(MemoryLayout<T>.size)
        _base.storeBytes(of: v.bigEndian, toByteOffset: _count, as: T.self)
        _count &+= MemoryLayout<T>.size
    }

    @inlinable public mutating func appendUInt8(_ v: UInt8) { appendBigEndian(v) }
    @inlinable public mutating func appendInt16(_ v: Int16) { appendBigEndian(v) }
    @inlinable public mutating func appendUInt16(_ v: UInt16) { appendBigEndian(v) }
    @inlinable public mutating func appendInt32(_ v: Int32) { appendBigEndian(v) }
    @inlinable public mutating func appendUInt32(_ v: UInt32) { appendBigEndian(v) }

    public mutating func appendBytes(_ p: UnsafeRawBufferPointer) {
        guard let src = p.baseAddress, p.count > 0 else { return }
        reserve(p.count)
        (_base + _count).copyMemory(from: src, byteCount: p.count)
        _count &+= p.count
    }

    public mutating func appendBytes(_ a: [UInt8]) {
        a.withUnsafeBytes { appendBytes($0) }
    }

    /// UTF-8 bytes of `s`, no terminator.
    public mutating func appendString(_ s: String) {
        var s = s
        s.withUTF8 { appendBytes(UnsafeRawBufferPointer($0)) }
    }

    /// UTF-8 bytes of `s` plus NUL. Stops at an embedded NUL so that a stray one in the text can
    /// never shift the fields that follow it on the wire.
    public mutating func appendCString(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            let raw = UnsafeRawBufferPointer(utf8)
            var n = raw.count
            if let start = raw.baseAddress, n > 0, let nul = memchr(start, 0, n) {
                n = UnsafeRawPointer(nul) - start
            }
            appendBytes(UnsafeRawBufferPointer(rebasing: raw[0..<n]))
        }
        appendUInt8(0)
    }

    // MARK: message framing

    /// Writes the type byte and a placeholder length; returns the length field's offset for `endMessage`.
    @inlinable public mutating func beginMessage(_ type: UInt8) -> Int {
        appendUInt8(type)
        return beginUntypedMessage()
    }

    /// A message with no body (Sync, Flush, Terminate, ParseComplete, NoData...).
    @inlinable public mutating func appendEmptyMessage(_ type: UInt8) {
        appendUInt8(type)
        appendInt32(4)
    }

    /// A message whose body is one C string (Query, PasswordMessage, CommandComplete, CopyFail).
    @inlinable public mutating func appendCStringMessage(_ type: UInt8, _ text: String) {
        message(type) { $0.appendCString(text) }
    }

    /// One message: the type byte, what `body` appends, then the length patched in. Always inlined,
    /// and the closure is non-escaping: no context is allocated and nothing is called indirectly. A
    /// short body (ReadyForQuery, Describe...) compiles to the same code as begin/append/end written
    /// out; a long one (with a loop) may become one direct call.
    @inlinable @inline(__always)
    public mutating func message(_ type: UInt8, _ body: (inout OutBuffer) -> Void) {
        let at = beginMessage(type)
        body(&self)
        endMessage(at)
    }

    /// `message` for a startup-style packet, which has no type byte.
    @inlinable @inline(__always)
    public mutating func untypedMessage(_ body: (inout OutBuffer) -> Void) {
        let at = beginUntypedMessage()
        body(&self)
        endMessage(at)
    }

    /// Placeholder length only, for startup-style packets that have no type byte.
    @inlinable public mutating func beginUntypedMessage() -> Int {
        let offset = _count
        appendInt32(0)
        return offset
    }

    /// Patches the length at `lengthOffset`: the bytes from the length field to the current end.
    @inlinable public mutating func endMessage(_ lengthOffset: Int) {
        precondition(lengthOffset >= 0 && lengthOffset &+ 4 <= _count, "OutBuffer.endMessage: bad offset")
        let length = _count &- lengthOffset
        precondition(length <= Int(Int32.max), "OutBuffer.endMessage: message longer than 2 GiB")
        _base.storeBytes(of: Int32(truncatingIfNeeded: length).bigEndian, toByteOffset: lengthOffset, as: Int32.self)
    }

    // MARK: reading back

    @inlinable public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: _count == 0 ? nil : UnsafeRawPointer(_base), count: _count))
    }

    /// A copy of the content (allocates; for tests and diagnostics).
    public var bytes: [UInt8] {
        withUnsafeBytes { [UInt8]($0) }
    }
}

/// Non-owning read cursor over bytes owned by someone else (a connection's read buffer).
///
/// Every read checks bounds and returns nil instead of trapping, because the bytes come from the
/// network. The cursor must not outlive the memory it points into.
@frozen
public struct ByteReader {
    @usableFromInline let start: UnsafeRawPointer?
    @usableFromInline let end: Int
    @usableFromInline var offset: Int

    @inlinable public init(_ buffer: UnsafeRawBufferPointer) {
        start = buffer.baseAddress
        end = buffer.count
        offset = 0
    }

    @inlinable public var remaining: Int { end &- offset }

    /// Bytes consumed so far.
    @inlinable public var position: Int { offset }

    @inlinable public mutating func readUInt8() -> UInt8? {
        guard remaining >= 1, let start else { return nil }
        let v = start.load(fromByteOffset: offset, as: UInt8.self)
        offset &+= 1
        return v
    }

    @inlinable public mutating func readInt16() -> Int16? {
        guard remaining >= 2, let start else { return nil }
        let v = ByteReader.int16(at: start + offset)
        offset &+= 2
        return v
    }

    @inlinable public mutating func readInt32() -> Int32? {
        guard remaining >= 4, let start else { return nil }
        let v = ByteReader.int32(at: start + offset)
        offset &+= 4
        return v
    }

    @inlinable public mutating func readUInt32() -> UInt32? {
        readInt32().map { UInt32(bitPattern: $0) }
    }

    /// A NUL-terminated string (the NUL is consumed, not returned); nil when no NUL remains.
    /// Invalid UTF-8 is repaired with U+FFFD rather than rejected, as PostgreSQL does not validate.
    public mutating func readCString() -> String? {
        guard let start, remaining > 0 else { return nil }
        let from = start + offset
        guard let nul = memchr(from, 0, remaining) else { return nil }
        let n = UnsafeRawPointer(nul) - from
        let s = String(decoding: UnsafeRawBufferPointer(start: from, count: n), as: UTF8.self)
        offset &+= n &+ 1
        return s
    }

    /// The next `n` bytes without copying; nil when fewer remain or `n` is negative.
    @inlinable public mutating func readBytes(_ n: Int) -> UnsafeRawBufferPointer? {
        guard n >= 0, n <= remaining else { return nil }
        let p = UnsafeRawBufferPointer(start: n == 0 ? nil : start.map { $0 + offset }, count: n)
        offset &+= n
        return p
    }

    /// Everything left (possibly empty).
    @inlinable public mutating func readRest() -> UnsafeRawBufferPointer {
        let n = remaining
        let p = UnsafeRawBufferPointer(start: n == 0 ? nil : start.map { $0 + offset }, count: n)
        offset = end
        return p
    }

    // MARK: unchecked big-endian loads for the framing scanner

    /// Big-endian Int32 at `p`, which need not be aligned. The caller guarantees 4 readable bytes.
    @inlinable @inline(__always)
    public static func int32(at p: UnsafeRawPointer) -> Int32 {
        Int32(bigEndian: p.loadUnaligned(as: Int32.self))
    }

    @inlinable @inline(__always)
    public static func uint32(at p: UnsafeRawPointer) -> UInt32 {
        UInt32(bigEndian: p.loadUnaligned(as: UInt32.self))
    }

    @inlinable @inline(__always)
    public static func int16(at p: UnsafeRawPointer) -> Int16 {
        Int16(bigEndian: p.loadUnaligned(as: Int16.self))
    }
}
