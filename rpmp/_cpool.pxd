# C declarations of native/rpmp_pool.h for Cython.
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef extern from "rpmp_pool.h" nogil:
    enum:
        RPMP_OK
        RPMP_E_NOENT
        RPMP_E_LAYOUT
        RPMP_E_LOCKED
        RPMP_E_FULL
        RPMP_E_SIZE
        RPMP_E_KEY
        RPMP_E_BLOCK
        RPMP_E_STATE
        RPMP_E_EXISTS
        RPMP_E_IO
        RPMP_E_CORRUPT
        RPMP_BLOCK_OPEN
        RPMP_BLOCK_SEALED
        RPMP_BLOCK_RETIRED
        RPMP_BLOCK_SEAL_REQUIRED
        RPMP_BLOCK_CHECKED
        RPMP_HDR_SIZE
        RPMP_KEY_MAX
        RPMP_DEFAULT_BLOCK_CAPACITY

    uint64_t RPMP_MIN_POOL_SIZE
    uint64_t RPMP_MAX_BLOCK_CAPACITY

    ctypedef struct rpmp_pool:
        pass

    struct c_block_info "rpmp_block_info":
        uint64_t id
        uint64_t payload_offset
        uint64_t capacity
        uint64_t used
        uint64_t checksum
        uint32_t state
        uint32_t flags
        uint32_t key_len
        uint8_t key[192]

    struct rpmp_stats:
        uint64_t pool_size
        uint64_t allocated_bytes
        uint64_t used_bytes
        uint64_t blocks
        uint64_t open_blocks
        uint64_t sealed_blocks

    struct rpmp_recovery:
        uint64_t blocks_kept
        uint64_t freed_damaged
        uint64_t freed_unsealed
        uint64_t freed_retired
        uint64_t corrupt

    const char *rpmp_last_error()
    const char *rpmp_err_name(int err)
    int rpmp_pool_create(const char *path, uint64_t size, rpmp_pool **out)
    int rpmp_pool_open(const char *path, int verify, rpmp_pool **out, rpmp_recovery *rec)
    uint64_t rpmp_pool_corrupt(const rpmp_pool *pool, uint64_t *ids, uint64_t max)
    void rpmp_pool_close(rpmp_pool *pool)
    void *rpmp_pool_base(const rpmp_pool *pool)
    int rpmp_pool_stats(rpmp_pool *pool, rpmp_stats *out)
    int rpmp_block_alloc(rpmp_pool *pool, const void *key, uint32_t key_len, uint64_t capacity,
                         uint32_t flags, uint64_t *id_out)
    int rpmp_block_write(rpmp_pool *pool, uint64_t id, uint64_t offset, const void *src, uint64_t len)
    int rpmp_block_tx_write(rpmp_pool *pool, uint64_t id, uint64_t offset, const void *src, uint64_t len)
    int rpmp_block_append(rpmp_pool *pool, uint64_t id, const void *src, uint64_t len, uint64_t *offset_out)
    int rpmp_block_reserve(rpmp_pool *pool, uint64_t id, uint64_t offset, uint64_t len, uint8_t **ptr)
    int rpmp_block_flush(rpmp_pool *pool, uint64_t id, uint64_t offset, uint64_t len)
    int rpmp_block_publish(rpmp_pool *pool, uint64_t id, uint64_t offset, uint64_t len, int flushed)
    int rpmp_block_read(rpmp_pool *pool, uint64_t id, uint64_t offset, void *dst, uint64_t len)
    int rpmp_block_data(rpmp_pool *pool, uint64_t id, const uint8_t **data, uint64_t *used)
    int rpmp_block_seal(rpmp_pool *pool, uint64_t id)
    int rpmp_block_retire(rpmp_pool *pool, uint64_t id)
    int rpmp_block_free(rpmp_pool *pool, uint64_t id)
    int rpmp_block_info(rpmp_pool *pool, uint64_t id, c_block_info *out)
    int rpmp_block_verify(rpmp_pool *pool, uint64_t id)
    int rpmp_pool_next(rpmp_pool *pool, uint64_t prev, uint64_t *next)
