// OpenSSL headers pgswift uses: libcrypto for hashes/HMAC/PBKDF2/random, libssl for TLS, plus inline
// wrappers for the OpenSSL macros Swift cannot call.
#ifndef PGSWIFT_COPENSSL_SHIM_H
#define PGSWIFT_COPENSSL_SHIM_H
#include <string.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/md5.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>
#include <openssl/objects.h>

static inline long pgs_SSL_CTX_set_min_proto(SSL_CTX *c, int v) { return SSL_CTX_set_min_proto_version(c, v); }
static inline long pgs_SSL_CTX_set_max_proto(SSL_CTX *c, int v) { return SSL_CTX_set_max_proto_version(c, v); }
static inline long pgs_SSL_CTX_set_mode(SSL_CTX *c, long m) { return SSL_CTX_set_mode(c, m); }
static inline void pgs_SSL_CTX_harden(SSL_CTX *c) { SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION); }
/* i: 0 = TLS 1.0, 1 = TLS 1.1, 2 = TLS 1.2, 3 = TLS 1.3 */
static inline void pgs_SSL_CTX_disable_tls(SSL_CTX *c, int i) {
    static const uint64_t flags[4] = { SSL_OP_NO_TLSv1, SSL_OP_NO_TLSv1_1, SSL_OP_NO_TLSv1_2, SSL_OP_NO_TLSv1_3 };
    if (i >= 0 && i < 4) SSL_CTX_set_options(c, flags[i]);
}
static inline long pgs_SSL_set_tlsext_host_name(SSL *s, const char *name) { return SSL_set_tlsext_host_name(s, name); }
static inline void pgs_BIO_set_retry_read(BIO *b) { BIO_set_retry_read(b); }
static inline void pgs_BIO_clear_retry_flags(BIO *b) { BIO_clear_retry_flags(b); }
static inline X509 *pgs_SSL_get_peer_certificate(const SSL *s) { return SSL_get1_peer_certificate(s); }
static inline void pgs_OPENSSL_free(void *p) { OPENSSL_free(p); }
static inline long pgs_SSL_CTX_set_session_cache_mode(SSL_CTX *c, long m) { return SSL_CTX_set_session_cache_mode(c, m); }
static inline long pgs_SSL_CTX_set_dh_auto(SSL_CTX *c, int onoff) { return SSL_CTX_set_dh_auto(c, onoff); }
static inline long pgs_SSL_CTX_set1_groups_list(SSL_CTX *c, const char *list) { return SSL_CTX_set1_groups_list(c, list); }
/* SHA-256 and HMAC-SHA-256 on libcrypto's low-level SHA256_* (deprecated in OpenSSL 3, still exported):
 * no provider dispatch, no context allocation. A SCRAM login hashes a few hundred bytes, where the EVP
 * layer's per-call overhead cost as much as the hashing itself. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wdeprecated-declarations"
static inline void pgs_sha256(const void *d, size_t n, unsigned char out[32]) {
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, d, n);
    SHA256_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof c);
}
static inline void pgs_hmac_sha256(const unsigned char *key, size_t klen, const void *d, size_t n,
                                   unsigned char out[32]) {
    unsigned char k[64] = {0}, pad[64], inner[32];
    SHA256_CTX c;
    if (klen > 64) { pgs_sha256(key, klen, k); } else if (klen > 0) { memcpy(k, key, klen); }
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    SHA256_Init(&c);
    SHA256_Update(&c, pad, 64);
    SHA256_Update(&c, d, n);
    SHA256_Final(inner, &c);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    SHA256_Init(&c);
    SHA256_Update(&c, pad, 64);
    SHA256_Update(&c, inner, 32);
    SHA256_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof c);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(inner, sizeof inner);
}
/* HMAC-SHA-256 with the key's padded blocks hashed once: `states` holds the SHA-256 chaining values
 * after key^ipad (words 0-7) and after key^opad (words 8-15). A SCRAM secret's two keys are used for
 * every login: preparing them once saves 4 of the 13 SHA-256 blocks a login hashes. */
static inline void pgs_hmac_sha256_prepare(const unsigned char *key, size_t klen, unsigned int states[16]) {
    unsigned char k[64] = {0}, pad[64];
    SHA256_CTX c;
    if (klen > 64) { pgs_sha256(key, klen, k); } else if (klen > 0) { memcpy(k, key, klen); }
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    SHA256_Init(&c);
    SHA256_Update(&c, pad, 64);
    memcpy(states, c.h, 32);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    SHA256_Init(&c);
    SHA256_Update(&c, pad, 64);
    memcpy(states + 8, c.h, 32);
    OPENSSL_cleanse(&c, sizeof c);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(pad, sizeof pad);
}
/* A context that has hashed exactly one 64-byte block whose chaining value is `h`. */
static inline void pgs_sha256_resume(SHA256_CTX *c, const unsigned int h[8]) {
    SHA256_Init(c);
    memcpy(c->h, h, 32);
    c->Nl = 512;
    c->Nh = 0;
    c->num = 0;
}
static inline void pgs_hmac_sha256_prepared(const unsigned int states[16], const void *d, size_t n,
                                            unsigned char out[32]) {
    unsigned char inner[32];
    SHA256_CTX c;
    pgs_sha256_resume(&c, states);
    SHA256_Update(&c, d, n);
    SHA256_Final(inner, &c);
    pgs_sha256_resume(&c, states + 8);
    SHA256_Update(&c, inner, 32);
    SHA256_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof c);
    OPENSSL_cleanse(inner, sizeof inner);
}
#pragma clang diagnostic pop
#endif
