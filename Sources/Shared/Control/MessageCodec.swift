// The one binary codec of pgswift's internal messages (control, limits, handoff, stats chunks and blobs, admin requests).
//
// Two field styles, both written and read here only:
// - fixed: big-endian u8/u32/u64 and u32-length-prefixed bytes or UTF-8 (control, limits, handoff, chunk headers);
// - compact: LEB128 varints, zigzag for signed, varint-length-prefixed UTF-8 (stats blobs, where most numbers are 0).
// Every message type keeps its own error type (`ControlDecodeError`, ...), so the reader is generic over it.

/// A decode error type a `MessageReader` can throw: it is built from a reason a person can read.
public protocol MessageDecodeFailure: Error {
    init(_ reason: String)
}

/// A value written as one fixed-style field by `MessageWriter.put`: integers big-endian, text and
/// bytes u32-length-prefixed, one-byte enums as their raw value.
public protocol MessageField {
    func write(to w: inout MessageWriter)
}

extension UInt8: MessageField {
    public func write(to w: inout MessageWriter) { w.u8(self) }
}

extension UInt32: MessageField {
    public func write(to w: inout MessageWriter) { w.u32(self) }
}

extension Int32: MessageField {
    public func write(to w: inout MessageWriter) { w.u32(UInt32(bitPattern: self)) }
}

extension UInt64: MessageField {
    public func write(to w: inout MessageWriter) { w.u64(self) }
}

extension Int64: MessageField {
    public func write(to w: inout MessageWriter) { w.u64(UInt64(bitPattern: self)) }
}

extension Bool: MessageField {
    public func write(to w: inout MessageWriter) { w.u8(self ? 1 : 0) }
}

extension String: MessageField {
    public func write(to w: inout MessageWriter) { w.string(self) }
}

extension [UInt8]: MessageField {
    public func write(to w: inout MessageWriter) { w.blob(self) }
}

extension MessageField where Self: RawRepresentable, RawValue == UInt8 {
    public func write(to w: inout MessageWriter) { w.u8(rawValue) }
}

/// Appends fields to one byte array (reserve once, append; no per-field allocation).
public struct MessageWriter {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Appends to `out`'s storage without copying it (`out` is empty until `finish(into:)`).
    public init(appendingTo out: inout [UInt8]) {
        bytes = out
        out = []
    }

    /// Hands the bytes back to the array given to `init(appendingTo:)`.
    public mutating func finish(into out: inout [UInt8]) {
        out = bytes
        bytes = []
    }

    /// Fixed-style fields in order (`w.put(Kind.ready, slot, pid)`).
    public mutating func put<each F: MessageField>(_ field: repeat each F) {
        repeat (each field).write(to: &self)
    }

    /// A u32 count, then the elements: what `MessageReader.array` reads.
    public mutating func array(_ elements: [some MessageField]) {
        u32(UInt32(truncatingIfNeeded: elements.count))
        for e in elements { e.write(to: &self) }
    }

    // MARK: fixed style

    public mutating func u8(_ v: UInt8) { bytes.append(v) }

    public mutating func u32(_ v: UInt32) {
        bytes.append(UInt8(truncatingIfNeeded: v >> 24))
        bytes.append(UInt8(truncatingIfNeeded: v >> 16))
        bytes.append(UInt8(truncatingIfNeeded: v >> 8))
        bytes.append(UInt8(truncatingIfNeeded: v))
    }

    public mutating func u64(_ v: UInt64) {
        u32(UInt32(truncatingIfNeeded: v >> 32))
        u32(UInt32(truncatingIfNeeded: v))
    }

    /// u32 length, then the bytes.
    public mutating func blob(_ b: some Collection<UInt8>) {
        u32(UInt32(truncatingIfNeeded: b.count))
        bytes.append(contentsOf: b)
    }

    /// u32 length, then the UTF-8.
    public mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { blob($0) }
    }

    /// Bytes as they are (no length): a nested encoding, or a payload that runs to the end.
    public mutating func raw(_ b: some Collection<UInt8>) { bytes.append(contentsOf: b) }

    // MARK: compact style

    public mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// Zigzag keeps small negative numbers small.
    public mutating func signed(_ v: Int64) {
        varint(UInt64(bitPattern: (v << 1) ^ (v >> 63)))
    }

    /// Varint length, then the UTF-8.
    public mutating func compactString(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            varint(UInt64(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }
}

/// Bounds-checked reader over bytes someone else owns (a received datagram), for `MessageWriter`'s
/// output. Every read throws `Failure` instead of trapping; `what` names the field in the reason.
public struct MessageReader<Failure: MessageDecodeFailure> {
    @usableFromInline var cursor: ByteReader

    public init(_ bytes: UnsafeRawBufferPointer) { cursor = ByteReader(bytes) }

    /// Runs `body` over `bytes`' storage (typed throws survive, unlike `withUnsafeBytes`' rethrows).
    public static func reading<R>(_ bytes: [UInt8], _ body: (inout MessageReader) throws(Failure) -> R) throws(Failure) -> R {
        let result: Result<R, Failure> = bytes.withUnsafeBytes { raw in
            var r = MessageReader(raw)
            do throws(Failure) { return .success(try body(&r)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    public var remaining: Int { cursor.remaining }
    public var isAtEnd: Bool { cursor.remaining == 0 }

    /// Refuses bytes left after the last field.
    public func expectEnd(_ what: String) throws(Failure) {
        guard isAtEnd else { throw Failure("\(remaining) unexpected trailing bytes after \(what)") }
    }

    // MARK: fixed style

    public mutating func u8(_ what: StaticString) throws(Failure) -> UInt8 {
        guard let v = cursor.readUInt8() else { throw Failure("truncated (\(what))") }
        return v
    }

    /// One byte that must be 0 or 1.
    public mutating func bool(_ what: StaticString) throws(Failure) -> Bool {
        switch try u8(what) {
        case 0: return false
        case 1: return true
        case let b: throw Failure("bad flag \(b) (\(what))")
        }
    }

    /// One byte that must be a raw value of `E`.
    public mutating func code<E: RawRepresentable>(_ type: E.Type, _ what: StaticString) throws(Failure) -> E
    where E.RawValue == UInt8 {
        let raw = try u8(what)
        guard let v = E(rawValue: raw) else { throw Failure("unknown \(what) \(raw)") }
        return v
    }

    public mutating func u32(_ what: StaticString) throws(Failure) -> UInt32 {
        guard let v = cursor.readUInt32() else { throw Failure("truncated (\(what))") }
        return v
    }

    public mutating func i32(_ what: StaticString) throws(Failure) -> Int32 {
        Int32(bitPattern: try u32(what))
    }

    public mutating func u64(_ what: StaticString) throws(Failure) -> UInt64 {
        let hi = try u32(what)
        return UInt64(hi) << 32 | UInt64(try u32(what))
    }

    /// A u32 element count that the bytes left could hold (each element takes at least
    /// `minimumEach` bytes), so a corrupt count cannot reserve gigabytes or loop for long.
    public mutating func count(_ what: StaticString, minimumEach: Int) throws(Failure) -> Int {
        try checked(count: UInt64(try u32(what)), what, minimumEach: minimumEach)
    }

    /// A u32 count (bounded as `count`, and by `maximum`), then that many elements read by `element`.
    public mutating func array<T>(_ what: StaticString, minimumEach: Int, maximum: Int = .max,
                                  _ element: (inout MessageReader) throws(Failure) -> T) throws(Failure) -> [T] {
        let n = try count(what, minimumEach: minimumEach)
        guard n <= maximum else { throw Failure("too many \(what) (\(n))") }
        return try elements(n, element)
    }

    /// `n` elements read by `element` (after a count read by `array` or `compactArray`).
    private mutating func elements<T>(_ n: Int, _ element: (inout MessageReader) throws(Failure) -> T) throws(Failure) -> [T] {
        var out: [T] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try element(&self)) }
        return out
    }

    /// The next `n` bytes, not copied.
    public mutating func bytes(_ n: Int, _ what: StaticString) throws(Failure) -> UnsafeRawBufferPointer {
        guard let b = cursor.readBytes(n) else { throw Failure("truncated (\(what))") }
        return b
    }

    /// u32 length, then that many bytes (copied).
    public mutating func blob(_ what: StaticString) throws(Failure) -> [UInt8] {
        Array(try bytes(Int(try u32(what)), what))
    }

    /// u32 length, then that much UTF-8 (invalid UTF-8 is refused).
    public mutating func string(_ what: StaticString) throws(Failure) -> String {
        try Self.text(try bytes(Int(try u32(what)), what), what)
    }

    /// Everything left (possibly nothing), not copied.
    public mutating func rest() -> UnsafeRawBufferPointer { cursor.readRest() }

    /// `raw` as UTF-8, refused when invalid.
    public static func text(_ raw: UnsafeRawBufferPointer, _ what: StaticString) throws(Failure) -> String {
        guard let s = String(validating: raw, as: UTF8.self) else { throw Failure("\(what) is not valid UTF-8") }
        return s
    }

    // MARK: compact style

    public mutating func varint(_ what: StaticString) throws(Failure) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8(what)
            if shift == 63 && b > 1 { throw Failure("varint overflow (\(what))") }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw Failure("varint too long (\(what))") }
        }
    }

    public mutating func signed(_ what: StaticString) throws(Failure) -> Int64 {
        let z = try varint(what)
        return Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1)))
    }

    /// A zigzag varint that must fit an Int32.
    public mutating func signed32(_ what: StaticString) throws(Failure) -> Int32 {
        let v = try signed(what)
        guard let r = Int32(exactly: v) else { throw Failure("value out of range (\(what))") }
        return r
    }

    /// A varint element count, bounded as `count(_:minimumEach:)`.
    public mutating func compactCount(_ what: StaticString, minimumEach: Int = 1) throws(Failure) -> Int {
        try checked(count: try varint(what), what, minimumEach: minimumEach)
    }

    /// A varint count (bounded as `compactCount`), then that many elements read by `element`: what
    /// `MessageWriter.compactArray` wrote.
    public mutating func compactArray<T>(_ what: StaticString, minimumEach: Int,
                                         _ element: (inout MessageReader) throws(Failure) -> T) throws(Failure) -> [T] {
        try elements(try compactCount(what, minimumEach: minimumEach), element)
    }

    /// Varint length, then that much UTF-8.
    public mutating func compactString(_ what: StaticString) throws(Failure) -> String {
        let n = try varint(what)
        guard n <= UInt64(remaining) else { throw Failure("truncated (\(what))") }
        return try Self.text(try bytes(Int(n), what), what)
    }

    private func checked(count n: UInt64, _ what: StaticString, minimumEach: Int) throws(Failure) -> Int {
        guard n <= UInt64(remaining / max(minimumEach, 1)) else {
            throw Failure("element count \(n) exceeds the data (\(what))")
        }
        return Int(n)
    }
}
