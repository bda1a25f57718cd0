// A non-blocking TLS client on a connected socket, OpenSSL's own socket BIO under it: the supervisor's
// health checks to PostgreSQL (the workers' server connections use their own BIO, Worker/IO/TLSConnection.swift).
import COpenSSL

extension TLSContext {
    /// What a connection to PostgreSQL host `host` (as configured: a name or a numeric address; nil for
    /// none) checks, under this context's server_tls_sslmode: SNI for a name, and with verify-full the
    /// certificate's DNS names (a name) or IP addresses (an address), as libpq does.
    public func prepareServerCheck(_ ssl: OpaquePointer, host: String?) {
        guard let host, !host.isEmpty else { return }
        let isIP = SocketAddress.numeric(host: host, port: 0) != nil
        if !isIP { _ = pgs_SSL_set_tlsext_host_name(ssl, host) }
        guard mode == .verifyFull else { return }
        if isIP {
            _ = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
        } else {
            _ = SSL_set1_host(ssl, host)
        }
    }

    /// "TLSv1.3/TLS_AES_256_GCM_SHA384", as PgBouncer shows a connection's TLS.
    public static func describe(_ ssl: OpaquePointer) -> String {
        let v = SSL_get_version(ssl).map { String(cString: $0) } ?? "?"
        let cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)).map { String(cString: $0) } ?? "?"
        return "\(v)/\(cipher)"
    }

    /// OpenSSL's reason for a failed call on `ssl`, with the certificate verification result when the
    /// connection checks certificates and this one failed. `syscallReason`: what the socket said, for
    /// SSL_ERROR_SYSCALL (nil: the connection closed).
    public static func failureText(_ ssl: OpaquePointer?, _ sslError: Int32, syscallReason: String? = nil) -> String {
        var text = sslError == SSL_ERROR_SYSCALL ? syscallReason ?? "connection closed during TLS" : lastError()
        ERR_clear_error()
        guard let ssl else { return text }
        let v = SSL_get_verify_result(ssl)
        if SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE, v != X509_V_OK, let s = X509_verify_cert_error_string(v) {
            text += " (certificate verification: \(String(cString: s)))"
        }
        return text
    }
}

/// TLS over a connected non-blocking socket the caller owns (and closes after `release`). Each call does
/// what it can now; "want" answers say what to wait for before calling again. OpenSSL's socket BIO
/// writes without MSG_NOSIGNAL: the process must ignore SIGPIPE (the supervisor does).
public final class TLSClientSocket {
    public enum Step: Equatable {
        case done
        case wantRead
        case wantWrite
        case failed(String)
    }

    public enum ReadResult: Equatable {
        case data(Int)
        case wantMore
        case closed
        case failed(String)
    }

    private var ssl: OpaquePointer?

    /// nil when OpenSSL cannot set the connection up (its reason: `TLSContext.lastError()`).
    public init?(context: TLSContext, fd: Int32, host: String?) {
        guard let ssl = SSL_new(context.ctx) else { return nil }
        guard SSL_set_fd(ssl, fd) == 1 else {
            SSL_free(ssl)
            return nil
        }
        SSL_set_connect_state(ssl)
        context.prepareServerCheck(ssl, host: host)
        self.ssl = ssl
    }

    deinit { release() }

    /// Frees the TLS state (no close_notify: the caller has sent Terminate and closes the socket).
    public func release() {
        if let ssl { SSL_free(ssl) }
        ssl = nil
    }

    public func handshake() -> Step {
        guard let ssl else { return .failed("TLS connection closed") }
        let r = SSL_do_handshake(ssl)
        if r == 1 { return .done }
        let e = SSL_get_error(ssl, r)
        if e == SSL_ERROR_WANT_READ { return .wantRead }
        if e == SSL_ERROR_WANT_WRITE { return .wantWrite }
        return .failed(TLSContext.failureText(ssl, e))
    }

    /// Up to `count` plaintext bytes into `buf`.
    public func read(_ buf: UnsafeMutableRawPointer, _ count: Int) -> ReadResult {
        guard let ssl else { return .closed }
        let r = SSL_read(ssl, buf, Int32(min(count, Int(Int32.max))))
        if r > 0 { return .data(Int(r)) }
        let e = SSL_get_error(ssl, r)
        switch e {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .wantMore
        case SSL_ERROR_ZERO_RETURN: return .closed
        case SSL_ERROR_SYSCALL:
            ERR_clear_error()
            return .closed
        default: return .failed(TLSContext.failureText(ssl, e))
        }
    }

    /// Encrypts and sends up to `count` bytes: how many went (0: the socket is full), or the failure.
    /// The context allows partial writes and a moved buffer on the next try (TLSContext `common`).
    public func write(_ p: UnsafeRawPointer, _ count: Int) -> Result<Int, TLSWriteError> {
        guard let ssl else { return .failure(TLSWriteError(reason: "TLS connection closed")) }
        guard count > 0 else { return .success(0) }
        let r = SSL_write(ssl, p, Int32(min(count, 16384)))
        if r > 0 { return .success(Int(r)) }
        let e = SSL_get_error(ssl, r)
        if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE { return .success(0) }
        return .failure(TLSWriteError(reason: TLSContext.failureText(ssl, e)))
    }

    /// "TLSv1.3/TLS_AES_256_GCM_SHA384".
    public var description: String { ssl.map { TLSContext.describe($0) } ?? "" }
}

public struct TLSWriteError: Error, Equatable {
    public var reason: String
}
