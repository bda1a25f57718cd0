// One TLS connection's OpenSSL state and its socket BIO: reads and writes go straight to the fd, and
// ciphertext the socket refuses is kept here, so SSL_write never sees WANT_WRITE.
import Shared
import Glibc
import COpenSSL

/// Per-TLS-connection state, malloc'ed (records move when tables grow; OpenSSL's BIO keeps a pointer).
struct TLSConnState {
    var ssl: OpaquePointer? = nil
    var fd: Int32 = -1
    /// Ciphertext accepted from OpenSSL that the socket did not take yet; flushed before anything new.
    var out = PendingOut()
    /// Bytes read before TLS started (a direct-TLS ClientHello): OpenSSL reads them first.
    var pre = PendingOut()
    /// The last read(2) returned less than asked: the socket was empty then (edge-triggered epoll
    /// brings a new event for new bytes), so the read that would only say EAGAIN can be skipped.
    var recvShort = false
    var handshakeDone = false
    /// Started by a ClientHello without SSLRequest (PostgreSQL 17 sslnegotiation=direct): ALPN required.
    var direct = false
    /// errno of a failed send(2)/read(2) inside the BIO (0: none).
    var ioErrno: Int32 = 0
    /// Why the last read failed (`Endpoint.read` returned `.closed` for it), for the caller's log.
    var readFailure: String? = nil
}

typealias TLSConn = UnsafeMutablePointer<TLSConnState>

enum TLSReadResult {
    /// `drained`: the socket had nothing more when last read and OpenSSL holds nothing unread.
    case data(Int, drained: Bool)
    case wouldBlock
    case closed
    case failed(String)
}

/// The BIO method shared by every TLS connection of a worker (built once, freed never: the worker
/// lives as long as its process).
struct TLSBIOMethod {
    let method: OpaquePointer

    init() {
        let index = BIO_get_new_index()
        guard let m = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "pgswift-socket") else {
            preconditionFailure("libssl: BIO_meth_new failed")
        }
        _ = BIO_meth_set_write(m, { bio, data, len in
            guard let bio, let data, len > 0, let raw = BIO_get_data(bio) else { return 0 }
            let c = raw.assumingMemoryBound(to: TLSConnState.self)
            pgs_BIO_clear_retry_flags(bio)
            var sent = 0
            let count = Int(len)
            if c.pointee.out.isEmpty {
                do throws(SyscallError) {
                    switch try Posix.send(c.pointee.fd, data, count) {
                    case .processed(let n): sent = n
                    case .wouldBlock: sent = 0
                    }
                } catch {
                    c.pointee.ioErrno = error.errno.rawValue
                    return -1
                }
            }
            if sent < count {
                c.pointee.out.append(UnsafeRawBufferPointer(start: UnsafeRawPointer(data) + sent, count: count - sent))
            }
            return len
        })
        _ = BIO_meth_set_read(m, { bio, buf, len in
            guard let bio, let buf, len > 0, let raw = BIO_get_data(bio) else { return 0 }
            let c = raw.assumingMemoryBound(to: TLSConnState.self)
            pgs_BIO_clear_retry_flags(bio)
            let want = Int(len)
            if !c.pointee.pre.isEmpty {
                let n = min(want, c.pointee.pre.end - c.pointee.pre.start)
                UnsafeMutableRawPointer(buf).copyMemory(from: c.pointee.pre.base! + c.pointee.pre.start, byteCount: n)
                c.pointee.pre.consumed(n)
                return Int32(n)
            }
            do throws(SyscallError) {
                switch try Posix.recv(c.pointee.fd, buf, want) {
                case .processed(let n):
                    c.pointee.recvShort = n < want
                    return Int32(n)
                case .wouldBlock:
                    c.pointee.recvShort = true
                    pgs_BIO_set_retry_read(bio)
                    return -1
                }
            } catch {
                c.pointee.ioErrno = error.errno.rawValue
                return -1
            }
        })
        _ = BIO_meth_set_ctrl(m, { _, cmd, _, _ in
            // OpenSSL flushes after each handshake flight; our writes are already on their way.
            cmd == BIO_CTRL_FLUSH ? 1 : 0
        })
        _ = BIO_meth_set_create(m, { bio in
            BIO_set_init(bio, 1)
            return 1
        })
        _ = BIO_meth_set_destroy(m, { _ in 1 })
        method = m
    }
}

enum TLSIO {
    /// A TLS connection over `fd` in the accepting (client-facing) or connecting (server-facing) role.
    static func make(_ ctx: TLSContext, fd: Int32, accepting: Bool, method: TLSBIOMethod) -> TLSConn? {
        guard let ssl = SSL_new(ctx.ctx) else { return nil }
        guard let bio = BIO_new(method.method) else {
            SSL_free(ssl)
            return nil
        }
        let c = TLSConn.allocate(capacity: 1)
        c.initialize(to: TLSConnState())
        c.pointee.ssl = ssl
        c.pointee.fd = fd
        BIO_set_data(bio, UnsafeMutableRawPointer(c))
        SSL_set_bio(ssl, bio, bio)
        // Read whole socket buffers at once: fewer read(2) calls, and `recvShort` says when it is empty.
        SSL_set_read_ahead(ssl, 1)
        if accepting { SSL_set_accept_state(ssl) } else { SSL_set_connect_state(ssl) }
        return c
    }

    static func free(_ c: TLSConn) {
        if let ssl = c.pointee.ssl {
            // close_notify, best effort (a socket that refuses it loses it): the peer then logs a clean
            // close rather than an unexpected EOF.
            if c.pointee.handshakeDone && c.pointee.ioErrno == 0 {
                _ = SSL_shutdown(ssl)
                try? flush(c)
            }
            ERR_clear_error()
            SSL_free(ssl)
        }
        c.pointee.out.release()
        c.pointee.pre.release()
        c.deinitialize(count: 1)
        c.deallocate()
    }

    enum HandshakeResult {
        case done
        case wantMore
        case failed(String)
    }

    static func handshake(_ c: TLSConn) -> HandshakeResult {
        guard let ssl = c.pointee.ssl else { return .failed("no TLS state") }
        let r = SSL_do_handshake(ssl)
        if r == 1 {
            c.pointee.handshakeDone = true
            return .done
        }
        let e = SSL_get_error(ssl, r)
        switch e {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wantMore
        default:
            return .failed(errorText(c, e))
        }
    }

    @inline(__always)
    static func read(_ c: TLSConn, _ buf: UnsafeMutableRawPointer, _ count: Int) -> TLSReadResult {
        let ssl = c.pointee.ssl
        let r = SSL_read(ssl, buf, Int32(truncatingIfNeeded: min(count, Int(Int32.max))))
        if r > 0 {
            return .data(Int(r), drained: c.pointee.recvShort && SSL_has_pending(ssl) == 0)
        }
        let e = SSL_get_error(ssl, r)
        switch e {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wouldBlock
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        case SSL_ERROR_SYSCALL where c.pointee.ioErrno == 0:
            ERR_clear_error()
            return .closed
        default:
            return .failed(errorText(c, e))
        }
    }

    /// Encrypts and sends up to `count` bytes. Ciphertext the socket refuses stays in `out`, and
    /// nothing new is taken until it has gone: the caller sees a short write and waits for EPOLLOUT.
    @inline(__always)
    static func send(_ c: TLSConn, _ p: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        guard c.pointee.handshakeDone else { throw SyscallError("SSL_write", .notConnected) }
        if !c.pointee.out.isEmpty {
            try flush(c)
            if !c.pointee.out.isEmpty { return .wouldBlock }
        }
        var done = 0
        while done < count {
            // One record's worth at a time: at most one record of ciphertext can be left behind.
            let chunk = min(count &- done, 16384)
            let r = SSL_write(c.pointee.ssl, p + done, Int32(chunk))
            if r <= 0 {
                let e = SSL_get_error(c.pointee.ssl, r)
                if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE { break }
                let errno = c.pointee.ioErrno != 0 ? Errno(rawValue: c.pointee.ioErrno) : .brokenPipe
                ERR_clear_error()
                throw SyscallError("SSL_write", errno)
            }
            done &+= Int(r)
            if !c.pointee.out.isEmpty { break }
        }
        return done == 0 ? .wouldBlock : .processed(done)
    }

    /// Sends ciphertext left over from earlier writes.
    static func flush(_ c: TLSConn) throws(SyscallError) {
        while !c.pointee.out.isEmpty {
            let o = c.pointee.out
            switch try Posix.send(c.pointee.fd, o.base! + o.start, o.end - o.start) {
            case .processed(let n):
                c.pointee.out.consumed(n)
                if n < o.end - o.start { return }
            case .wouldBlock:
                return
            }
        }
    }

    /// OpenSSL's reason for a failure (with the certificate verification result when the connection
    /// checks certificates and this one failed it).
    static func errorText(_ c: TLSConn, _ sslError: Int32) -> String {
        TLSContext.failureText(c.pointee.ssl, sslError,
                               syscallReason: c.pointee.ioErrno != 0 ? "\(Errno(rawValue: c.pointee.ioErrno))" : nil)
    }

    /// "TLSv1.3/TLS_AES_256_GCM_SHA384", as PgBouncer shows it.
    static func describe(_ c: TLSConn) -> String {
        c.pointee.ssl.map { TLSContext.describe($0) } ?? ""
    }

    /// The peer certificate's subject CommonName, and whether the certificate verified.
    static func peerCommonName(_ c: TLSConn) -> (name: String?, verified: Bool) {
        guard let ssl = c.pointee.ssl, let cert = pgs_SSL_get_peer_certificate(ssl) else { return (nil, false) }
        defer { X509_free(cert) }
        let verified = SSL_get_verify_result(ssl) == X509_V_OK
        guard let subject = X509_get_subject_name(cert) else { return (nil, verified) }
        let idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1)
        guard idx >= 0, let entry = X509_NAME_get_entry(subject, idx),
              let data = X509_NAME_ENTRY_get_data(entry) else { return (nil, verified) }
        var out: UnsafeMutablePointer<UInt8>? = nil
        let n = ASN1_STRING_to_UTF8(&out, data)
        guard n >= 0, let out else { return (nil, verified) }
        defer { pgs_OPENSSL_free(out) }
        let bytes = UnsafeBufferPointer(start: out, count: Int(n))
        // A CN with an embedded NUL could pass for a shorter name: refuse it.
        if bytes.contains(0) { return (nil, verified) }
        return (String(decoding: bytes, as: UTF8.self), verified)
    }

    /// Whether ALPN "postgresql" was selected.
    static func alpnIsPostgres(_ c: TLSConn) -> Bool {
        guard let ssl = c.pointee.ssl else { return false }
        var p: UnsafePointer<UInt8>? = nil
        var n: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &p, &n)
        guard let p, n == 10 else { return false }
        return memcmp(p, "postgresql", 10) == 0
    }

    /// tls-server-end-point data for this connection's own certificate (empty if unknown).
    static func endPointHash(_ c: TLSConn) -> [UInt8] {
        guard let ssl = c.pointee.ssl, let cert = SSL_get_certificate(ssl) else { return [] }
        return TLSContext.endPointHash(cert)
    }
}
