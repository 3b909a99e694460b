/*
 * rpmp_pool.c: see rpmp_pool.h for the contract.
 *
 * Block layout inside a libpmemobj object (type RPMP_TYPE_BLOCK):
 *   [0, 224)   immutable part: magic, version, flags, capacity, key_len, key (zero padded)
 *   [224, 232) hdr_check = XXH64 of the immutable part; a header failing it is damaged
 *   [232, 240) used      (persisted after the bytes it publishes)
 *   [240, 248) checksum  (XXH64 of payload[0:used), persisted before state becomes SEALED; on a
 *              CHECKED block kept equal to it by every write, in the write's transaction)
 *   [248, 252) state
 *   [256, ...) payload
 */
#define _GNU_SOURCE
#include "rpmp_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <libpmemobj.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define RPMP_TYPE_BLOCK 0x52504d50u
#define HDR_IMMUTABLE 224u

struct block_hdr {
    uint64_t magic;
    uint32_t version;
    uint32_t flags;
    uint64_t capacity;
    uint32_t key_len;
    uint32_t pad0;
    uint8_t key[RPMP_KEY_MAX];
    uint64_t hdr_check;
    uint64_t used;
    uint64_t checksum;
    uint32_t state;
    uint32_t pad1;
};

_Static_assert(sizeof(struct block_hdr) == RPMP_HDR_SIZE, "block header must be 256 bytes");
_Static_assert(offsetof(struct block_hdr, hdr_check) == HDR_IMMUTABLE, "immutable part is 224 bytes");

struct rpmp_pool {
    PMEMobjpool *pop;
    uint64_t uuid_lo;
    uint64_t size;
    char *path;
    int volatile_medium; /* tmpfs: cache write-backs buy nothing (see prepare()) */
    /* counters, rebuilt by the open scan; updated atomically */
    uint64_t allocated_bytes;
    uint64_t used_bytes;
    uint64_t blocks;
    uint64_t open_blocks;
    uint64_t sealed_blocks;
    /* blocks the open scan found corrupt (kept, reported) */
    uint64_t *corrupt;
    uint64_t ncorrupt;
};

static __thread char errbuf[512];

const char *rpmp_last_error(void) { return errbuf; }

static int fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return err;
}

const char *rpmp_err_name(int err) {
    switch (err) {
    case RPMP_OK: return "OK";
    case RPMP_E_NOENT: return "NOENT";
    case RPMP_E_LAYOUT: return "LAYOUT";
    case RPMP_E_LOCKED: return "LOCKED";
    case RPMP_E_FULL: return "FULL";
    case RPMP_E_SIZE: return "SIZE";
    case RPMP_E_KEY: return "KEY";
    case RPMP_E_BLOCK: return "BLOCK";
    case RPMP_E_STATE: return "STATE";
    case RPMP_E_EXISTS: return "EXISTS";
    case RPMP_E_IO: return "IO";
    case RPMP_E_CORRUPT: return "CORRUPT";
    default: return "UNKNOWN";
    }
}

#define ADD(field, v) __atomic_add_fetch(&pool->field, (uint64_t)(v), __ATOMIC_RELAXED)
#define SUB(field, v) __atomic_sub_fetch(&pool->field, (uint64_t)(v), __ATOMIC_RELAXED)
#define GET(field) __atomic_load_n(&pool->field, __ATOMIC_RELAXED)

static inline struct block_hdr *hdr_at(rpmp_pool *pool, uint64_t id) {
    return (struct block_hdr *)((char *)pool->pop + id);
}

static inline uint8_t *payload_of(struct block_hdr *h) { return (uint8_t *)h + RPMP_HDR_SIZE; }

static inline uint64_t alloc_size(uint64_t capacity) { return RPMP_HDR_SIZE + capacity; }

/* Publish used = max(used, end): an aligned 8-byte store, atomic with respect to a crash. A CAS loop so
 * that two threads publishing into one block (the GIL is released around writes) can never move `used`
 * backwards nor count a negative growth into used_bytes. */
static void advance_used(rpmp_pool *pool, struct block_hdr *h, uint64_t end) {
    uint64_t cur = __atomic_load_n(&h->used, __ATOMIC_ACQUIRE);
    while (end > cur) {
        if (__atomic_compare_exchange_n(&h->used, &cur, end, 0, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE)) {
            pmemobj_persist(pool->pop, &h->used, sizeof h->used);
            ADD(used_bytes, end - cur);
            return;
        }
    }
}

static inline int range_ok(uint64_t capacity, uint64_t offset, uint64_t len) {
    return offset <= capacity && len <= capacity - offset; /* no offset + len: it could wrap */
}

/* A header is valid when its immutable part hashes to hdr_check and its mutable fields are sane. */
static int hdr_valid(const struct block_hdr *h) {
    if (h->magic != RPMP_BLOCK_MAGIC || h->version != RPMP_BLOCK_VERSION) return 0;
    if (h->key_len > RPMP_KEY_MAX || h->capacity > RPMP_MAX_BLOCK_CAPACITY) return 0;
    if (XXH64(h, HDR_IMMUTABLE, 0) != h->hdr_check) return 0;
    if (h->used > h->capacity) return 0;
    return h->state == RPMP_BLOCK_OPEN || h->state == RPMP_BLOCK_SEALED || h->state == RPMP_BLOCK_RETIRED;
}

/* Resolve a caller's block id; anything that is not a live, valid block header is RPMP_E_BLOCK. */
static int lookup(rpmp_pool *pool, uint64_t id, struct block_hdr **out) {
    if (id < 4096 || id > pool->size - RPMP_HDR_SIZE || (id & 7))
        return fail(RPMP_E_BLOCK, "block 0x%llx is outside the pool", (unsigned long long)id);
    struct block_hdr *h = hdr_at(pool, id);
    if (!hdr_valid(h) || id + alloc_size(h->capacity) > pool->size)
        return fail(RPMP_E_BLOCK, "no live block at 0x%llx", (unsigned long long)id);
    *out = h;
    return RPMP_OK;
}

#define TMPFS_MAGIC_NUMBER 0x01021994

/* Settings that must be in place before libpmem first looks at a mapping.
 * - prefault: touch every page at open so the first writes do not pay for page faults;
 * - on tmpfs (/dev/shm, the PMem stand-in) the page cache is the medium: a process crash cannot lose
 *   a store, and msync would only cost time, so libpmem is told to flush with CPU instructions as on
 *   real PMem. libpmem reads PMEM_IS_PMEM_FORCE once per process, so the first pool opened decides;
 *   an explicit PMEM_IS_PMEM_FORCE in the environment always wins. */
static int on_tmpfs(const char *path) {
    struct statfs fs;
    char *copy = strdup(path);
    int rc = copy ? statfs(path, &fs) : -1;
    if (rc != 0 && copy) rc = statfs(dirname(copy), &fs);
    free(copy);
    return rc == 0 && (unsigned long)fs.f_type == TMPFS_MAGIC_NUMBER;
}

static void prepare(const char *path) {
    int one = 1;
    pmemobj_ctl_set(NULL, "prefault.at_open", &one);
    pmemobj_ctl_set(NULL, "prefault.at_create", &one);
    if (!getenv("PMEM_IS_PMEM_FORCE") && on_tmpfs(path)) setenv("PMEM_IS_PMEM_FORCE", "1", 0);
}

static int map_open_errno(const char *path, int e) {
    const char *msg = pmemobj_errormsg();
    if (e == ENOENT) return fail(RPMP_E_NOENT, "pool %s does not exist", path);
    if (e == EWOULDBLOCK || e == EAGAIN)
        return fail(RPMP_E_LOCKED, "pool %s is open in another process (%s)", path, msg);
    if (e == EINVAL || e == EPROTO || e == ENOTSUP || e == EOPNOTSUPP)
        return fail(RPMP_E_LAYOUT, "%s is not an RPMP pool of layout %s (%s)", path, RPMP_POOL_LAYOUT, msg);
    if (e == ENOSPC) return fail(RPMP_E_FULL, "no space for pool %s (%s)", path, msg);
    return fail(RPMP_E_IO, "pool %s: %s (%s)", path, strerror(e), msg);
}

static int pool_wrap(PMEMobjpool *pop, const char *path, rpmp_pool **out) {
    rpmp_pool *pool = calloc(1, sizeof *pool);
    if (!pool) {
        pmemobj_close(pop);
        return fail(RPMP_E_IO, "out of memory");
    }
    struct stat st;
    pool->pop = pop;
    pool->path = strdup(path);
    /* lookup() bounds every caller's id by the size: without it no id could be checked */
    if (!pool->path || stat(path, &st) != 0 || (uint64_t)st.st_size < RPMP_MIN_POOL_SIZE) {
        int e = errno;
        pmemobj_close(pop);
        free(pool->path);
        free(pool);
        return fail(RPMP_E_IO, "pool %s: cannot tell its size (%s)", path, strerror(e));
    }
    pool->size = (uint64_t)st.st_size;
    pool->uuid_lo = pmemobj_oid((char *)pop + 4096).pool_uuid_lo;
    /* Bytes received straight into a tmpfs pool need no cache write-back: the page cache is the
     * medium, a process crash loses no store and a power cut loses everything anyway. Ordering
     * fences stay. RPMP_FLUSH=1 forces write-backs (to measure what real PMem would pay). */
    const char *force = getenv("RPMP_FLUSH");
    pool->volatile_medium = on_tmpfs(path) && !(force && *force == '1');
    *out = pool;
    return RPMP_OK;
}

int rpmp_pool_create(const char *path, uint64_t size, rpmp_pool **out) {
    if (!path || !*path) return fail(RPMP_E_IO, "empty pool path");
    if (size < RPMP_MIN_POOL_SIZE)
        return fail(RPMP_E_SIZE, "pool size %llu is below the minimum of %llu bytes",
                    (unsigned long long)size, (unsigned long long)RPMP_MIN_POOL_SIZE);
    if (access(path, F_OK) == 0) return fail(RPMP_E_EXISTS, "pool %s already exists", path);
    prepare(path);
    PMEMobjpool *pop = pmemobj_create(path, RPMP_POOL_LAYOUT, (size_t)size, 0600);
    if (!pop) return map_open_errno(path, errno);
    return pool_wrap(pop, path, out);
}

static inline int has_checksum(const struct block_hdr *h) {
    return h->state == RPMP_BLOCK_SEALED || (h->flags & RPMP_BLOCK_CHECKED);
}

static int note_corrupt(rpmp_pool *pool, uint64_t id) {
    uint64_t n = pool->ncorrupt;
    if ((n & (n - 1)) == 0) { /* 0, 1, 2, 4, ...: grow to the next power of two */
        uint64_t *grown = realloc(pool->corrupt, (n ? 2 * n : 1) * sizeof *grown);
        if (!grown) return -1;
        pool->corrupt = grown;
    }
    pool->corrupt[pool->ncorrupt++] = id;
    return 0;
}

/* The recovery scan: keep valid blocks, free damaged ones and unsealed SEAL_REQUIRED ones. With verify,
 * sealed and CHECKED blocks whose payload fails the checksum are kept and listed in pool->corrupt. */
static int recover(rpmp_pool *pool, int verify, struct rpmp_recovery *rec) {
    PMEMoid oid = pmemobj_first(pool->pop);
    while (!OID_IS_NULL(oid)) {
        PMEMoid next = pmemobj_next(oid);
        if (pmemobj_type_num(oid) == RPMP_TYPE_BLOCK) {
            struct block_hdr *h = pmemobj_direct(oid);
            size_t usable = pmemobj_alloc_usable_size(oid);
            int drop = 0;
            if (usable < RPMP_HDR_SIZE || !hdr_valid(h) || alloc_size(h->capacity) > usable) {
                rec->freed_damaged++;
                drop = 1;
            } else if (h->state == RPMP_BLOCK_OPEN && (h->flags & RPMP_BLOCK_SEAL_REQUIRED)) {
                rec->freed_unsealed++;
                drop = 1;
            } else if (h->state == RPMP_BLOCK_RETIRED) {
                rec->freed_retired++;
                drop = 1;
            } else if (verify && has_checksum(h) && XXH64(payload_of(h), h->used, 0) != h->checksum) {
                rec->corrupt++;
                if (note_corrupt(pool, oid.off) != 0) return fail(RPMP_E_IO, "out of memory");
            }
            if (drop) {
                if (usable >= sizeof(uint64_t)) {
                    h->magic = 0;
                    pmemobj_persist(pool->pop, &h->magic, sizeof h->magic);
                }
                pmemobj_free(&oid);
            } else {
                rec->blocks_kept++;
                pool->blocks++;
                pool->allocated_bytes += alloc_size(h->capacity);
                pool->used_bytes += h->used;
                if (h->state == RPMP_BLOCK_SEALED) pool->sealed_blocks++;
                else pool->open_blocks++;
            }
        }
        oid = next;
    }
    return RPMP_OK;
}

int rpmp_pool_open(const char *path, int verify, rpmp_pool **out, struct rpmp_recovery *rec) {
    if (!path || !*path) return fail(RPMP_E_IO, "empty pool path");
    if (access(path, F_OK) != 0) return fail(RPMP_E_NOENT, "pool %s does not exist", path);
    prepare(path);
    PMEMobjpool *pop = pmemobj_open(path, RPMP_POOL_LAYOUT);
    if (!pop) return map_open_errno(path, errno);
    int rc = pool_wrap(pop, path, out);
    if (rc != RPMP_OK) return rc;
    struct rpmp_recovery local;
    if (!rec) rec = &local;
    memset(rec, 0, sizeof *rec);
    rc = recover(*out, verify, rec);
    if (rc != RPMP_OK) {
        rpmp_pool_close(*out);
        *out = NULL;
    }
    return rc;
}

uint64_t rpmp_pool_corrupt(const rpmp_pool *pool, uint64_t *ids, uint64_t max) {
    uint64_t n = pool->ncorrupt < max ? pool->ncorrupt : max;
    if (n) memcpy(ids, pool->corrupt, n * sizeof *ids);
    return pool->ncorrupt;
}

void rpmp_pool_close(rpmp_pool *pool) {
    if (!pool) return;
    pmemobj_close(pool->pop);
    free(pool->corrupt);
    free(pool->path);
    free(pool);
}

const char *rpmp_pool_path(const rpmp_pool *pool) { return pool->path; }

void *rpmp_pool_base(const rpmp_pool *pool) { return pool->pop; }

int rpmp_pool_stats(rpmp_pool *pool, struct rpmp_stats *out) {
    out->pool_size = pool->size;
    out->allocated_bytes = GET(allocated_bytes);
    out->used_bytes = GET(used_bytes);
    out->blocks = GET(blocks);
    out->open_blocks = GET(open_blocks);
    out->sealed_blocks = GET(sealed_blocks);
    return RPMP_OK;
}

struct ctor_arg {
    const void *key;
    uint32_t key_len;
    uint32_t flags;
    uint64_t capacity;
};

/* Runs inside pmemobj_xalloc: the object becomes reachable only after this returns 0. */
static int block_ctor(PMEMobjpool *pop, void *ptr, void *varg) {
    const struct ctor_arg *a = varg;
    struct block_hdr *h = ptr;
    memset(h, 0, sizeof *h);
    h->magic = RPMP_BLOCK_MAGIC;
    h->version = RPMP_BLOCK_VERSION;
    h->flags = a->flags;
    h->capacity = a->capacity;
    h->key_len = a->key_len;
    if (a->key_len) memcpy(h->key, a->key, a->key_len);
    h->hdr_check = XXH64(h, HDR_IMMUTABLE, 0);
    h->checksum = XXH64(NULL, 0, 0); /* of the empty payload: a CHECKED block verifies from the start */
    h->state = RPMP_BLOCK_OPEN;
    pmemobj_persist(pop, h, sizeof *h);
    return 0;
}

int rpmp_block_alloc(rpmp_pool *pool, const void *key, uint32_t key_len, uint64_t capacity,
                     uint32_t flags, uint64_t *id_out) {
    if (key_len > RPMP_KEY_MAX)
        return fail(RPMP_E_KEY, "key of %u bytes is longer than %u", key_len, RPMP_KEY_MAX);
    if (key_len && !key) return fail(RPMP_E_KEY, "null key");
    if (capacity > RPMP_MAX_BLOCK_CAPACITY || alloc_size(capacity) > pool->size)
        return fail(RPMP_E_SIZE, "block capacity %llu is larger than the pool allows",
                    (unsigned long long)capacity);
    if (flags & ~RPMP_BLOCK_FLAGS) return fail(RPMP_E_SIZE, "unknown block flags 0x%x", flags);
    struct ctor_arg a = {key, key_len, flags, capacity};
    PMEMoid oid;
    if (pmemobj_xalloc(pool->pop, &oid, alloc_size(capacity), RPMP_TYPE_BLOCK, POBJ_XALLOC_NO_FLUSH,
                       block_ctor, &a) != 0) {
        int e = errno;
        if (e == ENOMEM)
            return fail(RPMP_E_FULL, "pool %s is full: no room for a block of %llu bytes", pool->path,
                        (unsigned long long)capacity);
        return fail(RPMP_E_IO, "allocation of %llu bytes failed: %s", (unsigned long long)capacity,
                    pmemobj_errormsg());
    }
    ADD(blocks, 1);
    ADD(open_blocks, 1);
    ADD(allocated_bytes, alloc_size(capacity));
    *id_out = oid.off;
    return RPMP_OK;
}

static int check_write(struct block_hdr *h, uint64_t id, uint64_t offset, uint64_t len) {
    if (h->state != RPMP_BLOCK_OPEN) return fail(RPMP_E_STATE, "block 0x%llx is sealed", (unsigned long long)id);
    if (!range_ok(h->capacity, offset, len))
        return fail(RPMP_E_SIZE, "write of %llu bytes at %llu exceeds the block's capacity of %llu",
                    (unsigned long long)len, (unsigned long long)offset, (unsigned long long)h->capacity);
    return RPMP_OK;
}

static int tx_write(rpmp_pool *pool, struct block_hdr *h, uint64_t id, uint64_t offset, const void *src,
                    uint64_t len);

int rpmp_block_write(rpmp_pool *pool, uint64_t id, uint64_t offset, const void *src, uint64_t len) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc == RPMP_OK) rc = check_write(h, id, offset, len);
    if (rc) return rc;
    if (h->flags & RPMP_BLOCK_CHECKED) return tx_write(pool, h, id, offset, src, len);
    /* memmove: src may be a view of this very block (libpmem's copy is a memmove either way) */
    if (len) pmemobj_memmove(pool->pop, payload_of(h) + offset, src, (size_t)len, 0);
    advance_used(pool, h, offset + len);
    return RPMP_OK;
}

/* A failure-atomic write in one libpmemobj transaction. Only what a crash could expose is undo-logged:
 * the header's used and checksum, and the published bytes the write overwrites. The gap and the new
 * bytes past the old `used` are invisible until the transaction commits the new `used` (a rollback
 * brings the old `used` back), so they are persisted directly, before the commit. */
static int tx_write(rpmp_pool *pool, struct block_hdr *h, uint64_t id, uint64_t offset, const void *src,
                    uint64_t len) {
    uint8_t *payload = payload_of(h);
    uint64_t used = __atomic_load_n(&h->used, __ATOMIC_ACQUIRE);
    uint64_t end = offset + len; /* no wrap: check_write bounded both by the capacity */
    uint64_t new_used = end > used ? end : used;
    uint64_t overwrite = offset < used ? (end < used ? end : used) - offset : 0;
    if (pmemobj_tx_begin(pool->pop, NULL, TX_PARAM_NONE) != 0)
        return fail(RPMP_E_IO, "block 0x%llx: cannot begin a transaction: %s", (unsigned long long)id,
                    pmemobj_errormsg());
    int err = 0;
    _Static_assert(offsetof(struct block_hdr, checksum) == offsetof(struct block_hdr, used) + 8,
                   "used and checksum are one 16-byte range");
    if (pmemobj_tx_xadd_range_direct(&h->used, 2 * sizeof(uint64_t), POBJ_XADD_NO_ABORT) != 0) err = errno;
    /* the data is stored with non-temporal stores below: nothing left for the commit to flush */
    if (!err && overwrite &&
        pmemobj_tx_xadd_range_direct(payload + offset, (size_t)overwrite, POBJ_XADD_NO_ABORT | POBJ_XADD_NO_FLUSH) != 0)
        err = errno;
    if (!err) {
        if (offset > used) pmemobj_memset_persist(pool->pop, payload + used, 0, (size_t)(offset - used));
        if (len) pmemobj_memmove(pool->pop, payload + offset, src, (size_t)len, 0);
        if (h->flags & RPMP_BLOCK_CHECKED) h->checksum = XXH64(payload, (size_t)new_used, 0);
        __atomic_store_n(&h->used, new_used, __ATOMIC_RELEASE);
        pmemobj_tx_commit();
    } else {
        pmemobj_tx_abort(err ? err : EINVAL);
    }
    int txerr = pmemobj_tx_end();
    if (err || txerr) {
        int e = err ? err : txerr;
        if (e == ENOMEM)
            return fail(RPMP_E_FULL, "pool %s is full: no room to log a write of %llu bytes into block 0x%llx",
                        pool->path, (unsigned long long)len, (unsigned long long)id);
        return fail(RPMP_E_IO, "transactional write into block 0x%llx failed: %s (%s)", (unsigned long long)id,
                    strerror(e), pmemobj_errormsg());
    }
    if (new_used > used) ADD(used_bytes, new_used - used);
    return RPMP_OK;
}

int rpmp_block_tx_write(rpmp_pool *pool, uint64_t id, uint64_t offset, const void *src, uint64_t len) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc == RPMP_OK) rc = check_write(h, id, offset, len);
    if (rc) return rc;
    return tx_write(pool, h, id, offset, src, len);
}

/* reserve/flush/publish: writes that bypass the transaction, so not for CHECKED blocks. */
static int check_range(struct block_hdr *h, uint64_t id, uint64_t offset, uint64_t len) {
    if (h->state != RPMP_BLOCK_OPEN) return fail(RPMP_E_STATE, "block 0x%llx is sealed", (unsigned long long)id);
    if (h->flags & RPMP_BLOCK_CHECKED)
        return fail(RPMP_E_STATE, "block 0x%llx is checked: zero-copy writes cannot keep its checksum, use tx_write",
                    (unsigned long long)id);
    if (!range_ok(h->capacity, offset, len))
        return fail(RPMP_E_SIZE, "%llu bytes at %llu exceed the block's capacity of %llu", (unsigned long long)len,
                    (unsigned long long)offset, (unsigned long long)h->capacity);
    return RPMP_OK;
}

int rpmp_block_reserve(rpmp_pool *pool, uint64_t id, uint64_t offset, uint64_t len, uint8_t **ptr) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc == RPMP_OK) rc = check_range(h, id, offset, len);
    if (rc == RPMP_OK) *ptr = payload_of(h) + offset;
    return rc;
}

int rpmp_block_flush(rpmp_pool *pool, uint64_t id, uint64_t offset, uint64_t len) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc == RPMP_OK) rc = check_range(h, id, offset, len);
    if (rc == RPMP_OK && len && !pool->volatile_medium) pmemobj_flush(pool->pop, payload_of(h) + offset, (size_t)len);
    return rc;
}

int rpmp_block_publish(rpmp_pool *pool, uint64_t id, uint64_t offset, uint64_t len, int flushed) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc == RPMP_OK) rc = check_range(h, id, offset, len);
    if (rc != RPMP_OK) return rc;
    if (len && !flushed && !pool->volatile_medium) pmemobj_flush(pool->pop, payload_of(h) + offset, (size_t)len);
    pmemobj_drain(pool->pop);
    advance_used(pool, h, offset + len);
    return RPMP_OK;
}

int rpmp_block_append(rpmp_pool *pool, uint64_t id, const void *src, uint64_t len, uint64_t *offset_out) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc) return rc;
    uint64_t at = __atomic_load_n(&h->used, __ATOMIC_ACQUIRE);
    rc = rpmp_block_write(pool, id, at, src, len);
    if (rc == RPMP_OK && offset_out) *offset_out = at;
    return rc;
}

int rpmp_block_read(rpmp_pool *pool, uint64_t id, uint64_t offset, void *dst, uint64_t len) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc) return rc;
    uint64_t used = __atomic_load_n(&h->used, __ATOMIC_ACQUIRE);
    if (!range_ok(used, offset, len))
        return fail(RPMP_E_SIZE, "read of %llu bytes at %llu exceeds the block's %llu published bytes",
                    (unsigned long long)len, (unsigned long long)offset, (unsigned long long)used);
    if (len) memmove(dst, payload_of(h) + offset, (size_t)len); /* dst may be a reserved view of it */
    return RPMP_OK;
}

int rpmp_block_data(rpmp_pool *pool, uint64_t id, const uint8_t **data, uint64_t *used) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc) return rc;
    *data = payload_of(h);
    *used = __atomic_load_n(&h->used, __ATOMIC_ACQUIRE);
    return RPMP_OK;
}

int rpmp_block_seal(rpmp_pool *pool, uint64_t id) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc) return rc;
    if (h->state == RPMP_BLOCK_SEALED) return RPMP_OK;
    if (h->state == RPMP_BLOCK_RETIRED) return fail(RPMP_E_STATE, "block 0x%llx is retired", (unsigned long long)id);
    /* a CHECKED block's checksum is already this value: storing it again changes nothing */
    h->checksum = XXH64(payload_of(h), (size_t)h->used, 0);
    pmemobj_persist(pool->pop, &h->checksum, sizeof h->checksum);
    h->state = RPMP_BLOCK_SEALED;
    pmemobj_persist(pool->pop, &h->state, sizeof h->state);
    SUB(open_blocks, 1);
    ADD(sealed_blocks, 1);
    return RPMP_OK;
}

int rpmp_block_verify(rpmp_pool *pool, uint64_t id) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc) return rc;
    if (!has_checksum(h)) return RPMP_OK;
    if (XXH64(payload_of(h), (size_t)h->used, 0) != h->checksum)
        return fail(RPMP_E_CORRUPT, "block 0x%llx payload does not match its checksum", (unsigned long long)id);
    return RPMP_OK;
}

int rpmp_block_retire(rpmp_pool *pool, uint64_t id) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc) return rc;
    if (h->state == RPMP_BLOCK_RETIRED) return RPMP_OK;
    int sealed = h->state == RPMP_BLOCK_SEALED;
    h->state = RPMP_BLOCK_RETIRED; /* aligned 4-byte store: atomic with respect to a crash */
    pmemobj_persist(pool->pop, &h->state, sizeof h->state);
    if (sealed) SUB(sealed_blocks, 1);
    else SUB(open_blocks, 1);
    return RPMP_OK;
}

int rpmp_block_free(rpmp_pool *pool, uint64_t id) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc) return rc;
    uint64_t cap = h->capacity, used = h->used;
    int sealed = h->state == RPMP_BLOCK_SEALED, retired = h->state == RPMP_BLOCK_RETIRED;
    /* Invalidate first: a crash between here and the free leaves a damaged header, freed on open. */
    h->magic = 0;
    pmemobj_persist(pool->pop, &h->magic, sizeof h->magic);
    PMEMoid oid = {pool->uuid_lo, id};
    pmemobj_free(&oid);
    SUB(blocks, 1);
    if (sealed) SUB(sealed_blocks, 1);
    else if (!retired) SUB(open_blocks, 1);
    SUB(allocated_bytes, alloc_size(cap));
    SUB(used_bytes, used);
    return RPMP_OK;
}

int rpmp_block_info(rpmp_pool *pool, uint64_t id, struct rpmp_block_info *out) {
    struct block_hdr *h = NULL;
    int rc = lookup(pool, id, &h);
    if (rc) return rc;
    out->id = id;
    out->payload_offset = id + RPMP_HDR_SIZE;
    out->capacity = h->capacity;
    out->used = __atomic_load_n(&h->used, __ATOMIC_ACQUIRE);
    out->checksum = h->checksum;
    out->state = h->state;
    out->flags = h->flags;
    out->key_len = h->key_len;
    memcpy(out->key, h->key, h->key_len);
    return RPMP_OK;
}

int rpmp_pool_next(rpmp_pool *pool, uint64_t prev, uint64_t *next) {
    PMEMoid oid;
    if (prev == 0) {
        oid = pmemobj_first(pool->pop);
    } else {
        struct block_hdr *h;
        int rc = lookup(pool, prev, &h);
        if (rc) return rc;
        PMEMoid cur = {pool->uuid_lo, prev};
        oid = pmemobj_next(cur);
    }
    while (!OID_IS_NULL(oid) && pmemobj_type_num(oid) != RPMP_TYPE_BLOCK) oid = pmemobj_next(oid);
    *next = OID_IS_NULL(oid) ? 0 : oid.off;
    return RPMP_OK;
}
