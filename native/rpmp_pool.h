/*
 * rpmp_pool: RPMP's persistent block store over PMDK's libpmemobj.
 *
 * A pool file holds blocks. Every block starts with a persistent header (magic, version, key,
 * capacity, used, state, payload checksum) followed by `capacity` payload bytes. Writes persist the
 * bytes before they persist the new `used` (an aligned 8-byte store), so after any crash the first
 * `used` bytes of a block are exactly what was acknowledged and nothing half-written is visible.
 * Opening a pool scans every object, drops blocks whose header is damaged and blocks that were
 * allocated with RPMP_BLOCK_SEAL_REQUIRED but never sealed, and rebuilds the counters. With verify,
 * sealed and CHECKED blocks whose payload does not match their checksum are kept and reported
 * (rpmp_pool_corrupt), never silently dropped: a lost value would turn a detectable corruption into a
 * "not found".
 *
 * RPMP_BLOCK_CHECKED blocks are written with rpmp_block_tx_write: one libpmemobj transaction per write,
 * so after a crash a block holds exactly the old or the new content, and its checksum always covers
 * payload[0:used).
 *
 * Every function returns RPMP_OK or a negative rpmp_err; rpmp_last_error() gives a message for the
 * calling thread. Nothing here aborts the process.
 */
#ifndef RPMP_POOL_H
#define RPMP_POOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RPMP_POOL_LAYOUT "rpmp-pool-v1"
#define RPMP_BLOCK_MAGIC 0x314B4C42504D5052ULL /* "RPMPBLK1" little-endian */
#define RPMP_BLOCK_VERSION 1u
#define RPMP_HDR_SIZE 256u
#define RPMP_KEY_MAX 192u
/* libpmemobj puts a 16-byte allocation header in front of large objects and rounds them up to
 * 256 KiB chunks: a block whose object is exactly 4 MiB would take 17 chunks, so the default block
 * leaves room for both headers and fills 16 chunks exactly. */
#define RPMP_ALLOC_OVERHEAD 16u
#define RPMP_DEFAULT_BLOCK_CAPACITY ((4u << 20) - RPMP_HDR_SIZE - RPMP_ALLOC_OVERHEAD)
#define RPMP_MAX_BLOCK_CAPACITY ((uint64_t)15 << 30)
#define RPMP_MIN_POOL_SIZE ((uint64_t)8 << 20)

enum rpmp_err {
    RPMP_OK = 0,
    RPMP_E_NOENT = -1,    /* pool file missing */
    RPMP_E_LAYOUT = -2,   /* not an RPMP pool, or another layout/version */
    RPMP_E_LOCKED = -3,   /* pool open in another process */
    RPMP_E_FULL = -4,     /* no room for the allocation */
    RPMP_E_SIZE = -5,     /* bad size (pool size, capacity, write past capacity) */
    RPMP_E_KEY = -6,      /* key too long */
    RPMP_E_BLOCK = -7,    /* not a live block of this pool */
    RPMP_E_STATE = -8,    /* block sealed: no more writes */
    RPMP_E_EXISTS = -9,   /* pool file already exists */
    RPMP_E_IO = -10,      /* any other system error */
    RPMP_E_CORRUPT = -11, /* a sealed or CHECKED block's checksum does not match its payload */
};

/* RETIRED: deleted while zero-copy readers still map it; its bytes stay in place for them, but the
 * deletion is durable: the open scan frees a retired block, so a crash can never bring it back. */
enum rpmp_block_state { RPMP_BLOCK_OPEN = 1, RPMP_BLOCK_SEALED = 2, RPMP_BLOCK_RETIRED = 3 };

/* Block flags chosen at allocation. */
#define RPMP_BLOCK_SEAL_REQUIRED 0x1u /* content counts only once sealed; unsealed after a crash = freed */
/* The header checksum always covers payload[0:used), also while the block is open. Such a block is
 * written only through rpmp_block_tx_write (rpmp_block_write/append go through it; reserve, flush and
 * publish are refused with RPMP_E_STATE, they could not keep the checksum). */
#define RPMP_BLOCK_CHECKED 0x2u
#define RPMP_BLOCK_FLAGS (RPMP_BLOCK_SEAL_REQUIRED | RPMP_BLOCK_CHECKED)

typedef struct rpmp_pool rpmp_pool;

struct rpmp_block_info {
    uint64_t id;             /* the block's pool address (object offset in the pool file) */
    uint64_t payload_offset; /* file offset of the first payload byte (for one-sided readers) */
    uint64_t capacity;
    uint64_t used;
    uint64_t checksum; /* XXH64 (seed 0) of payload[0:used); valid when sealed or CHECKED */
    uint32_t state;
    uint32_t flags;
    uint32_t key_len;
    uint8_t key[RPMP_KEY_MAX];
};

struct rpmp_stats {
    uint64_t pool_size;       /* bytes of the pool file */
    uint64_t allocated_bytes; /* bytes taken by blocks, headers included */
    uint64_t used_bytes;      /* published payload bytes */
    uint64_t blocks;
    uint64_t open_blocks;
    uint64_t sealed_blocks;
};

struct rpmp_recovery {
    uint64_t blocks_kept;    /* blocks left in the pool, the corrupt ones included */
    uint64_t freed_damaged;  /* header failed validation */
    uint64_t freed_unsealed; /* SEAL_REQUIRED block not sealed before the crash */
    uint64_t freed_retired;  /* retired (deleted while read) before the crash */
    uint64_t corrupt;        /* kept sealed/CHECKED blocks whose payload fails its checksum (only with verify) */
};

const char *rpmp_last_error(void);
const char *rpmp_err_name(int err);

int rpmp_pool_create(const char *path, uint64_t size, rpmp_pool **out);
int rpmp_pool_open(const char *path, int verify, rpmp_pool **out, struct rpmp_recovery *rec);
/* Ids of the blocks the open scan found corrupt: copies up to max of them into ids (may be NULL when
 * max is 0) and returns how many there are. */
uint64_t rpmp_pool_corrupt(const rpmp_pool *pool, uint64_t *ids, uint64_t max);
void rpmp_pool_close(rpmp_pool *pool);
const char *rpmp_pool_path(const rpmp_pool *pool);
/* Base address of the pool mapping: a block's payload lives at base + payload_offset. */
void *rpmp_pool_base(const rpmp_pool *pool);
int rpmp_pool_stats(rpmp_pool *pool, struct rpmp_stats *out);

int rpmp_block_alloc(rpmp_pool *pool, const void *key, uint32_t key_len, uint64_t capacity,
                     uint32_t flags, uint64_t *id_out);
/* Persist len bytes at offset, then publish used = max(used, offset + len). On a CHECKED block this is
 * rpmp_block_tx_write. */
int rpmp_block_write(rpmp_pool *pool, uint64_t id, uint64_t offset, const void *src, uint64_t len);
/* Write at the current end; *offset_out (may be NULL) gets where the bytes landed. */
int rpmp_block_append(rpmp_pool *pool, uint64_t id, const void *src, uint64_t len, uint64_t *offset_out);
/* Zero-copy writes (a network receive straight into the pool), in three steps:
 *   reserve: a pointer to len writable bytes at `offset` (offset + len <= capacity); bytes past `used`
 *            are invisible until published, bytes below it are overwritten in place;
 *   flush:   write back a range while it is still in cache (optional, no drain);
 *   publish: flush what is not flushed yet, drain, then persist used = max(used, offset + len). */
int rpmp_block_reserve(rpmp_pool *pool, uint64_t id, uint64_t offset, uint64_t len, uint8_t **ptr);
int rpmp_block_flush(rpmp_pool *pool, uint64_t id, uint64_t offset, uint64_t len);
int rpmp_block_publish(rpmp_pool *pool, uint64_t id, uint64_t offset, uint64_t len, int flushed);
/* Failure-atomic write, in one libpmemobj transaction: zero-fill the gap [used, offset) when offset is
 * past the published end (a reader never sees an earlier tenant's bytes), copy len bytes to offset,
 * set used = max(used, offset + len) and, on a CHECKED block, checksum = XXH64(payload[0:used)). A
 * crash at any point leaves exactly the old or the new content (libpmemobj rolls an unfinished
 * transaction back at open). RPMP_E_SIZE past capacity, RPMP_E_STATE on a sealed block, RPMP_E_FULL
 * when the pool has no room for the undo log of the overwritten bytes. */
int rpmp_block_tx_write(rpmp_pool *pool, uint64_t id, uint64_t offset, const void *src, uint64_t len);
int rpmp_block_read(rpmp_pool *pool, uint64_t id, uint64_t offset, void *dst, uint64_t len);
/* Pointer to payload byte 0 and the published length; valid while the block lives. */
int rpmp_block_data(rpmp_pool *pool, uint64_t id, const uint8_t **data, uint64_t *used);
int rpmp_block_seal(rpmp_pool *pool, uint64_t id);
/* Mark a block deleted, durably, without freeing it (readers still use its bytes): no more writes, seal
 * or retire; free() it once the readers are done; a crash before that frees it at open. */
int rpmp_block_retire(rpmp_pool *pool, uint64_t id);
int rpmp_block_free(rpmp_pool *pool, uint64_t id);
int rpmp_block_info(rpmp_pool *pool, uint64_t id, struct rpmp_block_info *out);
/* RPMP_E_CORRUPT when a sealed or CHECKED block's payload no longer matches its checksum. */
int rpmp_block_verify(rpmp_pool *pool, uint64_t id);
/* Iterate live blocks: start with prev = 0; returns RPMP_OK with *next = 0 at the end. */
int rpmp_pool_next(rpmp_pool *pool, uint64_t prev, uint64_t *next);

#ifdef __cplusplus
}
#endif
#endif
