// Tests of the PostgreSQL v3 wire codec: buffers, framing, startup parsing, encoders and decoders.

import XCTest
import Shared

// MARK: helpers

/// Runs an encoder against a fresh OutBuffer and returns the bytes written.
private func encode(_ write: (inout OutBuffer) -> Void) -> [UInt8] {
    var out = OutBuffer(capacity: 4)
    defer { out.deallocate() }
    write(&out)
    return out.bytes
}

/// Checks a single message's type and length field and returns its body.
private func body(_ message: [UInt8], type: UInt8, file: StaticString = #filePath, line: UInt = #line) -> [UInt8] {
    guard message.count >= 5 else {
        XCTFail("message of \(message.count) bytes", file: file, line: line)
        return []
    }
    XCTAssertEqual(message[0], type, "type byte", file: file, line: line)
    let length = message.withUnsafeBytes { Int(ByteReader.int32(at: $0.baseAddress! + 1)) }
    XCTAssertEqual(length, message.count - 1, "length field", file: file, line: line)
    return Array(message[5...])
}

private func with<R>(_ bytes: [UInt8], _ f: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    try bytes.withUnsafeBytes(f)
}

private func be32(_ v: Int32) -> [UInt8] {
    let u = UInt32(bitPattern: v)
    return [UInt8(u >> 24), UInt8(truncatingIfNeeded: u >> 16), UInt8(truncatingIfNeeded: u >> 8), UInt8(truncatingIfNeeded: u)]
}

private func cstr(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

/// Parses a startup packet given as bytes, returning the result or the error.
private func parseStartup(_ bytes: [UInt8]) -> Result<StartupPacket, StartupParseError> {
    bytes.withUnsafeBytes { buf in
        do throws(StartupParseError) {
            return .success(try StartupPacket.parse(buf))
        } catch {
            return .failure(error)
        }
    }
}

private func startupBytes(version: Int32, _ tail: [UInt8]) -> [UInt8] {
    be32(Int32(8 + tail.count)) + be32(version) + tail
}

final class ProtocolBufferTests: XCTestCase {
    func testAppendBigEndianAndGrowth() {
        var out = OutBuffer(capacity: 0)
        defer { out.deallocate() }
        XCTAssertTrue(out.isEmpty)
        out.appendUInt8(0xAB)
        out.appendInt16(-2)
        out.appendInt32(0x0102_0304)
        out.appendUInt32(0xFFFF_FFFE)
        out.appendUInt16(0x0A0B)
        XCTAssertEqual(out.bytes, [0xAB, 0xFF, 0xFE, 1, 2, 3, 4, 0xFF, 0xFF, 0xFF, 0xFE, 0x0A, 0x0B])
        XCTAssertFalse(out.isEmpty)
        XCTAssertGreaterThanOrEqual(out.capacity, out.count)

        // Growth keeps content and stays geometric.
        var expected = out.bytes
        for i in 0..<10_000 {
            out.appendUInt8(UInt8(truncatingIfNeeded: i))
            expected.append(UInt8(truncatingIfNeeded: i))
        }
        XCTAssertEqual(out.bytes, expected)
        XCTAssertLessThan(out.capacity, 4 * expected.count)
    }

    func testStringsAndBytes() {
        let bytes = encode { out in
            out.appendString("hé")
            out.appendCString("ab")
            out.appendCString("")
            out.appendCString("x\u{0}y")              // stops at the embedded NUL
            out.appendBytes([1, 2])
            [UInt8]([3]).withUnsafeBytes { out.appendBytes($0) }
            out.appendBytes(UnsafeRawBufferPointer(start: nil, count: 0))
        }
        XCTAssertEqual(bytes, [0x68, 0xC3, 0xA9, 0x61, 0x62, 0, 0, 0x78, 0, 1, 2, 3])
    }

    func testClearRemoveFirstCountAndReuseAfterDeallocate() {
        var out = OutBuffer(capacity: 16)
        XCTAssertEqual(out.capacity, 16)
        out.appendBytes([1, 2, 3, 4, 5])
        out.removeFirst(2)
        XCTAssertEqual(out.bytes, [3, 4, 5])
        out.removeFirst(0)
        XCTAssertEqual(out.count, 3)
        out.removeFirst(3)
        XCTAssertTrue(out.isEmpty)

        // Filling through base + count, as a read(2) would.
        out.reserve(4)
        (out.base + out.count).storeBytes(of: 0x2A, as: UInt8.self)
        out.count += 1
        XCTAssertEqual(out.bytes, [0x2A])
        out.clear()
        XCTAssertEqual(out.count, 0)
        out.withUnsafeBytes { XCTAssertEqual($0.count, 0) }

        out.deallocate()
        XCTAssertEqual(out.capacity, 0)
        XCTAssertEqual(out.count, 0)
        out.appendCString("again")
        XCTAssertEqual(out.bytes, cstr("again"))
        out.deallocate()
        out.deallocate()                               // harmless when already empty
    }

    func testBeginEndMessage() {
        let bytes = encode { out in
            out.appendUInt8(0xEE)                      // something already queued
            let at = out.beginMessage(UInt8(ascii: "Q"))
            XCTAssertEqual(at, 2)
            out.appendCString("x")
            out.endMessage(at)
            let u = out.beginUntypedMessage()
            out.appendInt32(7)
            out.endMessage(u)
        }
        XCTAssertEqual(bytes, [0xEE, 0x51, 0, 0, 0, 6, 0x78, 0, 0, 0, 0, 8, 0, 0, 0, 7])
    }

    func testByteReader() {
        let bytes: [UInt8] = [0x01, 0xFF, 0xFE, 0x80, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF] + cstr("hi") + [9, 8, 7]
        with(bytes) { buf in
            var r = ByteReader(buf)
            XCTAssertEqual(r.remaining, bytes.count)
            XCTAssertEqual(r.readUInt8(), 1)
            XCTAssertEqual(r.readInt16(), -2)
            XCTAssertEqual(r.readInt32(), Int32(bitPattern: 0x8000_0001))
            XCTAssertEqual(r.readUInt32(), 0xFFFF_FFFF)
            XCTAssertEqual(r.readCString(), "hi")
            XCTAssertNil(r.readCString())              // no NUL left: nothing consumed
            XCTAssertEqual(r.remaining, 3)
            XCTAssertNil(r.readBytes(-1))
            XCTAssertNil(r.readBytes(4))
            XCTAssertNil(r.readInt32())
            XCTAssertEqual(r.readBytes(0)?.count, 0)
            XCTAssertEqual(r.readBytes(1).map { [UInt8]($0) }, [9])
            XCTAssertEqual([UInt8](r.readRest()), [8, 7])
            XCTAssertEqual(r.remaining, 0)
            XCTAssertNil(r.readUInt8())
            XCTAssertEqual(r.readRest().count, 0)
        }
        var empty = ByteReader(UnsafeRawBufferPointer(start: nil, count: 0))
        XCTAssertNil(empty.readUInt8())
        XCTAssertNil(empty.readCString())
        XCTAssertEqual(empty.readRest().count, 0)
    }

    func testUnalignedLoads() {
        with([0, 0x12, 0x34, 0x56, 0x78, 0x9A]) { buf in
            XCTAssertEqual(ByteReader.int32(at: buf.baseAddress! + 1), 0x1234_5678)
            XCTAssertEqual(ByteReader.uint32(at: buf.baseAddress! + 2), 0x3456_789A)
            XCTAssertEqual(ByteReader.int16(at: buf.baseAddress! + 1), 0x1234)
        }
    }
}

final class ProtocolFramingTests: XCTestCase {
    private func peek(_ bytes: [UInt8], max: Int = 1 << 20) -> FrameResult {
        with(bytes) { Wire.peekHeader($0.baseAddress!, available: $0.count, maxLength: max) }
    }

    func testHeaderAndIncomplete() {
        for n in 1..<5 {
            XCTAssertEqual(peek(Array([UInt8(ascii: "Z"), 0, 0, 0, 5].prefix(n))), .incomplete)
        }
        // The header is reported as soon as its 5 bytes are present, body or not.
        guard case .header(let h) = peek([UInt8(ascii: "Z"), 0, 0, 0, 5]) else { return XCTFail() }
        XCTAssertEqual(h, MessageHeader(type: BackendType.readyForQuery, length: 5))
        XCTAssertEqual(h.frameLength, 6)
        XCTAssertEqual(h.bodyLength, 1)
        XCTAssertEqual(peek([UInt8(ascii: "S"), 0, 0, 0, 4]), .header(MessageHeader(type: FrontendType.sync, length: 4)))
        XCTAssertEqual(peek([0x51, 0, 0, 0x10, 0], max: 4096), .header(MessageHeader(type: 0x51, length: 4096)))
    }

    func testInvalidLengths() {
        for bytes: [UInt8] in [[0x51, 0, 0, 0, 3], [0x51, 0, 0, 0, 0], [0x51, 0xFF, 0xFF, 0xFF, 0xFF],
                               [0x51, 0x80, 0, 0, 0], [0x51, 0, 0, 0x10, 1], [0x01, 0x7F, 0xFF, 0xFF, 0xFF]] {
            guard case .invalid(let h) = peek(bytes, max: 4096) else {
                return XCTFail("\(bytes) accepted")
            }
            XCTAssertEqual(h.type, bytes[0])
            XCTAssertFalse(Wire.invalidLengthReason(h, maxLength: 4096).isEmpty)
        }
        guard case .invalid(let h) = peek([0x51, 0, 0, 0, 3]) else { return XCTFail() }
        let reason = Wire.invalidLengthReason(h, maxLength: 1 << 20)
        XCTAssertTrue(reason.contains("'Q'") && reason.contains("minimum is 4"), reason)
        guard case .invalid(let big) = peek([0x51, 0, 0, 0x10, 1], max: 4096) else { return XCTFail() }
        XCTAssertTrue(Wire.invalidLengthReason(big, maxLength: 4096).contains("exceeds the limit of 4096"))
    }

    func testScanningAStream() {
        var out = OutBuffer(capacity: 64)
        defer { out.deallocate() }
        out.appendEmptyMessage(BackendType.parseComplete)
        Backend.commandComplete(into: &out, tag: "SELECT 1")
        Backend.readyForQuery(into: &out, status: Wire.TransactionStatus.idle)
        var types: [UInt8] = []
        out.withUnsafeBytes { buf in
            var offset = 0
            while offset < buf.count {
                guard case .header(let h) = Wire.peekHeader(buf.baseAddress! + offset, available: buf.count - offset,
                                                              maxLength: 1 << 20) else { return XCTFail() }
                XCTAssertLessThanOrEqual(offset + h.frameLength, buf.count)
                types.append(h.type)
                offset += h.frameLength
            }
            XCTAssertEqual(offset, buf.count)
        }
        XCTAssertEqual(types, [BackendType.parseComplete, BackendType.commandComplete, BackendType.readyForQuery])
    }

    func testTypeBytes() {
        XCTAssertEqual(BackendType.readyForQuery, 0x5A)
        XCTAssertEqual(BackendType.negotiateProtocolVersion, UInt8(ascii: "v"))
        XCTAssertEqual(FrontendType.password, UInt8(ascii: "p"))
        XCTAssertEqual(Wire.protocolVersion3, 3 << 16)
        XCTAssertEqual(Wire.sslRequestCode, 1234 << 16 | 5679)
        XCTAssertEqual(Wire.gssEncRequestCode, 1234 << 16 | 5680)
        XCTAssertEqual(Wire.cancelRequestCode, 1234 << 16 | 5678)
    }
}

final class ProtocolStartupTests: XCTestCase {
    func testStartupHandVectorAndRoundTrip() throws {
        let bytes = encode { Frontend.startupMessage(into: &$0, parameters: [("user", "bob"), ("database", "db")]) }
        let expected: [UInt8] = [0, 0, 0, 30, 0, 3, 0, 0]
            + [0x75, 0x73, 0x65, 0x72, 0, 0x62, 0x6F, 0x62, 0]                       // user\0bob\0
            + [0x64, 0x61, 0x74, 0x61, 0x62, 0x61, 0x73, 0x65, 0, 0x64, 0x62, 0]     // database\0db\0
            + [0]
        XCTAssertEqual(bytes, expected)
        XCTAssertEqual(with(bytes) { StartupPacket.peekLength($0.baseAddress!, available: $0.count) }, 30)

        guard case .success(.startup(let m)) = parseStartup(bytes) else { return XCTFail() }
        XCTAssertEqual(m.majorVersion, 3)
        XCTAssertEqual(m.minorVersion, 0)
        XCTAssertEqual(m.parameters.map { $0.name }, ["user", "database"])
        XCTAssertEqual(m.value("user"), "bob")
        XCTAssertEqual(m.value("database"), "db")
        XCTAssertNil(m.value("options"))
        XCTAssertEqual(m.unrecognizedProtocolOptions, [])

        // Extra bytes after the declared length belong to the next packet and are ignored.
        guard case .success(.startup) = parseStartup(bytes + [0x51, 0, 0]) else { return XCTFail() }
    }

    func testEmptyParameterListAndRepeatedName() {
        guard case .success(.startup(let m)) = parseStartup(startupBytes(version: Wire.protocolVersion3, [0])) else {
            return XCTFail()
        }
        XCTAssertTrue(m.parameters.isEmpty)                // missing user is the worker's business
        let tail = cstr("user") + cstr("a") + cstr("user") + cstr("b") + cstr("application_name") + cstr("") + [0]
        guard case .success(.startup(let m2)) = parseStartup(startupBytes(version: Wire.protocolVersion3, tail)) else {
            return XCTFail()
        }
        XCTAssertEqual(m2.value("user"), "b")
        XCTAssertEqual(m2.value("application_name"), "")
    }

    func testSpecialRequests() {
        let ssl = encode { Frontend.sslRequest(into: &$0) }
        XCTAssertEqual(ssl, [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F])
        guard case .success(.sslRequest) = parseStartup(ssl) else { return XCTFail() }

        let gss = encode { Frontend.gssEncRequest(into: &$0) }
        XCTAssertEqual(gss, [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x30])
        guard case .success(.gssEncRequest) = parseStartup(gss) else { return XCTFail() }

        let cancel = encode { Frontend.cancelRequest(into: &$0, processID: 4242, secretKey: 0xDEAD_BEEF) }
        XCTAssertEqual(cancel, [0, 0, 0, 16, 0x04, 0xD2, 0x16, 0x2E, 0, 0, 0x10, 0x92, 0xDE, 0xAD, 0xBE, 0xEF])
        guard case .success(.cancel(let pid, let key)) = parseStartup(cancel) else { return XCTFail() }
        XCTAssertEqual(pid, 4242)
        XCTAssertEqual(key, 0xDEAD_BEEF)

        // Wrong sizes for fixed-size requests (e.g. a 3.2 cancel with a 32-byte key).
        for bad in [be32(12) + be32(Wire.sslRequestCode) + [0, 0, 0, 0],
                    be32(9) + be32(Wire.gssEncRequestCode) + [0],
                    be32(44) + be32(Wire.cancelRequestCode) + be32(1) + [UInt8](repeating: 7, count: 32),
                    be32(12) + be32(Wire.cancelRequestCode) + be32(1)] {
            guard case .failure(.malformed) = parseStartup(bad) else { return XCTFail("\(bad) accepted") }
        }
    }

    func testLengthLimits() {
        // A 1 GB length header: refused from the 8 bytes at hand, nothing else is read or allocated.
        XCTAssertEqual(parseStartupError([0x40, 0, 0, 0, 0, 3, 0, 0]), .tooLong(1 << 30))
        XCTAssertEqual(parseStartupError(be32(10_001) + be32(Wire.protocolVersion3)), .tooLong(10_001))
        XCTAssertEqual(parseStartupError(be32(7) + be32(Wire.protocolVersion3)), .tooShort(7))
        XCTAssertEqual(parseStartupError(be32(4)), .tooShort(4))
        XCTAssertEqual(parseStartupError(be32(-1) + be32(Wire.protocolVersion3)), .tooShort(-1))
        XCTAssertEqual(parseStartupError([0, 0]), .tooShort(2))
        XCTAssertEqual(parseStartupError([]), .tooShort(0))
        // Declared longer than the bytes given.
        guard case .malformed = parseStartupError(be32(20) + be32(Wire.protocolVersion3)) else { return XCTFail() }

        // Exactly at the limit is fine.
        let big = cstr("user") + cstr(String(repeating: "u", count: 10_000 - 8 - 5 - 2)) + [0]
        XCTAssertEqual(big.count + 8, 10_000)
        guard case .success(.startup(let m)) = parseStartup(startupBytes(version: Wire.protocolVersion3, big)) else {
            return XCTFail()
        }
        XCTAssertEqual(m.value("user")?.count, 10_000 - 15)

        XCTAssertNil([0, 0, 0].withUnsafeBytes { StartupPacket.peekLength($0.baseAddress!, available: 3) })
        XCTAssertEqual([0x40, 0, 0, 0].withUnsafeBytes { StartupPacket.peekLength($0.baseAddress!, available: 4) }, 1 << 30)
        XCTAssertThrowsError(try StartupPacket.checkLength(1 << 30))
        XCTAssertThrowsError(try StartupPacket.checkLength(7))
        XCTAssertNoThrow(try StartupPacket.checkLength(8))
        XCTAssertNoThrow(try StartupPacket.checkLength(10_000))
    }

    func testMalformedParameters() {
        let v3 = Wire.protocolVersion3
        let cases: [[UInt8]] = [
            [],                                               // no terminator at all
            cstr("user") + cstr("bob"),                       // missing final terminator
            cstr("user"),                                     // name without value
            cstr("user") + Array("bob".utf8),                 // value without NUL
            cstr("user") + cstr("bob") + [0, 0],              // bytes after the terminator
            cstr("user") + cstr("bob") + [0] + cstr("x"),
        ]
        for tail in cases {
            let result = parseStartupError(startupBytes(version: v3, tail))
            guard case .malformed(let why)? = result else { return XCTFail("\(tail): \(String(describing: result))") }
            XCTAssertFalse(why.isEmpty)
            XCTAssertTrue(StartupParseError.malformed(why).description.contains(why))
        }
    }

    func testVersions() {
        let params = cstr("user") + cstr("u") + [0]
        guard case .success(.unsupportedVersion(2, 0)) = parseStartup(startupBytes(version: 2 << 16, params)) else {
            return XCTFail()
        }
        guard case .success(.unsupportedVersion(4, 0)) = parseStartup(startupBytes(version: 4 << 16, params)) else {
            return XCTFail()
        }
        guard case .success(.unsupportedVersion(1234, 5681)) = parseStartup(startupBytes(version: 1234 << 16 | 5681, [])) else {
            return XCTFail()
        }
        guard case .success(.startup(let m)) = parseStartup(startupBytes(version: 3 << 16 | 2, params)) else {
            return XCTFail()
        }
        XCTAssertEqual(m.majorVersion, 3)
        XCTAssertEqual(m.minorVersion, 2)
        XCTAssertEqual(m.value("user"), "u")
    }

    func testProtocolOptions() {
        let tail = cstr("user") + cstr("u") + cstr("_pq_.compression") + cstr("on") + cstr("_pq_.x") + cstr("") + [0]
        guard case .success(.startup(let m)) = parseStartup(startupBytes(version: Wire.protocolVersion3, tail)) else {
            return XCTFail()
        }
        XCTAssertEqual(m.unrecognizedProtocolOptions, ["_pq_.compression", "_pq_.x"])
        XCTAssertEqual(m.parameters.count, 1)
        XCTAssertNil(m.value("_pq_.compression"))
    }

    func testErrorDescriptions() {
        XCTAssertTrue(StartupParseError.tooLong(1 << 30).description.contains("1073741824"))
        XCTAssertTrue(StartupParseError.tooShort(3).description.contains("3"))
    }

    private func parseStartupError(_ bytes: [UInt8]) -> StartupParseError? {
        if case .failure(let e) = parseStartup(bytes) { return e }
        return nil
    }
}

final class ProtocolBackendMessageTests: XCTestCase {
    func testErrorResponseHandVector() {
        let e = ErrorFields(severity: "FATAL", code: SQLState.invalidPassword, message: "bad", detail: "d", hint: nil)
        let bytes = encode { Backend.errorResponse(into: &$0, e) }
        let expectedBody: [UInt8] = [0x53] + cstr("FATAL") + [0x56] + cstr("FATAL") + [0x43] + cstr("28P01")
            + [0x4D] + cstr("bad") + [0x44] + cstr("d") + [0]
        XCTAssertEqual(bytes, [0x45] + be32(Int32(4 + expectedBody.count)) + expectedBody)
        XCTAssertEqual(bytes.count, 35)
        XCTAssertEqual(with(body(bytes, type: BackendType.errorResponse)) { ErrorFields.parse($0) }, e)
    }

    func testErrorAndNoticeRoundTrip() {
        let full = ErrorFields(severity: "ERROR", code: SQLState.protocolViolation, message: "m é",
                               detail: "detail", hint: "hint")
        let minimal = ErrorFields(severity: "WARNING", code: SQLState.warning, message: "")
        for e in [full, minimal] {
            let err = encode { Backend.errorResponse(into: &$0, e) }
            XCTAssertEqual(with(body(err, type: BackendType.errorResponse)) { Decode.errorFields($0) }, e)
            let notice = encode { Backend.noticeResponse(into: &$0, e) }
            XCTAssertEqual(with(body(notice, type: BackendType.noticeResponse)) { ErrorFields.parse($0) }, e)
        }
    }

    func testErrorFieldsParsingDetails() {
        // Localised S only (pre-9.6 servers), unknown fields skipped.
        let old = [0x53] + cstr("FEHLER") + [0x43] + cstr("42601") + [0x4D] + cstr("Syntax") + [0x50] + cstr("12") + [0]
        XCTAssertEqual(with(old) { ErrorFields.parse($0) },
                       ErrorFields(severity: "FEHLER", code: "42601", message: "Syntax"))
        // V wins over S whatever the order.
        let both = [0x56] + cstr("ERROR") + [0x53] + cstr("FEHLER") + [0]
        XCTAssertEqual(with(both) { ErrorFields.parse($0) }?.severity, "ERROR")
        // Missing terminator, unterminated field, trailing bytes.
        XCTAssertNil(with([0x53] + cstr("ERROR")) { ErrorFields.parse($0) })
        XCTAssertNil(with([0x53, 0x45]) { ErrorFields.parse($0) })
        XCTAssertNil(with([0, 0]) { ErrorFields.parse($0) })
        XCTAssertNil(with([]) { ErrorFields.parse($0) })
        XCTAssertEqual(with([0]) { ErrorFields.parse($0) }, ErrorFields(severity: "", code: "", message: ""))
    }

    func testReadyForQueryHandVector() {
        XCTAssertEqual(encode { Backend.readyForQuery(into: &$0, status: Wire.TransactionStatus.idle) },
                       [0x5A, 0, 0, 0, 5, 0x49])
        for s in [Wire.TransactionStatus.idle, Wire.TransactionStatus.inTransaction, Wire.TransactionStatus.failed] {
            let b = body(encode { Backend.readyForQuery(into: &$0, status: s) }, type: BackendType.readyForQuery)
            XCTAssertEqual(with(b) { ReadyForQuery.parse($0) }, s)
            XCTAssertEqual(with(b) { Decode.readyForQuery($0) }, s)
        }
        XCTAssertNil(with([0x58]) { ReadyForQuery.parse($0) })
        XCTAssertNil(with([]) { ReadyForQuery.parse($0) })
        XCTAssertNil(with([0x49, 0x49]) { ReadyForQuery.parse($0) })
    }

    func testAuthenticationSASLHandVector() {
        let bytes = encode { Backend.authenticationSASL(into: &$0, mechanisms: ["SCRAM-SHA-256"]) }
        let expected: [UInt8] = [0x52, 0, 0, 0, 23, 0, 0, 0, 10]
            + [0x53, 0x43, 0x52, 0x41, 0x4D, 0x2D, 0x53, 0x48, 0x41, 0x2D, 0x32, 0x35, 0x36, 0] + [0]
        XCTAssertEqual(bytes, expected)
        XCTAssertEqual(with(body(bytes, type: BackendType.authentication)) { AuthenticationRequest.parse($0) },
                       .sasl(mechanisms: ["SCRAM-SHA-256"]))
        let two = encode { Backend.authenticationSASL(into: &$0, mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]) }
        XCTAssertEqual(with(body(two, type: BackendType.authentication)) { Decode.authentication($0) },
                       .sasl(mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]))
    }

    func testAuthenticationRoundTrips() {
        func roundTrip(_ write: (inout OutBuffer) -> Void) -> AuthenticationRequest? {
            with(body(encode(write), type: BackendType.authentication)) { AuthenticationRequest.parse($0) }
        }
        XCTAssertEqual(encode { Backend.authenticationOk(into: &$0) }, [0x52, 0, 0, 0, 8, 0, 0, 0, 0])
        XCTAssertEqual(roundTrip { Backend.authenticationOk(into: &$0) }, .ok)
        XCTAssertEqual(roundTrip { Backend.authenticationCleartextPassword(into: &$0) }, .cleartextPassword)
        XCTAssertEqual(encode { Backend.authenticationMD5Password(into: &$0, salt: (1, 2, 3, 4)) },
                       [0x52, 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4])
        XCTAssertEqual(roundTrip { Backend.authenticationMD5Password(into: &$0, salt: [9, 8, 7, 6]) },
                       .md5Password(salt: [9, 8, 7, 6]))
        let data = Array("r=abc,s=xyz,i=4096".utf8)
        XCTAssertEqual(roundTrip { Backend.authenticationSASLContinue(into: &$0, data: data) }, .saslContinue(data: data))
        XCTAssertEqual(roundTrip { Backend.authenticationSASLFinal(into: &$0, data: data) }, .saslFinal(data: data))
        XCTAssertEqual(roundTrip { Backend.authenticationSASLFinal(into: &$0, data: []) }, .saslFinal(data: []))
    }

    func testAuthenticationMalformed() {
        XCTAssertEqual(with(be32(7)) { AuthenticationRequest.parse($0) }, .unsupported(code: 7))
        XCTAssertEqual(with(be32(2)) { AuthenticationRequest.parse($0) }, .unsupported(code: 2))
        XCTAssertNil(with([0, 0, 0]) { AuthenticationRequest.parse($0) })
        XCTAssertNil(with(be32(0) + [0]) { AuthenticationRequest.parse($0) })
        XCTAssertNil(with(be32(3) + [0]) { AuthenticationRequest.parse($0) })
        XCTAssertNil(with(be32(5) + [1, 2, 3]) { AuthenticationRequest.parse($0) })
        XCTAssertNil(with(be32(5) + [1, 2, 3, 4, 5]) { AuthenticationRequest.parse($0) })
        XCTAssertNil(with(be32(10) + cstr("SCRAM-SHA-256")) { AuthenticationRequest.parse($0) })  // no list end
        XCTAssertNil(with(be32(10) + cstr("A") + [0, 1]) { AuthenticationRequest.parse($0) })
        XCTAssertEqual(with(be32(10) + [0]) { AuthenticationRequest.parse($0) }, .sasl(mechanisms: []))
    }

    func testSessionSetupMessages() {
        let ps = encode { Backend.parameterStatus(into: &$0, name: "server_version", value: "17.2") }
        XCTAssertEqual(ps, [0x53] + be32(24) + cstr("server_version") + cstr("17.2"))
        let p = with(body(ps, type: BackendType.parameterStatus)) { ParameterStatus.parse($0) }
        XCTAssertEqual(p?.name, "server_version")
        XCTAssertEqual(p?.value, "17.2")
        XCTAssertEqual(with(body(ps, type: BackendType.parameterStatus)) { Decode.parameterStatus($0) }?.value, "17.2")
        XCTAssertNil(with(cstr("a")) { ParameterStatus.parse($0) })
        XCTAssertNil(with(cstr("a") + cstr("b") + [1]) { ParameterStatus.parse($0) })

        let kd = encode { Backend.backendKeyData(into: &$0, processID: -5, secretKey: 0x8000_0001) }
        XCTAssertEqual(kd, [0x4B, 0, 0, 0, 12, 0xFF, 0xFF, 0xFF, 0xFB, 0x80, 0, 0, 1])
        let k = with(body(kd, type: BackendType.backendKeyData)) { BackendKeyData.parse($0) }
        XCTAssertEqual(k?.processID, -5)
        XCTAssertEqual(k?.secretKey, 0x8000_0001)
        XCTAssertEqual(with(body(kd, type: BackendType.backendKeyData)) { Decode.backendKeyData($0) }?.processID, -5)
        // Protocol 3.2 keys: 4...256 bytes.
        let longKey = be32(77) + (1...32).map { UInt8($0) }
        XCTAssertEqual(with(longKey) { BackendKeyData.parse($0) }?.secretKey, 0x0102_0304)
        XCTAssertEqual(with(longKey) { BackendKeyData.parseFull($0) }?.secretKeyBytes, (1...32).map { UInt8($0) })
        XCTAssertEqual(with(longKey) { BackendKeyData.parseFull($0) }?.processID, 77)
        XCTAssertNil(with(be32(1) + [1, 2, 3]) { BackendKeyData.parse($0) })
        XCTAssertNil(with(be32(1) + [UInt8](repeating: 0, count: 257)) { BackendKeyData.parse($0) })
        XCTAssertNil(with(be32(1) + [UInt8](repeating: 0, count: 257)) { BackendKeyData.parseFull($0) })
        XCTAssertNotNil(with(be32(1) + [UInt8](repeating: 0, count: 256)) { BackendKeyData.parseFull($0) })
    }

    func testNegotiateProtocolVersion() {
        let bytes = encode { Backend.negotiateProtocolVersion(into: &$0, newestMinor: 0, unrecognized: ["_pq_.a"]) }
        XCTAssertEqual(bytes, [0x76] + be32(19) + [0, 3, 0, 0] + be32(1) + cstr("_pq_.a"))
        let n = with(body(bytes, type: BackendType.negotiateProtocolVersion)) { Decode.negotiateProtocolVersion($0) }
        XCTAssertEqual(n?.newestMinor, 0)
        XCTAssertEqual(n?.unrecognized, ["_pq_.a"])
        let n2 = with(body(encode { Backend.negotiateProtocolVersion(into: &$0, newestMinor: 2, unrecognized: []) },
                           type: BackendType.negotiateProtocolVersion)) { Decode.negotiateProtocolVersion($0) }
        XCTAssertEqual(n2?.newestMinor, 2)
        XCTAssertEqual(n2?.unrecognized, [])
        XCTAssertNil(with(be32(3 << 16) + be32(2) + cstr("x")) { Decode.negotiateProtocolVersion($0) })
        XCTAssertNil(with(be32(3 << 16) + be32(-1)) { Decode.negotiateProtocolVersion($0) })
    }

    func testQueryResultMessages() {
        let cc = encode { Backend.commandComplete(into: &$0, tag: "SHOW") }
        XCTAssertEqual(cc, [0x43, 0, 0, 0, 9] + cstr("SHOW"))
        XCTAssertEqual(with(body(cc, type: BackendType.commandComplete)) { Decode.commandComplete($0) }, "SHOW")
        XCTAssertNil(with(Array("SHOW".utf8)) { Decode.commandComplete($0) })

        XCTAssertEqual(encode { $0.appendEmptyMessage(BackendType.emptyQueryResponse) }, [0x49, 0, 0, 0, 4])
        XCTAssertEqual(encode { $0.appendEmptyMessage(BackendType.parseComplete) }, [0x31, 0, 0, 0, 4])
        XCTAssertEqual(encode { $0.appendEmptyMessage(BackendType.bindComplete) }, [0x32, 0, 0, 0, 4])
        XCTAssertEqual(encode { $0.appendEmptyMessage(BackendType.closeComplete) }, [0x33, 0, 0, 0, 4])
        XCTAssertEqual(encode { $0.appendEmptyMessage(BackendType.noData) }, [0x6E, 0, 0, 0, 4])

        let rd = encode { Backend.rowDescription(into: &$0, columns: [(name: "a", typeOID: Backend.TypeOID.int4)]) }
        XCTAssertEqual(rd, [0x54] + be32(26) + [0, 1] + cstr("a") + be32(0) + [0, 0] + be32(23) + [0, 4]
                           + be32(-1) + [0, 0])
        let cols: [(name: String, typeOID: Int32)] = [(name: "database", typeOID: Backend.TypeOID.text),
                                                      (name: "cl_active", typeOID: Backend.TypeOID.int8),
                                                      (name: "n", typeOID: Backend.TypeOID.numeric)]
        let rd2 = encode { Backend.rowDescription(into: &$0, columns: cols) }
        let decoded = with(body(rd2, type: BackendType.rowDescription)) { Decode.rowDescription($0) }
        XCTAssertEqual(decoded?.map { $0.name }, cols.map { $0.name })
        XCTAssertEqual(decoded?.map { $0.typeOID }, cols.map { $0.typeOID })
        XCTAssertEqual(with(body(encode { Backend.rowDescription(into: &$0, columns: []) }, type: BackendType.rowDescription)) {
            Decode.rowDescription($0)
        }?.count, 0)

        let dr = encode { Backend.dataRow(into: &$0, ["ab", nil, ""]) }
        XCTAssertEqual(dr, [0x44] + be32(20) + [0, 3] + be32(2) + [0x61, 0x62] + be32(-1) + be32(0))
        let values = with(body(dr, type: BackendType.dataRow)) { Decode.dataRowText($0) }
        XCTAssertEqual(values, ["ab", nil, ""])
        XCTAssertNil(with([0, 1] + be32(5) + [1]) { Decode.dataRow($0) })
        XCTAssertNil(with([0, 1] + be32(0) + [1]) { Decode.dataRow($0) })
    }

    func testTypeLengths() {
        XCTAssertEqual(Backend.TypeOID.typeLength(Backend.TypeOID.int8), 8)
        XCTAssertEqual(Backend.TypeOID.typeLength(Backend.TypeOID.text), -1)
        XCTAssertEqual(Backend.TypeOID.typeLength(Backend.TypeOID.bool), 1)
        XCTAssertEqual(Backend.TypeOID.typeLength(Backend.TypeOID.oid), 4)
        XCTAssertEqual(Backend.TypeOID.typeLength(Backend.TypeOID.name), 64)
        XCTAssertEqual(Backend.TypeOID.typeLength(Backend.TypeOID.numeric), -1)
        XCTAssertEqual(Backend.sslAccepted, UInt8(ascii: "S"))
        XCTAssertEqual(Backend.sslRefused, UInt8(ascii: "N"))
    }
}

final class ProtocolFrontendMessageTests: XCTestCase {
    func testPasswordMessages() {
        let pw = encode { Frontend.passwordMessage(into: &$0, password: "md5abc") }
        XCTAssertEqual(pw, [0x70] + be32(11) + cstr("md5abc"))
        XCTAssertEqual(with(body(pw, type: FrontendType.password)) { Decode.passwordCleartext($0) }, "md5abc")
        XCTAssertNil(with(cstr("a") + [0]) { Decode.passwordCleartext($0) })
        XCTAssertNil(with(Array("a".utf8)) { Decode.passwordCleartext($0) })
    }

    func testSASLMessages() {
        let first = Array("n,,n=,r=abcdef".utf8)
        let ir = encode { Frontend.saslInitialResponse(into: &$0, mechanism: "SCRAM-SHA-256", data: first) }
        XCTAssertEqual(ir, [0x70] + be32(Int32(4 + 14 + 4 + first.count)) + cstr("SCRAM-SHA-256")
                           + be32(Int32(first.count)) + first)
        let parsed = with(body(ir, type: FrontendType.password)) { SASLInitialResponse.parse($0) }
        XCTAssertEqual(parsed?.mechanism, "SCRAM-SHA-256")
        XCTAssertEqual(parsed?.data, first)
        XCTAssertEqual(with(body(ir, type: FrontendType.password)) { Decode.saslInitialResponse($0) }?.data, first)

        let none = encode { Frontend.saslInitialResponse(into: &$0, mechanism: "M", data: nil) }
        XCTAssertEqual(none, [0x70] + be32(10) + cstr("M") + be32(-1))
        let parsedNone = with(body(none, type: FrontendType.password)) { SASLInitialResponse.parse($0) }
        XCTAssertEqual(parsedNone?.mechanism, "M")
        XCTAssertEqual(parsedNone?.data, [])

        XCTAssertNil(with(cstr("M") + be32(3) + [1, 2]) { SASLInitialResponse.parse($0) })
        XCTAssertNil(with(cstr("M") + be32(1) + [1, 2]) { SASLInitialResponse.parse($0) })
        XCTAssertNil(with(cstr("M") + be32(-1) + [1]) { SASLInitialResponse.parse($0) })
        XCTAssertNil(with(cstr("M") + be32(-2)) { SASLInitialResponse.parse($0) })
        XCTAssertNil(with(cstr("M") + [0, 0]) { SASLInitialResponse.parse($0) })

        let final = Array("c=biws,r=abc,p=xyz".utf8)
        let resp = encode { Frontend.saslResponse(into: &$0, data: final) }
        XCTAssertEqual(with(body(resp, type: FrontendType.password)) { Decode.saslResponse($0) }, final)
    }

    func testSimpleQueryAndControl() {
        let q = encode { Frontend.query(into: &$0, sql: "SELECT 1") }
        XCTAssertEqual(q, [0x51] + be32(13) + cstr("SELECT 1"))
        XCTAssertEqual(with(body(q, type: FrontendType.query)) { Decode.query($0) }, "SELECT 1")
        XCTAssertNil(with(cstr("a") + cstr("b")) { Decode.query($0) })
        XCTAssertNil(with([]) { Decode.query($0) })

        XCTAssertEqual(encode { $0.appendEmptyMessage(FrontendType.terminate) }, [0x58, 0, 0, 0, 4])
        XCTAssertEqual(encode { $0.appendEmptyMessage(FrontendType.sync) }, [0x53, 0, 0, 0, 4])
        XCTAssertEqual(encode { $0.appendEmptyMessage(FrontendType.flush) }, [0x48, 0, 0, 0, 4])
        XCTAssertEqual(encode { $0.appendEmptyMessage(FrontendType.copyDone) }, [0x63, 0, 0, 0, 4])
        XCTAssertEqual(encode { Frontend.copyFail(into: &$0, message: "no") }, [0x66] + be32(7) + cstr("no"))
    }

    func testExtendedQueryMessages() {
        let p = encode { Frontend.parse(into: &$0, name: "s1", query: "SELECT $1", parameterTypes: [23]) }
        XCTAssertEqual(p, [0x50] + be32(23) + cstr("s1") + cstr("SELECT $1") + [0, 1] + be32(23))
        let parsed = with(body(p, type: FrontendType.parse)) { Decode.parse($0) }
        XCTAssertEqual(parsed?.name, "s1")
        XCTAssertEqual(parsed?.query, "SELECT $1")
        XCTAssertEqual(parsed?.parameterTypes, [23])
        let unnamed = with(body(encode { Frontend.parse(into: &$0, name: "", query: "SELECT 1") }, type: FrontendType.parse)) {
            Decode.parse($0)
        }
        XCTAssertEqual(unnamed?.name, "")
        XCTAssertEqual(unnamed?.parameterTypes, [])
        XCTAssertNil(with(cstr("s") + cstr("q") + [0, 1]) { Decode.parse($0) })

        let b = encode { Frontend.bind(into: &$0, portal: "", statement: "s1", parameters: ["42", nil]) }
        XCTAssertEqual(b, [0x42] + be32(24) + cstr("") + cstr("s1") + [0, 0] + [0, 2] + be32(2) + [0x34, 0x32]
                          + be32(-1) + [0, 0])
        let names = with(body(b, type: FrontendType.bind)) { Decode.bindNames($0) }
        XCTAssertEqual(names?.portal, "")
        XCTAssertEqual(names?.statement, "s1")
        XCTAssertEqual(encode { Frontend.bind(into: &$0, portal: "p", statement: "") },
                       [0x42] + be32(13) + cstr("p") + cstr("") + [0, 0, 0, 0, 0, 0])

        let e = encode { Frontend.execute(into: &$0, portal: "p", maxRows: 10) }
        XCTAssertEqual(e, [0x45] + be32(10) + cstr("p") + be32(10))
        let ex = with(body(e, type: FrontendType.execute)) { Decode.execute($0) }
        XCTAssertEqual(ex?.portal, "p")
        XCTAssertEqual(ex?.maxRows, 10)

        let d = encode { Frontend.describe(into: &$0, kind: Frontend.statementKind, name: "s1") }
        XCTAssertEqual(d, [0x44] + be32(8) + [0x53] + cstr("s1"))
        let dd = with(body(d, type: FrontendType.describe)) { Decode.describeOrClose($0) }
        XCTAssertEqual(dd?.kind, Frontend.statementKind)
        XCTAssertEqual(dd?.name, "s1")

        let c = encode { Frontend.close(into: &$0, kind: Frontend.portalKind, name: "") }
        XCTAssertEqual(c, [0x43] + be32(6) + [0x50, 0])
        let cc = with(body(c, type: FrontendType.close)) { Decode.describeOrClose($0) }
        XCTAssertEqual(cc?.kind, Frontend.portalKind)
        XCTAssertEqual(cc?.name, "")
        XCTAssertNil(with([0x58] + cstr("x")) { Decode.describeOrClose($0) })
    }

    func testSQLStateConstants() {
        XCTAssertEqual(SQLState.protocolViolation, "08P01")
        XCTAssertEqual(SQLState.tooManyConnections, "53300")
        XCTAssertEqual(SQLState.idleInTransactionSessionTimeout, "25P03")
        XCTAssertEqual(SQLState.undefinedObject, "42704")
        for code in [SQLState.connectionFailure, SQLState.cannotConnectNow, SQLState.invalidPassword,
                     SQLState.invalidAuthorizationSpecification, SQLState.queryCanceled, SQLState.adminShutdown,
                     SQLState.featureNotSupported, SQLState.invalidCatalogName, SQLState.duplicatePreparedStatement,
                     SQLState.invalidSQLStatementName, SQLState.syntaxError, SQLState.insufficientPrivilege,
                     SQLState.internalError, SQLState.invalidParameterValue, SQLState.idleSessionTimeout] {
            XCTAssertEqual(code.utf8.count, 5)
        }
    }
}
