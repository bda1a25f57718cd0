// OpenSSL headers pgswift uses: libcrypto for hashes/HMAC/PBKDF2/random, libssl for TLS.
#ifndef PGSWIFT_COPENSSL_SHIM_H
#define PGSWIFT_COPENSSL_SHIM_H
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
#endif
