// Hash, HMAC, PBKDF2, randomness and Base64 for authentication: every primitive goes through libcrypto.
import COpenSSL
import CLinux

public enum Crypto {
    /// SHA-256 output size, which is also the SCRAM-SHA-256 key length.
    public static let sha256Length = 32

    public static func sha256(_ data: [UInt8]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: sha256Length) { out, n in
            data.withUnsafeBytes { pgs_sha256($0.baseAddress, $0.count, out.baseAddress) }
            n = sha256Length
        }
    }

    /// HMAC-SHA-256 (RFC 2104) in the COpenSSL shim over libcrypto's low-level SHA-256: OpenSSL 3's
    /// one-shot HMAC() fetches the MAC and digest on every call, and even EVP digests with a digest
    /// fetched once spent as much on dispatch and context allocation as on hashing in the login profile.
    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: sha256Length) { out, n in
            key.withUnsafeBufferPointer { k in
                data.withUnsafeBytes { d in
                    pgs_hmac_sha256(k.baseAddress, k.count, d.baseAddress, d.count, out.baseAddress)
                }
            }
            n = sha256Length
        }
    }

    /// An HMAC-SHA-256 key with its padded blocks already hashed (`pgs_hmac_sha256_prepare`): 16 words.
    public static func hmacSHA256Prepare(key: [UInt8]) -> [UInt32] {
        [UInt32](unsafeUninitializedCapacity: 16) { out, n in
            key.withUnsafeBufferPointer { pgs_hmac_sha256_prepare($0.baseAddress, $0.count, out.baseAddress) }
            n = 16
        }
    }

    /// HMAC-SHA-256 with a key from `hmacSHA256Prepare`: the same result as `hmacSHA256(key:data:)`.
    public static func hmacSHA256(prepared: [UInt32], data: [UInt8]) -> [UInt8] {
        precondition(prepared.count == 16, "prepared HMAC key must be 16 words")
        return [UInt8](unsafeUninitializedCapacity: sha256Length) { out, n in
            prepared.withUnsafeBufferPointer { st in
                data.withUnsafeBytes { d in
                    pgs_hmac_sha256_prepared(st.baseAddress, d.baseAddress, d.count, out.baseAddress)
                }
            }
            n = sha256Length
        }
    }

    /// PBKDF2-HMAC-SHA-256 with a 32-byte output (SCRAM's Hi() function).
    public static func pbkdf2SHA256(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        precondition(iterations >= 1 && iterations <= Int(Int32.max), "PBKDF2 iteration count out of range")
        var out = [UInt8](repeating: 0, count: sha256Length)
        let rc = withNonNullBytes(password) { p, pLen in
            p.withMemoryRebound(to: CChar.self, capacity: max(pLen, 1)) { pc in
                withNonNullBytes(salt) { s, sLen in
                    out.withUnsafeMutableBufferPointer { o in
                        PKCS5_PBKDF2_HMAC(pc, Int32(pLen), s, Int32(sLen), Int32(iterations),
                                          EVP_sha256(), Int32(sha256Length), o.baseAddress)
                    }
                }
            }
        }
        precondition(rc == 1, "libcrypto PBKDF2-HMAC-SHA-256 failed")
        return out
    }

    /// MD5 as 32 lowercase hex digits (PostgreSQL's md5 password scheme).
    public static func md5Hex(_ data: [UInt8]) -> String {
        hex(digest(data, md: EVP_md5(), length: 16))
    }

    /// Cryptographically secure random bytes from the kernel (getrandom(2)): as strong as RAND_bytes and,
    /// per call, several times cheaper than OpenSSL 3's locked DRBG, which showed in the login profile.
    /// Falls back to RAND_bytes; aborts if neither works, because predictable nonces or salts would
    /// silently weaken authentication.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        precondition(count >= 0 && count <= Int(Int32.max))
        var out = [UInt8](repeating: 0, count: count)
        if count == 0 { return out }
        if out.withUnsafeMutableBytes({ cl_getrandom($0.baseAddress, $0.count) }) == 0 { return out }
        let rc = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        precondition(rc == 1, "libcrypto RAND_bytes failed")
        return out
    }

    /// Compares without an early exit so timing does not reveal how many leading bytes matched.
    /// Lengths are not secret here (digests have fixed sizes), so a length mismatch returns at once.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        if a.count != b.count { return false }
        if a.isEmpty { return true }
        return a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in CRYPTO_memcmp(pa.baseAddress, pb.baseAddress, a.count) == 0 }
        }
    }

    /// Lowercase hex encoding.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: bytes.count * 2) { buf in
            digits.withUTF8Buffer { d in
                var i = 0
                for b in bytes {
                    buf[i] = d[Int(b >> 4)]
                    buf[i + 1] = d[Int(b & 0x0F)]
                    i += 2
                }
            }
            return bytes.count * 2
        }
    }

    private static func digest(_ data: [UInt8], md: OpaquePointer?, length: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        var outLength: UInt32 = 0
        let rc = withNonNullBytes(data) { d, dLen in
            out.withUnsafeMutableBufferPointer { o in
                EVP_Digest(d, dLen, o.baseAddress, &outLength, md, nil)
            }
        }
        precondition(rc == 1 && Int(outLength) == length, "libcrypto digest failed")
        return out
    }

    /// libcrypto treats a NULL pointer specially in some APIs (HMAC: "reuse previous key"), and an empty
    /// Swift array may have no storage; always hand it a real pointer.
    private static func withNonNullBytes<R>(_ bytes: [UInt8],
                                            _ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        if bytes.isEmpty {
            var zero: UInt8 = 0
            return withUnsafePointer(to: &zero) { body($0, 0) }
        }
        return bytes.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
    }
}

/// Standard Base64 (RFC 4648, with padding), as SCRAM and PostgreSQL's secrets use it.
public enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ b: [UInt8]) -> String {
        String(decoding: encodeBytes(b), as: UTF8.self)
    }

    /// Encoded form as ASCII bytes, for building SCRAM messages without a String round trip.
    public static func encodeBytes(_ b: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity((b.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= b.count {
            let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2])
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(alphabet[Int(v >> 6 & 63)])
            out.append(alphabet[Int(v & 63)])
            i += 3
        }
        let rest = b.count - i
        if rest == 1 {
            let v = UInt32(b[i]) << 16
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        } else if rest == 2 {
            let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(alphabet[Int(v >> 6 & 63)])
            out.append(UInt8(ascii: "="))
        }
        return out
    }

    public static func decode(_ s: String) -> [UInt8]? {
        var s = s
        return s.withUTF8 { decode(bytes: $0) }
    }

    /// Strict decoding: length a multiple of 4, padding only at the end, no whitespace.
    public static func decode<C: Collection>(bytes: C) -> [UInt8]? where C.Element == UInt8 {
        let n = bytes.count
        if n % 4 != 0 { return nil }
        var out = [UInt8]()
        out.reserveCapacity(n / 4 * 3)
        var acc: UInt32 = 0
        var quads = 0
        var padding = 0
        var index = 0
        for c in bytes {
            index += 1
            let v: UInt32
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = UInt32(c - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt32(c - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): v = 62
            case UInt8(ascii: "/"): v = 63
            case UInt8(ascii: "="):
                // Padding is allowed only in the last two positions of the final quad.
                if index <= n - 2 { return nil }
                padding += 1
                v = 0
            default: return nil
            }
            if padding > 0 && c != UInt8(ascii: "=") { return nil }
            acc = acc << 6 | v
            quads += 1
            if quads == 4 {
                out.append(UInt8(truncatingIfNeeded: acc >> 16))
                out.append(UInt8(truncatingIfNeeded: acc >> 8))
                out.append(UInt8(truncatingIfNeeded: acc))
                acc = 0
                quads = 0
            }
        }
        if padding > 0 { out.removeLast(padding) }
        return out
    }
}
