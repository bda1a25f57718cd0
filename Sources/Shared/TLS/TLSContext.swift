// OpenSSL contexts for client-facing and server-facing TLS, built from the client_tls_* / server_tls_* settings.
import COpenSSL
import Glibc

/// Why a TLS context could not be built; `key` names the setting to blame (for file:line errors).
public struct TLSSetupError: Error, Sendable, CustomStringConvertible {
    public var key: String
    public var reason: String
    public var description: String { "\(key): \(reason)" }
}

/// The TLS settings of one side (clients or servers): `Config.clientTLS` and `Config.serverTLS`, the
/// client_tls_* and server_tls_* keys, with PgBouncer's defaults (`mode`'s differs by side).
public struct TLSSideSettings: Sendable, Equatable {
    public var mode: Config.TLSMode
    public var keyFile: String
    public var certFile: String
    public var caFile: String
    public var protocols: String
    public var ciphers: String
    public var tls13Ciphers: String
    /// client_tls_dheparams (clients' side only): `auto` lets TLS 1.2 DHE cipher suites run with
    /// OpenSSL's built-in group sized to the certificate's key (PgBouncer's `SSL_CTX_set_dh_auto`),
    /// `none` leaves them out (no DH parameters); anything else is refused when the context is built.
    public var dheParams: String = "auto"
    /// client_tls_ecdhcurve (clients' side only): `auto` and `none` leave OpenSSL's default groups (with
    /// OpenSSL 1.1 and later nothing turns ECDHE off, in PgBouncer either: `none` is warned about at
    /// load); a curve name (`secp384r1`, `prime256v1`, `P-384`, `X25519`...) or a colon-separated list
    /// is the only key exchange groups offered, TLS 1.2 and 1.3 alike.
    public var ecdhCurve: String = "auto"
    /// "client" or "server": the prefix of the setting names, for error messages.
    public var prefix: String

    public init(mode: Config.TLSMode, keyFile: String = "", certFile: String = "", caFile: String = "",
                protocols: String = "secure", ciphers: String = "default", tls13Ciphers: String = "", prefix: String) {
        self.mode = mode
        self.keyFile = keyFile
        self.certFile = certFile
        self.caFile = caFile
        self.protocols = protocols
        self.ciphers = ciphers
        self.tls13Ciphers = tls13Ciphers
        self.prefix = prefix
    }
}

extension TLSSideSettings {
    /// Whether server connections made with `self` must be closed once `new` applies, as PgBouncer's
    /// RELOAD decides (`tls_change_requires_reconnect`): any change of the settings while TLS to
    /// servers is or was on; nothing while it stays off. Otherwise a connection made with weaker
    /// settings (an older protocol, no certificate check) would live on for good.
    public func serverChangeNeedsReconnect(to new: TLSSideSettings) -> Bool {
        (mode != .disable || new.mode != .disable) && self != new
    }

    /// The key, certificate and CA file names taken relative to `configFile`'s directory (empty stays empty).
    func resolvingFiles(against configFile: String) -> TLSSideSettings {
        let dir = ConfigFile.directory(of: configFile)
        func path(_ p: String) -> String { p.isEmpty ? p : ConfigFile.resolve(p, relativeTo: dir) }
        var s = self
        s.keyFile = path(keyFile)
        s.certFile = path(certFile)
        s.caFile = path(caFile)
        return s
    }
}

extension Config {
    /// `\.clientTLS` (the TLS pgswift offers to clients) or `\.serverTLS` (what it asks of PostgreSQL
    /// servers) as the contexts are built from it: file names resolved against the config's directory.
    public func resolvedTLS(_ side: KeyPath<Config, TLSSideSettings>) -> TLSSideSettings {
        self[keyPath: side].resolvingFiles(against: configFile)
    }

    /// Builds both TLS contexts once to find unreadable files, a key that does not match its
    /// certificate or a bad protocol/cipher list, reported at the line of the setting to blame.
    public func validateTLS() throws(ConfigError) {
        for side in [resolvedTLS(\.clientTLS), resolvedTLS(\.serverTLS)] {
            do {
                if side.prefix == "client" {
                    _ = try TLSContext.acceptingClients(side)
                } else {
                    _ = try TLSContext.connectingServers(side)
                }
            } catch {
                throw settingError("\(error)", at: error.key, "\(side.prefix)_tls_sslmode")
            }
        }
    }
}

/// One SSL_CTX. Workers build their own (one per side) at start and on reload; connections made
/// before a reload keep the old context alive through OpenSSL's reference count.
public final class TLSContext: @unchecked Sendable {
    public let ctx: OpaquePointer
    /// tls-server-end-point channel-binding data (RFC 5929): the hash of our certificate, empty when
    /// there is none or its signature hash is unknown.
    public let endPointHash: [UInt8]
    public let mode: Config.TLSMode

    private init(ctx: OpaquePointer, endPointHash: [UInt8], mode: Config.TLSMode) {
        self.ctx = ctx
        self.endPointHash = endPointHash
        self.mode = mode
    }

    deinit { SSL_CTX_free(ctx) }

    /// The context for client connections; nil when client_tls_sslmode is disable.
    public static func acceptingClients(_ s: TLSSideSettings) throws(TLSSetupError) -> TLSContext? {
        if s.mode == .disable { return nil }
        guard !s.keyFile.isEmpty else {
            throw TLSSetupError(key: "client_tls_key_file", reason: "must be set when client_tls_sslmode is \(s.mode.rawValue)")
        }
        guard !s.certFile.isEmpty else {
            throw TLSSetupError(key: "client_tls_cert_file", reason: "must be set when client_tls_sslmode is \(s.mode.rawValue)")
        }
        if (s.mode == .verifyCA || s.mode == .verifyFull) && s.caFile.isEmpty {
            throw TLSSetupError(key: "client_tls_ca_file", reason: "must be set when client_tls_sslmode is \(s.mode.rawValue)")
        }
        guard let ctx = SSL_CTX_new(TLS_server_method()) else {
            throw TLSSetupError(key: "client_tls_sslmode", reason: "SSL_CTX_new failed: \(lastError())")
        }
        do throws(TLSSetupError) {
            try common(ctx, s)
            try keyExchange(ctx, s)
            if !s.caFile.isEmpty {
                if SSL_CTX_load_verify_locations(ctx, s.caFile, nil) != 1 {
                    throw TLSSetupError(key: "client_tls_ca_file", reason: "cannot load \"\(s.caFile)\": \(lastError())")
                }
                if let names = SSL_load_client_CA_file(s.caFile) { SSL_CTX_set_client_CA_list(ctx, names) }
                if s.mode == .verifyCA || s.mode == .verifyFull {
                    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
                } else {
                    // Below verify-ca a certificate is asked for (auth_type cert needs it) but a bad one does
                    // not end the handshake: the verification result is checked where it matters.
                    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, { _, _ in 1 })
                }
            }
            // PostgreSQL 17 clients send ALPN "postgresql"; select it when offered (direct TLS requires it).
            SSL_CTX_set_alpn_select_cb(ctx, { _, out, outlen, inp, inlen, _ in
                guard let inp, let out, let outlen else { return SSL_TLSEXT_ERR_NOACK }
                var i = 0
                let n = Int(inlen)
                while i < n {
                    let l = Int(inp[i])
                    if i + 1 + l > n { break }
                    if l == 10 && memcmp(inp + i + 1, "postgresql", 10) == 0 {
                        out.pointee = UnsafePointer(inp + i + 1)
                        outlen.pointee = 10
                        return SSL_TLSEXT_ERR_OK
                    }
                    i += 1 + l
                }
                return SSL_TLSEXT_ERR_NOACK
            }, nil)
            // No session resumption: no tickets to write after the handshake, no cache to keep.
            _ = pgs_SSL_CTX_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_OFF))
            _ = SSL_CTX_set_num_tickets(ctx, 0)
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        let hash = SSL_CTX_get0_certificate(ctx).map { endPointHash($0) } ?? []
        return TLSContext(ctx: ctx, endPointHash: hash, mode: s.mode)
    }

    /// The context for server connections; nil when server_tls_sslmode is disable.
    public static func connectingServers(_ s: TLSSideSettings) throws(TLSSetupError) -> TLSContext? {
        if s.mode == .disable { return nil }
        guard let ctx = SSL_CTX_new(TLS_client_method()) else {
            throw TLSSetupError(key: "server_tls_sslmode", reason: "SSL_CTX_new failed: \(lastError())")
        }
        do throws(TLSSetupError) {
            if !s.keyFile.isEmpty || !s.certFile.isEmpty {
                guard !s.keyFile.isEmpty, !s.certFile.isEmpty else {
                    throw TLSSetupError(key: s.keyFile.isEmpty ? "server_tls_key_file" : "server_tls_cert_file",
                                        reason: "server_tls_key_file and server_tls_cert_file go together")
                }
            }
            try common(ctx, s)
            if s.mode == .verifyCA || s.mode == .verifyFull {
                let ok = s.caFile.isEmpty ? SSL_CTX_set_default_verify_paths(ctx)
                                          : SSL_CTX_load_verify_locations(ctx, s.caFile, nil)
                if ok != 1 {
                    throw TLSSetupError(key: "server_tls_ca_file", reason: "cannot load \"\(s.caFile)\": \(lastError())")
                }
                SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            } else {
                SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
            }
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        return TLSContext(ctx: ctx, endPointHash: [], mode: s.mode)
    }

    /// client_tls_dheparams and client_tls_ecdhcurve, as PgBouncer applies them (its `setup_tls`
    /// refuses any other DHE value, `legacy` included, and a curve its OpenSSL does not know).
    private static func keyExchange(_ ctx: OpaquePointer, _ s: TLSSideSettings) throws(TLSSetupError) {
        switch s.dheParams.lowercased() {
        case "none", "": break  // PgBouncer leaves an empty value at libtls's default, none
        case "auto": _ = pgs_SSL_CTX_set_dh_auto(ctx, 1)
        default:
            throw TLSSetupError(key: "client_tls_dheparams",
                                reason: "invalid value \"\(s.dheParams)\" (none or auto)")
        }
        switch s.ecdhCurve.lowercased() {
        case "none", "auto", "": break
        default:
            if pgs_SSL_CTX_set1_groups_list(ctx, s.ecdhCurve) != 1 {
                ERR_clear_error()
                throw TLSSetupError(key: "client_tls_ecdhcurve",
                                    reason: "unknown curve \"\(s.ecdhCurve)\" (see openssl ecparam -list_curves)")
            }
        }
    }

    /// Certificate, key, protocol range and ciphers: what both sides share.
    private static func common(_ ctx: OpaquePointer, _ s: TLSSideSettings) throws(TLSSetupError) {
        let p = s.prefix
        if !s.certFile.isEmpty {
            if let r = unreadable(s.certFile) { throw TLSSetupError(key: "\(p)_tls_cert_file", reason: "cannot read \"\(s.certFile)\": \(r)") }
            if SSL_CTX_use_certificate_chain_file(ctx, s.certFile) != 1 {
                throw TLSSetupError(key: "\(p)_tls_cert_file", reason: "cannot load \"\(s.certFile)\": \(lastError())")
            }
        }
        if !s.keyFile.isEmpty {
            if let r = unreadable(s.keyFile) { throw TLSSetupError(key: "\(p)_tls_key_file", reason: "cannot read \"\(s.keyFile)\": \(r)") }
            if SSL_CTX_use_PrivateKey_file(ctx, s.keyFile, SSL_FILETYPE_PEM) != 1 {
                let e = lastError()
                let reason = e.contains("mismatch") ? "the key does not match \(p)_tls_cert_file (\(e))"
                                                    : "cannot load \"\(s.keyFile)\": \(e)"
                throw TLSSetupError(key: "\(p)_tls_key_file", reason: reason)
            }
            if SSL_CTX_check_private_key(ctx) != 1 {
                throw TLSSetupError(key: "\(p)_tls_key_file", reason: "the key does not match \(p)_tls_cert_file: \(lastError())")
            }
        }
        if !s.caFile.isEmpty, let r = unreadable(s.caFile) {
            throw TLSSetupError(key: "\(p)_tls_ca_file", reason: "cannot read \"\(s.caFile)\": \(r)")
        }
        let versions: TLSProtocols
        do throws(TLSSetupError) {
            versions = try TLSProtocols.parse(s.protocols)
        } catch {
            throw TLSSetupError(key: "\(p)_tls_protocols", reason: error.reason)
        }
        versions.apply(ctx)
        if let list = TLSCiphers.openSSLList(s.ciphers), SSL_CTX_set_cipher_list(ctx, list) != 1 {
            throw TLSSetupError(key: "\(p)_tls_ciphers", reason: "failed to set ciphers: no usable cipher in \"\(s.ciphers)\"")
        }
        if !s.tls13Ciphers.isEmpty && SSL_CTX_set_ciphersuites(ctx, s.tls13Ciphers) != 1 {
            throw TLSSetupError(key: "\(p)_tls13_ciphers", reason: "failed to set the TLSv1.3 cipher suites: no usable cipher suite in \"\(s.tls13Ciphers)\"")
        }
        // Our write BIO never refuses bytes (TLSConnection), and buffers may move between retries.
        _ = pgs_SSL_CTX_set_mode(ctx, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER))
        pgs_SSL_CTX_harden(ctx)
    }

    private static func unreadable(_ path: String) -> String? { ConfigFile.unreadableReason(path: path) }

    /// RFC 5929 tls-server-end-point: the certificate hashed with its signature's hash, SHA-256 when
    /// that is MD5 or SHA-1.
    public static func endPointHash(_ cert: OpaquePointer) -> [UInt8] {
        var mdNID: Int32 = 0
        var pkNID: Int32 = 0
        guard OBJ_find_sigid_algs(X509_get_signature_nid(cert), &mdNID, &pkNID) == 1 else { return [] }
        if mdNID == NID_md5 || mdNID == NID_sha1 { mdNID = NID_sha256 }
        guard let md = EVP_get_digestbyname(OBJ_nid2sn(mdNID)) else { return [] }
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var len: UInt32 = 0
        guard X509_digest(cert, md, &out, &len) == 1 else { return [] }
        return Array(out[0..<Int(len)])
    }

    /// The oldest queued OpenSSL error as text (the queue is cleared).
    public static func lastError() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        if code == 0 { return "unknown error" }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        return String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// `*_tls_protocols`: which TLS versions are allowed (PgBouncer's keywords).
public struct TLSProtocols: Sendable, Equatable {
    /// Allowed among TLS 1.0, 1.1, 1.2, 1.3 (index 0...3).
    public var allowed: [Bool]

    /// "all", "secure" (1.2 and 1.3; the default), "legacy" (all), "default", or a list of
    /// tlsv1.0/tlsv1.1/tlsv1.2/tlsv1.3 separated by commas, colons or spaces. As in PgBouncer (libtls),
    /// "tlsv1" means every TLS 1.x version and a leading "!" removes versions ("secure,!tlsv1.2"; a list
    /// that starts with a removal starts from all). A list that leaves no version is refused.
    public static func parse(_ text: String) throws(TLSSetupError) -> TLSProtocols {
        let words = text.lowercased().split(whereSeparator: { $0 == "," || $0 == ":" || $0 == " " || $0 == "\t" })
        if words.isEmpty { return TLSProtocols(allowed: [false, false, true, true]) }
        var allowed = [false, false, false, false]
        for w in words {
            let negate = w.hasPrefix("!")
            let name = negate ? w.dropFirst() : w[...]
            let mask: [Bool]
            switch name {
            case "all", "legacy", "tlsv1": mask = [true, true, true, true]
            case "secure", "default": mask = [false, false, true, true]
            case "tlsv1.0": mask = [true, false, false, false]
            case "tlsv1.1": mask = [false, true, false, false]
            case "tlsv1.2": mask = [false, false, true, false]
            case "tlsv1.3": mask = [false, false, false, true]
            default:
                throw TLSSetupError(key: "", reason: "unknown TLS protocol \"\(w)\" (use all, secure, legacy, tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, or ! before one to remove it)")
            }
            if negate && !allowed.contains(true) { allowed = [true, true, true, true] }
            for i in 0..<4 where mask[i] { allowed[i] = !negate }
        }
        guard allowed.contains(true) else {
            throw TLSSetupError(key: "", reason: "\"\(text)\" leaves no TLS protocol version allowed")
        }
        return TLSProtocols(allowed: allowed)
    }

    func apply(_ ctx: OpaquePointer) {
        let versions: [Int32] = [TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION]
        guard let lo = allowed.firstIndex(of: true), let hi = allowed.lastIndex(of: true) else { return }
        _ = pgs_SSL_CTX_set_min_proto(ctx, versions[lo])
        _ = pgs_SSL_CTX_set_max_proto(ctx, versions[hi])
        for i in lo...hi where !allowed[i] { pgs_SSL_CTX_disable_tls(ctx, Int32(i)) }
    }
}

/// `*_tls_ciphers` (TLS 1.2 and older): as in PgBouncer, "default", "secure", "normal" and "fast" keep
/// OpenSSL's own default list (which follows a system-wide crypto policy where there is one); "all" and
/// "insecure" allow every cipher with authentication and encryption; anything else is an OpenSSL cipher list.
public enum TLSCiphers {
    /// The list to give OpenSSL, nil to keep its default.
    public static func openSSLList(_ text: String) -> String? {
        switch text.lowercased() {
        case "", "default", "secure", "normal", "fast": return nil
        // Older PgBouncer keywords, not in its current documentation.
        case "compat", "legacy": return "HIGH:!aNULL"
        case "insecure", "all": return "ALL:!aNULL:!eNULL"
        default: return text
        }
    }
}
