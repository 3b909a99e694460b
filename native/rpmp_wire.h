/*
 * rpmp_wire.h: the C the wire codec (rpmp/_wire.pyx) needs below Cython: little-endian loads and
 * stores of the protocol's integers, and libxxhash's XXH64 and runtime-dispatched XXH3.
 *
 * Header-only (static inline): everything compiles into the one extension that includes it, so a
 * field read is a load and a byte swap at most, never a call. Included after Python.h (Cython puts
 * it first), which rp_clear_view needs for Py_buffer.
 */
#ifndef RPMP_WIRE_H
#define RPMP_WIRE_H

#include <stdint.h>
#include <string.h>

/* The wire is little-endian; on a big-endian host every load and store swaps. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define RP_LE16(v) __builtin_bswap16(v)
#define RP_LE32(v) __builtin_bswap32(v)
#define RP_LE64(v) __builtin_bswap64(v)
#else
#define RP_LE16(v) (v)
#define RP_LE32(v) (v)
#define RP_LE64(v) (v)
#endif

/* Unaligned loads and stores (memcpy of a constant size compiles to one mov). */
static inline uint16_t rp_ld16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return RP_LE16(v); }
static inline uint32_t rp_ld32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return RP_LE32(v); }
static inline uint64_t rp_ld64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return RP_LE64(v); }
static inline void rp_st16(unsigned char *p, uint16_t v) { v = RP_LE16(v); memcpy(p, &v, 2); }
static inline void rp_st32(unsigned char *p, uint32_t v) { v = RP_LE32(v); memcpy(p, &v, 4); }
static inline void rp_st64(unsigned char *p, uint64_t v) { v = RP_LE64(v); memcpy(p, &v, 8); }

/* Mark a Py_buffer as holding nothing: PyBuffer_Release of it is then a no-op (bytes are read without
 * a buffer export, and the same release path serves both). */
#define rp_clear_view(v) ((v)->obj = NULL)

/* XXH64 inlined from the header; XXH3 from libxxhash's dispatcher (xxh_x86dispatch.c: SSE2, AVX2 or
 * AVX512 picked by CPUID at first use), which the inline build cannot do. */
#define XXH_INLINE_ALL
#include <xxhash.h>
XXH64_hash_t XXH3_64bits_dispatch(const void *input, size_t len);

#endif /* RPMP_WIRE_H */
